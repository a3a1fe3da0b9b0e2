-- Per-segment metrics and gates: a model declares segment_keys (country, tenant, device) and
-- each prediction carries the request's values for them (PredictionEvent.segments); the join
-- copies them into feedback. Empty maps for models without segment keys and for rows written
-- before the column existed, so old readers and old rows are unaffected.
ALTER TABLE predictions ADD COLUMN IF NOT EXISTS segments Map(String, String) AFTER class_probabilities;

ALTER TABLE feedback ADD COLUMN IF NOT EXISTS segments Map(String, String) AFTER class_probabilities;

-- feedback_late (004, 020) mirrors feedback's columns, so it gains the prediction's segments.
CREATE OR REPLACE VIEW feedback_late AS
SELECT
    p.prediction_id                                        AS prediction_id,
    p.model_name                                           AS model_name,
    p.model_version                                        AS model_version,
    p.route                                                AS route,
    p.replica_id                                           AS replica_id,
    p.features                                             AS features,
    p.prediction                                           AS prediction,
    p.confidence                                           AS confidence,
    p.timestamp                                            AS prediction_timestamp,
    'late'                                                 AS status,
    o.ground_truth                                         AS ground_truth,
    o.outcome_timestamp                                    AS outcome_timestamp,
    toInt64(dateDiff('millisecond', p.timestamp, o.outcome_timestamp)) AS label_delay_ms,
    o.outcome_source                                       AS outcome_source,
    o.outcome_ingested_at                                  AS emitted_at,
    p.class_probabilities                                  AS class_probabilities,
    p.segments                                             AS segments,
    p.error                                                AS error
FROM predictions AS p FINAL
INNER JOIN
(
    SELECT
        prediction_id,
        argMax(ground_truth, (timestamp, ingested_at)) AS ground_truth,
        max(timestamp)                                 AS outcome_timestamp,
        argMax(source, (timestamp, ingested_at))       AS outcome_source,
        max(ingested_at)                               AS outcome_ingested_at
    FROM outcomes
    GROUP BY prediction_id
) AS o ON p.prediction_id = o.prediction_id
WHERE (p.prediction_id, p.route, o.outcome_timestamp, o.ground_truth, o.outcome_source) NOT IN
(
    SELECT
        prediction_id,
        route,
        assumeNotNull(outcome_timestamp),
        assumeNotNull(ground_truth),
        assumeNotNull(outcome_source)
    FROM feedback FINAL
    WHERE status = 'joined' AND outcome_timestamp IS NOT NULL
);
