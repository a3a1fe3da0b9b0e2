"""The stream processor: pairs predictions with their outcomes and lands them in ClickHouse."""
