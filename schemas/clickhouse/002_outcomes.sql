-- Every OutcomeEvent, every version: a corrected label is a new row, never an update, so the
-- history of a label stays auditable. Readers wanting the current label take the newest by
-- (timestamp, ingested_at). The processor inserts each outcome once, replays after a crash or a
-- rebalance included (stream_progress, 014). The same outcome published twice by its producer
-- has the same sorting key, so ReplacingMergeTree collapses it (FINAL); a correction differs in
-- timestamp or value and stays.
CREATE TABLE IF NOT EXISTS outcomes
(
    prediction_id String,
    ground_truth  Float64,
    timestamp     DateTime64(3, 'UTC'),
    source        LowCardinality(String),
    ingested_at   DateTime64(3, 'UTC') DEFAULT now64(3, 'UTC')
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(timestamp)
ORDER BY (prediction_id, timestamp, source, ground_truth)
-- Retried inserts of the same batch are dropped by their insert_deduplication_token.
SETTINGS non_replicated_deduplication_window = 1000;
