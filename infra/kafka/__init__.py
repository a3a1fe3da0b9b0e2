"""Apache Kafka: the local broker runner, topic specs and admin, and client configurations."""
