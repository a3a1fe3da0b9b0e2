-- Whose fault a failed request was: 'server' (5xx, timeouts, model exceptions, injected faults)
-- or 'client' (4xx: missing or invalid features). NULL without an error, and for rows written
-- before the column existed (those count as server errors, as they did then).
ALTER TABLE predictions ADD COLUMN IF NOT EXISTS error_kind LowCardinality(Nullable(String)) AFTER error;

-- Model name -> the versions a replica has loaded (what `safeloop canary` checks before traffic).
ALTER TABLE replica_status ADD COLUMN IF NOT EXISTS loaded_versions Map(String, Array(String)) AFTER last_refusal;
