-- Exactly-once bookkeeping of the stream processor, one row per raised mark: per consumer group
-- and source (an input topic partition, or `expiry:<partition>` for expiry sweeps), a coordinate
-- (input offset, or sweep time in ms) at or below which derived rows MAY already be in the
-- tables. Written before the rows are inserted (like the BEFORE_PROCESSING state of ClickHouse's
-- Kafka Connect sink), so it may run ahead of them, never behind. After a restart or a
-- rebalance, rows derived from input at or below the mark are looked up in their table and only
-- the missing ones are inserted; beyond it nothing is looked up. Read with max(mark), so
-- neither FINAL nor merges matter.
CREATE TABLE IF NOT EXISTS stream_progress
(
    consumer_group LowCardinality(String),
    source         LowCardinality(String),
    partition      Int32,
    mark           Int64,
    written_at     DateTime64(3, 'UTC') DEFAULT now64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(mark)
ORDER BY (consumer_group, source, partition)
SETTINGS non_replicated_deduplication_window = 1000;
