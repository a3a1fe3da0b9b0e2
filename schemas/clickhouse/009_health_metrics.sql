-- Rolling serving health computed from predictions (request rate, error rate, latency
-- quantiles, confidence, prediction mean), one row per metric and window (long layout: a new
-- metric needs no migration). Recomputing a window replaces it: the newest computed_at wins.
-- labels carries details (thresholds, reference window), not identity.
CREATE TABLE IF NOT EXISTS health_metrics
(
    model_name    LowCardinality(String),
    model_version LowCardinality(String),
    route         LowCardinality(String),
    window_start  DateTime64(3, 'UTC'),
    window_end    DateTime64(3, 'UTC'),
    metric        LowCardinality(String),
    value         Float64,
    sample_count  UInt64,
    labels        Map(LowCardinality(String), String),
    computed_at   DateTime64(3, 'UTC') DEFAULT now64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(computed_at)
PARTITION BY toYYYYMM(window_start)
ORDER BY (model_name, model_version, route, metric, window_start, window_end);
