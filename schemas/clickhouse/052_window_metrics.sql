-- Health and performance figures of every window in one place, told apart by `source` and
-- `metric` (accuracy, f1, roc_auc, label_coverage, reliability bins, shadow_agreement_rate...).
-- FINAL keeps the newest computation of a recomputed window; with filters on the sorting key
-- pushed into both branches it stays cheap (it merges only the parts a range touches).
CREATE OR REPLACE VIEW window_metrics AS
SELECT
    'health' AS source, model_name, model_version, route, metric, window_start, window_end,
    value, sample_count
FROM health_metrics FINAL
UNION ALL
SELECT
    'performance' AS source, model_name, model_version, route, metric, window_start, window_end,
    value, sample_count
FROM performance_metrics FINAL;
