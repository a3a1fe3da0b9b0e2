"""Every use of faust-streaming's internals, in one place: the rest of `streams/` uses only
faust's public API and this module.

Written against faust-streaming 0.15.3, which pyproject.toml pins exactly;
tests/unit/test_faust_adapter.py fails loudly when that version or any internal used here
changes (signatures, attributes, and hashes of the faust code copied or mirrored here).

- `Consumer`, `Transport`, `install_consumer`: the aiokafka driver's consumer with a cheaper
  per-message hand-off from the fetcher to the streams (overrides `Consumer._drain_messages`).
- `LeanMonitor`: faust's Monitor without its per-message bookkeeping.
- `partition_db`, `visible_items`: the RocksDB store's database of one partition and its items,
  for `table_store.FaustTableStore`'s direct reads and writes.
- `started_consumer`, `committed_offset`, `in_recovery`: what the worker's /metrics and expiry
  read off the app and its consumer.

The hand-off: faust 0.15's fetcher hands every message to the conductor with
`await self.wait_first(callback(message), self.suspend_flow.wait())`: four asyncio tasks and
an `asyncio.wait` per message, so at least one event-loop turn each. The profile put that at a
fifth of the worker's CPU (bench/results/stream_join_profile.txt). Almost always the callback
finishes without suspending (it decodes raw bytes and puts the event into a stream queue that
has room), so here it runs inline first; only when it does suspend (flow control, producer
buffer, a full queue), or while flow is suspended for a rebalance, does it go through
`wait_first` exactly as in faust, so a rebalance still interrupts a blocked hand-off. And when
a stream's queue is full, the fetcher first waits (up to ~50 ms) for it to drain to half before
handing over the next message, instead of paying several asyncio tasks per message to wait for
one slot each.
Everything else in the loop is faust's `Consumer._drain_messages` as of 0.15.3.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Generator, Iterator
from time import monotonic
from typing import Any, cast

from faust.sensors.monitor import Monitor
from faust.transport.drivers import aiokafka as faust_aiokafka

# The faust-streaming release this module was written against (pinned in pyproject.toml).
FAUST_VERSION = "0.15.3"

_FETCHING = "FETCHING"
# A full stream queue is given up to ~50 ms to drain to half before the message is handed over.
_DRAIN_POLLS = 25
_DRAIN_POLL_S = 0.002


class _Resume:
    """Awaits the rest of a coroutine that already ran up to its first suspension."""

    __slots__ = ("_coro", "_first")

    def __init__(self, coro: Coroutine[Any, Any, Any], first: Any) -> None:
        self._coro = coro
        self._first = first

    def __await__(self) -> Generator[Any, Any, Any]:
        # What `yield from coro` would do had the first step not run already.
        coro = self._coro
        value = self._first
        while True:
            try:
                sent = yield value
            except GeneratorExit:
                coro.close()
                raise
            except BaseException as exc:  # thrown in by the task: cancellation
                try:
                    value = coro.throw(exc)
                except StopIteration as stop:
                    return stop.value
                continue
            try:
                value = coro.send(sent)
            except StopIteration as stop:
                return stop.value


class Consumer(faust_aiokafka.Consumer):
    """The aiokafka driver's consumer; only the fetch loop's hand-off differs."""

    async def _drain_messages(self, fetcher: Any) -> None:  # pragma: no cover - faust's loop
        callback = self.callback
        getmany = self.getmany
        consumer_should_stop = self._stopped.is_set
        fetcher_should_stop = fetcher._stopped.is_set
        suspend_flow = self.suspend_flow
        flow_suspended = suspend_flow.is_set

        get_read_offset = self._read_offset.__getitem__
        set_read_offset = self._read_offset.__setitem__
        set_flag = self.diag.set_flag
        unset_flag = self.diag.unset_flag
        commit_every = self._commit_every
        acks_enabled_for = self.app.topics.acks_enabled_for
        channels_for = cast(Any, self.app.topics)._tp_index.get

        yield_every = 100
        num_since_yield = 0
        sleep = asyncio.sleep

        try:
            while not (consumer_should_stop() or fetcher_should_stop()):
                set_flag(_FETCHING)
                ait = getmany(timeout=1.0)
                await self.sleep(0)
                if not self.should_stop:
                    async for tp, message in ait:
                        num_since_yield += 1
                        if num_since_yield > yield_every:
                            await sleep(0)
                            num_since_yield = 0

                        offset = message.offset
                        r_offset = get_read_offset(tp)
                        if r_offset is None or offset >= r_offset:
                            gap = offset - (r_offset or 0)
                            if gap > 1 and r_offset and acks_enabled_for(message.topic):
                                await self._add_gap(tp, r_offset + 1, offset)
                            if commit_every is not None and self._n_acked >= commit_every:
                                self._n_acked = 0
                                await self.commit()
                            for channel in channels_for(tp) or ():
                                queue = channel.queue
                                if queue.full():
                                    # Bounded: past it, faust's own blocking hand-off below.
                                    half = queue.maxsize // 2
                                    for _ in range(_DRAIN_POLLS):
                                        if (
                                            queue.qsize() <= half
                                            or flow_suspended()
                                            or self.should_stop
                                        ):
                                            break
                                        await sleep(_DRAIN_POLL_S)
                            if flow_suspended():
                                await self.wait_first(callback(message), suspend_flow.wait())
                            else:
                                coro = cast(Coroutine[Any, Any, Any], callback(message))
                                try:
                                    first = coro.send(None)
                                except StopIteration:
                                    pass
                                else:
                                    await self.wait_first(_Resume(coro, first), suspend_flow.wait())
                            set_read_offset(tp, offset)
                        else:
                            self.log.dev(
                                "DROPPED MESSAGE ROFF %r: k=%r v=%r",
                                offset,
                                message.key,
                                message.value,
                            )
                    unset_flag(_FETCHING)

        except self.consumer_stopped_errors:
            if self.transport.app.should_stop:
                self.log.info("Broker stopped consumer, shutting down...")
                return
            raise
        except asyncio.CancelledError:
            if self.transport.app.should_stop:
                self.log.info("Consumer shutting down for user cancel.")
                return
            raise
        except Exception as exc:
            self.log.exception("Drain messages raised: %r", exc)
            raise
        finally:
            unset_flag(_FETCHING)


class Transport(faust_aiokafka.Transport):
    """faust's aiokafka transport with the consumer above."""

    Consumer = Consumer


def install_consumer(app: Any) -> None:
    """Use this module's consumer in `app` (call before the app starts).

    Builds the transport as faust's `App._new_transport` does, with this module's class.
    """
    app.transport = Transport(app.conf.broker_consumer, app)


class LeanMonitor(Monitor):
    """faust's Monitor without its per-message bookkeeping.

    faust calls the monitor four or five times for every message (in, stream in/out, out, end
    offset); nothing here reads those figures (the worker's /metrics are `StreamSnapshot`'s),
    and they cost several percent of the worker's CPU. Everything else stays faust's.
    """

    def on_message_in(self, tp: Any, offset: int, message: Any) -> None:
        return None

    def on_stream_event_in(self, tp: Any, offset: int, stream: Any, event: Any) -> None:
        # Kept: the aiokafka driver's "stream stopped processing" check reads it.
        self.stream_inbound_time[tp] = monotonic()

    def on_stream_event_out(
        self, tp: Any, offset: int, stream: Any, event: Any, state: Any = None
    ) -> None:
        return None

    def on_message_out(self, tp: Any, offset: int, message: Any) -> None:
        return None

    def track_tp_end_offset(self, tp: Any, offset: int) -> None:
        return None


# -- the RocksDB store (faust.stores.rocksdb.Store) ---------------------------------------


def partition_db(table: Any, partition: int) -> Any | None:
    """The rocksdict database of `partition` of `table`'s store, opened on first use as faust
    does; None when the table does not use the rocksdb:// store."""
    store = table.data
    if not hasattr(store, "_db_for_partition"):
        return None
    return store._db_for_partition(partition)


def visible_items(table: Any, db: Any) -> Iterator[tuple[bytes, bytes]]:
    """The raw (key, value) pairs in `db`, one of `table`'s partition databases, without the
    offset record faust keeps among them."""
    items: Iterator[tuple[bytes, bytes]] = table.data._visible_items(db)
    return items


# -- the app and its consumer -------------------------------------------------------------


def started_consumer(app: Any) -> Any | None:
    """The app's consumer if it was created; None before (`app.consumer` would create one)."""
    return getattr(app, "_consumer", None)


def committed_offset(consumer: Any, tp: Any) -> int | None:
    """The offset the consumer last committed for `tp`, None if none yet (without adding an
    entry to faust's defaultdict)."""
    offset: int | None = consumer._committed_offset.get(tp)
    return offset


def in_recovery(app: Any) -> bool:
    """True while faust's table recovery replays changelogs (it sets `app.in_recovery`)."""
    return bool(getattr(app, "in_recovery", False))
