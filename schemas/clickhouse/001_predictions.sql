-- Every PredictionEvent: production, canary and shadow rows, failed requests included.
-- Sorted for the dashboards (one model, version and route over a time range). The processor
-- inserts each event once, replays included (stream_progress, 014), so count() needs no FINAL;
-- ReplacingMergeTree still collapses an event its producer published twice, should the stream
-- see the copy after the join forgot it. Shadow rows reuse the production prediction_id and
-- differ by route.
CREATE TABLE IF NOT EXISTS predictions
(
    prediction_id        String,
    model_name           LowCardinality(String),
    model_version        LowCardinality(String),
    timestamp            DateTime64(3, 'UTC'),
    features             Map(String, Float64),
    prediction           Nullable(Float64),
    confidence           Nullable(Float64),
    latency_ms           Float64,
    route                LowCardinality(String),
    replica_id           LowCardinality(String),
    routing_key          String,
    routing_hash_version Int32,
    error                Nullable(String),
    ingested_at          DateTime64(3, 'UTC') DEFAULT now64(3, 'UTC'),
    -- Point look-ups by id (late labels, debugging) skip most granules.
    INDEX idx_prediction_id prediction_id TYPE bloom_filter(0.01) GRANULARITY 4
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(timestamp)
ORDER BY (model_name, model_version, route, timestamp, prediction_id)
-- Lets a sink retry an insert with the same insert_deduplication_token without duplicates.
SETTINGS non_replicated_deduplication_window = 1000;
