-- Serving health and label counts per model version and route, one row per minute, kept up to
-- date by materialised views as rows arrive: dashboards read thousands of rows instead of
-- scanning up to 100 million predictions. t-digest states keep latency percentiles mergeable
-- over any range with a bounded state (unlike the 8192-value reservoir of `quantiles`).
-- `labelled` comes from joined feedback rows, by the minute of the prediction they label, so
-- coverage (labelled / requests) needs no join. A view counts what is inserted: inserts skipped
-- by insert deduplication never reach it, and the processor inserts each row once, replays
-- after a crash or a rebalance included (stream_progress, 014), so each prediction is counted
-- once. An in-window correction is a new feedback version and counts in `labelled` again, which
-- is why coverage is capped at 1 by its readers.
CREATE TABLE IF NOT EXISTS serving_minutes_agg
(
    model_name       LowCardinality(String),
    model_version    LowCardinality(String),
    route            LowCardinality(String),
    minute           DateTime('UTC'),
    requests         SimpleAggregateFunction(sum, UInt64),
    errors           SimpleAggregateFunction(sum, UInt64),
    latency_ms       AggregateFunction(quantilesTDigest(0.5, 0.95, 0.99), Float64),
    confidence_sum   SimpleAggregateFunction(sum, Float64),
    confidence_count SimpleAggregateFunction(sum, UInt64),
    labelled         SimpleAggregateFunction(sum, UInt64)
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(minute)
ORDER BY (model_name, model_version, route, minute);

CREATE MATERIALIZED VIEW IF NOT EXISTS serving_minutes_mv TO serving_minutes_agg AS
SELECT
    model_name,
    model_version,
    route,
    toStartOfMinute(toDateTime(timestamp, 'UTC'))      AS minute,
    count()                                            AS requests,
    countIf(error IS NOT NULL)                         AS errors,
    quantilesTDigestState(0.5, 0.95, 0.99)(latency_ms) AS latency_ms,
    sum(ifNull(confidence, 0))                         AS confidence_sum,
    count(confidence)                                  AS confidence_count
FROM predictions
GROUP BY model_name, model_version, route, minute;

CREATE MATERIALIZED VIEW IF NOT EXISTS label_minutes_mv TO serving_minutes_agg AS
SELECT
    model_name,
    model_version,
    route,
    toStartOfMinute(toDateTime(prediction_timestamp, 'UTC')) AS minute,
    count()                                                  AS labelled
FROM feedback
WHERE status = 'joined' AND ground_truth IS NOT NULL
GROUP BY model_name, model_version, route, minute;

-- Finalised minutes for readers that do not merge states themselves (Grafana, ad-hoc SQL).
-- Filters on the key columns (model_name, minute, ...) are pushed below the GROUP BY.
CREATE OR REPLACE VIEW serving_minutes AS
SELECT
    model_name,
    model_version,
    route,
    minute,
    sum(requests)                                      AS requests,
    sum(errors)                                        AS errors,
    if(requests = 0, 0, errors / requests)             AS error_rate,
    quantilesTDigestMerge(0.5, 0.95, 0.99)(latency_ms) AS latency_quantiles,
    latency_quantiles[1]                               AS latency_p50_ms,
    latency_quantiles[2]                               AS latency_p95_ms,
    latency_quantiles[3]                               AS latency_p99_ms,
    if(sum(confidence_count) = 0, NULL, sum(confidence_sum) / sum(confidence_count))
                                                       AS mean_confidence,
    sum(labelled)                                      AS labelled,
    if(requests = 0, NULL, least(1.0, labelled / requests)) AS label_coverage
FROM serving_minutes_agg
GROUP BY model_name, model_version, route, minute;
