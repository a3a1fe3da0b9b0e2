-- Every transition of a retraining run (decision -> training -> candidate -> shadow -> canary
-- -> promoted / rolled back); `state` is the run after it, from which a restart resumes.
CREATE TABLE IF NOT EXISTS retraining_steps
(
    run_id            String,
    model_name        LowCardinality(String),
    base_version      LowCardinality(String),
    candidate_version String,
    stage             LowCardinality(String),
    step              UInt32,
    timestamp         DateTime64(3, 'UTC'),
    actor             String,
    reason            String,
    state             String,
    ingested_at       DateTime64(3, 'UTC') DEFAULT now64(3, 'UTC')
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(timestamp)
ORDER BY (model_name, run_id, step)
SETTINGS non_replicated_deduplication_window = 1000;
