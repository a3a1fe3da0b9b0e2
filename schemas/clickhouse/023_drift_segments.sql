-- Drift per segment (a model's segment_keys: country, tenant, device) beside the whole
-- population's: rows with segment_key = '' are the whole population's, as before (and as every
-- row written before this). The segment joins the sorting key, so a segment's window and the
-- whole population's never replace each other; a column added in the same ALTER may extend
-- the sorting key only without a default expression (String's own default, '', applies).
-- Re-running it changes nothing: the columns exist and the sorting key is already this one.
ALTER TABLE drift_metrics ADD COLUMN IF NOT EXISTS segment_key LowCardinality(String) AFTER feature,
    ADD COLUMN IF NOT EXISTS segment_value String AFTER segment_key,
    MODIFY ORDER BY (model_name, model_version, route, metric, feature, window_start, window_end, segment_key, segment_value);
