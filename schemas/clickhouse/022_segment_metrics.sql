-- Health and performance per segment (a model's segment_keys: country, tenant, device), one row
-- per metric, window and (segment_key, segment_value); the whole population's figures stay in
-- health_metrics and performance_metrics. A segment with fewer rows than the metrics service's
-- minimum sample has no row: its figures would be noise. Recomputing a window replaces it: the
-- newest computed_at wins. labels carries details (which window), not identity.
CREATE TABLE IF NOT EXISTS segment_metrics
(
    model_name    LowCardinality(String),
    model_version LowCardinality(String),
    route         LowCardinality(String),
    window_start  DateTime64(3, 'UTC'),
    window_end    DateTime64(3, 'UTC'),
    metric        LowCardinality(String),
    segment_key   LowCardinality(String),
    segment_value String,
    value         Float64,
    sample_count  UInt64,
    labels        Map(LowCardinality(String), String),
    computed_at   DateTime64(3, 'UTC') DEFAULT now64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(computed_at)
PARTITION BY toYYYYMM(window_start)
ORDER BY (model_name, model_version, route, segment_key, segment_value, metric, window_start, window_end);
