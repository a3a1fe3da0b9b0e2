-- Feature and prediction drift (PSI and friends) against a reference, per window: one row per
-- metric and feature ('' for model-level drift such as the prediction distribution).
-- Recomputing a window replaces it: the newest computed_at wins. labels carries details
-- (reference window or version, bin edges), not identity.
CREATE TABLE IF NOT EXISTS drift_metrics
(
    model_name    LowCardinality(String),
    model_version LowCardinality(String),
    route         LowCardinality(String),
    window_start  DateTime64(3, 'UTC'),
    window_end    DateTime64(3, 'UTC'),
    metric        LowCardinality(String),
    feature       LowCardinality(String),
    value         Float64,
    sample_count  UInt64,
    labels        Map(LowCardinality(String), String),
    computed_at   DateTime64(3, 'UTC') DEFAULT now64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(computed_at)
PARTITION BY toYYYYMM(window_start)
ORDER BY (model_name, model_version, route, metric, feature, window_start, window_end);
