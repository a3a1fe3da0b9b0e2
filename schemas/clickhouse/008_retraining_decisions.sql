-- RetrainingDecision per model version over time; a re-emitted decision collapses by id.
CREATE TABLE IF NOT EXISTS retraining_decisions
(
    decision_id      String,
    model_name       LowCardinality(String),
    model_version    LowCardinality(String),
    timestamp        DateTime64(3, 'UTC'),
    should_retrain   Bool,
    urgency          LowCardinality(String),
    reason           String,
    max_psi          Nullable(Float64),
    performance_drop Nullable(Float64),
    drifted_features Array(String),
    ingested_at      DateTime64(3, 'UTC') DEFAULT now64(3, 'UTC')
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(timestamp)
ORDER BY (model_name, model_version, timestamp, decision_id);
