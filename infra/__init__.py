"""The real components and how to reach them: settings, Kafka, ClickHouse, the embedded endpoint."""
