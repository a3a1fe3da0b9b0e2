-- Drift per feature and window (newest computation of a window wins), with its PSI band read
-- as services.metrics.drift does: < 0.1 stable, up to 0.25 moderate, above that major.
-- feature '' is the model's score distribution. The whole population only: per-segment rows
-- (023) are read from drift_metrics by segment_key / segment_value.
CREATE OR REPLACE VIEW drift_features AS
SELECT
    model_name,
    model_version,
    route,
    metric,
    feature,
    window_start,
    window_end,
    value,
    sample_count,
    multiIf(metric != 'psi', '', value < 0.1, 'stable', value <= 0.25, 'moderate', 'major') AS band
FROM drift_metrics FINAL
WHERE segment_key = '';
