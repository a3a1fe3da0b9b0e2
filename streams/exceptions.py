"""Errors raised by the stream processor; each carries where its input came from."""

from __future__ import annotations

from safeloop import SafeloopError


class StreamError(SafeloopError):
    """Root of every error raised by `streams`; names the source topic/partition/offset if known."""

    def __init__(
        self,
        message: str,
        *,
        topic: str | None = None,
        partition: int | None = None,
        offset: int | None = None,
    ) -> None:
        where = f" (at {topic}[{partition}]@{offset})" if topic is not None else ""
        super().__init__(message + where)
        self.topic = topic
        self.partition = partition
        self.offset = offset


class SinkUnavailableError(StreamError):
    """ClickHouse refused or could not take a batch for longer than the sink may wait."""


class WindowConfigError(StreamError):
    """A join-window specification cannot be parsed."""


class PartitionCountError(StreamError):
    """The join's topics do not all have the same partition count; the worker refuses to start."""
