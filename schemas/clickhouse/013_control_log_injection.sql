-- ModelConfig.injection (a `safeloop inject` rehearsal fault), flattened like the rest of the
-- config: version, error_rate, latency_ms and until (epoch ms) as strings; empty when none.
ALTER TABLE control_log ADD COLUMN IF NOT EXISTS injection Map(String, String) AFTER flags;
