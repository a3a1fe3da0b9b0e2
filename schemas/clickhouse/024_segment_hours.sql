-- Fairness figures per segment (a key of the `segments` map: country, gender, device) and hour,
-- kept up to date by materialised views as rows arrive, so the dashboard's fairness view over a
-- week reads thousands of rows instead of grouping every prediction and label of the week by
-- prediction_id (over 15 s at 100M predictions). Ranges up to a day still read the raw rows
-- (exact edges, the newest version of each label). As with serving_minutes (050), a view
-- counts what is inserted: each prediction once (the processor inserts each row once), and an
-- in-window label correction, a new feedback version, counts again. Label cells use the
-- fairness view's threshold, 0.5 (services/dashboard/fairness_queries.py THRESHOLD). The views
-- see rows inserted after this migration; earlier rows are not backfilled.
CREATE TABLE IF NOT EXISTS segment_hours_agg
(
    model_name        LowCardinality(String),
    segment_key       LowCardinality(String),
    hour              DateTime('UTC'),
    model_version     LowCardinality(String),
    route             LowCardinality(String),
    segment_value     String,
    requests          SimpleAggregateFunction(sum, UInt64),
    errors            SimpleAggregateFunction(sum, UInt64),
    labelled          SimpleAggregateFunction(sum, UInt64),
    tp                SimpleAggregateFunction(sum, UInt64),
    fp                SimpleAggregateFunction(sum, UInt64),
    fn                SimpleAggregateFunction(sum, UInt64),
    exact             SimpleAggregateFunction(sum, UInt64),
    abs_error_sum     SimpleAggregateFunction(sum, Float64),
    squared_error_sum SimpleAggregateFunction(sum, Float64)
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(hour)
ORDER BY (model_name, segment_key, hour, model_version, route, segment_value);

CREATE MATERIALIZED VIEW IF NOT EXISTS segment_serving_hours_mv TO segment_hours_agg AS
SELECT
    model_name,
    segment_key,
    toStartOfHour(toDateTime(timestamp, 'UTC')) AS hour,
    model_version,
    route,
    segment_value,
    count()                                     AS requests,
    countIf(error IS NOT NULL)                  AS errors
FROM predictions
ARRAY JOIN mapKeys(segments) AS segment_key, mapValues(segments) AS segment_value
GROUP BY model_name, segment_key, hour, model_version, route, segment_value;

CREATE MATERIALIZED VIEW IF NOT EXISTS segment_label_hours_mv TO segment_hours_agg AS
SELECT
    model_name,
    segment_key,
    toStartOfHour(toDateTime(prediction_timestamp, 'UTC'))  AS hour,
    model_version,
    route,
    segment_value,
    count()                                                  AS labelled,
    countIf(assumeNotNull(prediction) >= 0.5 AND assumeNotNull(ground_truth) = 1) AS tp,
    countIf(assumeNotNull(prediction) >= 0.5 AND assumeNotNull(ground_truth) != 1) AS fp,
    countIf(assumeNotNull(prediction) < 0.5 AND assumeNotNull(ground_truth) = 1) AS fn,
    countIf(assumeNotNull(prediction) = assumeNotNull(ground_truth)) AS exact,
    sum(abs(assumeNotNull(prediction) - assumeNotNull(ground_truth))) AS abs_error_sum,
    sum(pow(assumeNotNull(prediction) - assumeNotNull(ground_truth), 2)) AS squared_error_sum
FROM feedback
ARRAY JOIN mapKeys(segments) AS segment_key, mapValues(segments) AS segment_value
WHERE status = 'joined' AND prediction IS NOT NULL AND ground_truth IS NOT NULL
GROUP BY model_name, segment_key, hour, model_version, route, segment_value;
