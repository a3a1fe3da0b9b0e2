"""The contracts: Avro schemas, ClickHouse DDL, typed events and their codec."""
