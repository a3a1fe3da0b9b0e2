-- ReplicaStatus heartbeats: what each replica had applied, over time. The latest per replica
-- is argMax(..., timestamp). Heartbeats are only interesting while recent, hence the TTL.
CREATE TABLE IF NOT EXISTS replica_status
(
    replica_id      LowCardinality(String),
    timestamp       DateTime64(3, 'UTC'),
    state           LowCardinality(String),
    started_at      DateTime64(3, 'UTC'),
    config_versions Map(String, Int64),
    last_command_id Nullable(String),
    refused_count   Int64,
    last_refusal    Nullable(String),
    ingested_at     DateTime64(3, 'UTC') DEFAULT now64(3, 'UTC')
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(timestamp)
ORDER BY (replica_id, timestamp)
TTL toDateTime(timestamp) + INTERVAL 30 DAY;
