-- FeedbackRecord: one current row per (prediction_id, route), the newest emission wins, so a
-- correction inside the window replaces the joined row (FINAL; without it both versions show).
-- A replay after a crash or a rebalance inserts nothing twice (stream_progress, 014). A label
-- after the window does not change it (an expired row stays expired, a joined row keeps its
-- label): the feedback_late view (004) pairs such labels.
-- Route is in the key because shadow predictions share the production prediction_id.
-- Partitioned by the prediction's time (not the emission's): every version of a row lands in
-- the same partition, which is where ReplacingMergeTree deduplicates. Read with FINAL.
CREATE TABLE IF NOT EXISTS feedback
(
    prediction_id        String,
    model_name           LowCardinality(String),
    model_version        LowCardinality(String),
    route                LowCardinality(String),
    replica_id           LowCardinality(String),
    features             Map(String, Float64),
    prediction           Nullable(Float64),
    confidence           Nullable(Float64),
    prediction_timestamp DateTime64(3, 'UTC'),
    status               LowCardinality(String),
    ground_truth         Nullable(Float64),
    outcome_timestamp    Nullable(DateTime64(3, 'UTC')),
    label_delay_ms       Nullable(Int64),
    outcome_source       LowCardinality(Nullable(String)),
    emitted_at           DateTime64(3, 'UTC'),
    ingested_at          DateTime64(3, 'UTC') DEFAULT now64(3, 'UTC'),
    -- Performance dashboards filter by model and version; the key serves deduplication.
    INDEX idx_model (model_name, model_version) TYPE set(256) GRANULARITY 4
)
ENGINE = ReplacingMergeTree(emitted_at)
PARTITION BY toYYYYMM(prediction_timestamp)
ORDER BY (prediction_id, route)
SETTINGS non_replicated_deduplication_window = 1000;
