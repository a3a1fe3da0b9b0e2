-- Inputs the stream could not process, with the original bytes. One input (topic, partition,
-- offset) read by one consumer group is one dead letter: a replay, on whichever worker, is
-- recognised by the processor (stream_progress, 014) and not inserted again. Low volume, so
-- sorted for deduplication rather than for time scans.
CREATE TABLE IF NOT EXISTS dead_letters
(
    source_topic     LowCardinality(String),
    source_partition Int32,
    source_offset    Int64,
    key              Nullable(String),
    value            Nullable(String),
    reason           String,
    error_type       LowCardinality(String),
    timestamp        DateTime64(3, 'UTC'),
    consumer         LowCardinality(String),
    ingested_at      DateTime64(3, 'UTC') DEFAULT now64(3, 'UTC')
)
ENGINE = ReplacingMergeTree
ORDER BY (source_topic, consumer, source_partition, source_offset)
SETTINGS non_replicated_deduplication_window = 1000;
