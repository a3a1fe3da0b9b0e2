-- Labels the stream join did not deliver, so none is lost: each prediction paired with the
-- newest outcome for its id, unless a joined feedback row already carries that very outcome
-- (same timestamp, value and source). That covers outcomes that came after the join window
-- (feedback expired, or never written) and corrections that came after it, whatever their
-- timestamp. The newest outcome: the latest timestamp; among equal timestamps the later-
-- arriving record wins (ingested_at), as in the stream join. Two versions inserted in the same
-- batch share ingested_at; which of them wins here is then not defined. Columns mirror
-- `feedback` (status 'late'), so readers can UNION ALL the two.
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
