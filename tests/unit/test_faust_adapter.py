"""streams.faust_adapter holds every use of faust-streaming's internals: these tests fail loudly
when the installed faust is not the one it was written against, or when an internal it relies
on has moved, changed its signature, or changed its code since it was copied or mirrored.

After a faust upgrade: re-check each failing item as its message says, adapt
streams/faust_adapter.py, then record the new version (FAUST_VERSION, the pin in pyproject.toml,
`make lock`) and the new hashes below.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import importlib.metadata
import inspect
import re
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from _fake_restore_consumer import ChangelogRecord, ScriptedConsumer
from faust.app.base import App
from faust.sensors.monitor import Monitor
from faust.stores.rocksdb import RocksDBOptions, Store
from faust.tables.recovery import Recovery
from faust.transport import base as transport_base
from faust.transport import consumer as faust_consumer
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP
from faust.types.app import AppT

from safeloop.infra.settings import Settings
from safeloop.streams import faust_adapter
from safeloop.streams.app import StreamConfig, create_app

ROOT = Path(__file__).resolve().parents[2]

# (faust function, sha256 of its `inspect.getsource` in faust-streaming 0.15.3, what to re-check)
COPIED_OR_MIRRORED: list[tuple[Callable[..., Any], str, str]] = [
    (
        faust_consumer.Consumer._drain_messages,
        "44a2500309e83c630493f6828af50166ec8d96a0b3e4fb2bab735f704ae93417",
        "faust_adapter.Consumer._drain_messages is a copy of it with the batch hand-off; port "
        "faust's change into the copy",
    ),
    (
        faust_consumer.Consumer.getmany,
        "4b168d84882a70d6e3e2f9804430a63b92f8fd117d3187cbb4aeb54305bda34e",
        "the batch hand-off in faust_adapter.Consumer._drain_messages mirrors it (flow check, "
        "perform_seek, generation id, active and buffered partitions, scheduler, _to_message); "
        "port the change",
    ),
    (
        faust_consumer.Consumer._wait_next_records,
        "6218e1969a636b3ff504ad1b8e7ad58a113572e43d746cc96d684ed5153032c6",
        "the batch hand-off calls it for (records by TP, active partitions); check it still "
        "returns that pair",
    ),
    (
        faust_consumer.Consumer._new_offset,
        "1d2c7ea89a7ad4f1a216c1d51936e569162cd66bd56f889e13fd29c910b58eb0",
        "faust_adapter.Consumer._new_offset answers it for the batch topics from mark_done's "
        "marks; check it is still the one place commit() asks for a partition's next offset",
    ),
    (
        faust_consumer.Consumer._filter_tps_with_pending_acks,
        "f6f9239774234e7e230eee7c40c686421a66302be95e59c59a9109c2bba5fbd6",
        "mark_done puts each marked partition into `_acked` because commit() considers only "
        "the partitions this iterates; check it still iterates `_acked`",
    ),
    (
        Store.persisted_offset,
        "6f2e502fb86043a1cf0adca5c2fffb197579db01b31dbba3b0415aaacc35a2ed",
        "faust_adapter.persisted_offset reads it; recovery starts a partition's changelog after it",
    ),
    (
        Store.set_persisted_offset,
        "b4c811926678346ebb8c40486dbc46d0fbac2bbeaa592384bd955112556acf45",
        "faust_adapter.set_persisted_offset records the changelog offsets the worker's own "
        "writes reached; check it still stores one offset per partition database",
    ),
    (
        Recovery._slurp_changelogs.fun,
        "7825c7e50f766d5ab0fd246b63420ea0dfcd732d005f1057cc9da656ff5d3967",
        "faust_adapter.restore_changelogs writes records into the store and advances "
        "active_offsets/standby_offsets, then passes each partition's last record on: check "
        "this loop still skips a record at or below the offset seen (`offset > seen_offset`) "
        "and still checks for the end of recovery after every record",
    ),
    (
        Recovery._restart_recovery.fun,
        "6bd8a8558a2dffe4c60b8150f23d721baa6b3d658367f911a3ad2187e20efc6f",
        "faust_adapter.install_bulk_restore runs the librdkafka restore inside the seek of the "
        'active partitions: check that seek (`_seek_offsets` with title "active") still '
        "comes after the active highwaters and offsets are built and before `need_recovery()`, "
        "and that its timeout is still broker_request_timeout",
    ),
    (
        Recovery._seek_offsets,
        "19598ca63d94d250e49d2dfe48a3c48ecbdf65ee4f1a2871abda51d28b335e55",
        "faust_adapter.install_bulk_restore wraps it on the recovery instance; check it still "
        "seeks each partition to the offset it is given",
    ),
    (
        Recovery._build_highwaters,
        "91b4cc0d3724ae7bfc398e873684fc6f667ef8feb61a3b3314346ef11f2823de",
        "the librdkafka restore reads each active partition up to its highwater as this "
        "records it: check it is still the last offset (the end offset minus one)",
    ),
    (
        Recovery.flush_buffers,
        "6fa9c17f1071018c49cb6d411a34fb4a2c2ac4f41c3de650bbee15831abd6f1f",
        "faust_adapter.restore_changelogs calls it before writing newer records; check it "
        "still applies and clears every table's buffered changelog events",
    ),
    (
        App._new_transport,
        "42db531312dd776fc3937154a32f19eeb9ad7d4ebc2722a92d081a2d271baea1",
        "faust_adapter.install_consumer builds the consumer transport the way this does; "
        "build it with the same arguments",
    ),
    (
        Monitor.on_message_in,
        "b2a9a9045b2f456cc736fdbf99f47f4f45335896050c9e48703dfc8146ca51ea",
        "LeanMonitor makes it a no-op; check nothing in faust needs what it records",
    ),
    (
        Monitor.on_stream_event_in,
        "df6d2e5f6397ce441d1fdeb83cb7cb5893a33e507e5e0c8caad38e6a916d838d",
        "LeanMonitor keeps only its stream_inbound_time write; check nothing in faust needs "
        "the rest of what it records or its returned state",
    ),
    (
        Monitor.on_stream_event_out,
        "2d2277a6dbda754cd655207496c08adb6b9141e59556cd9373593c1ef28a18bd",
        "LeanMonitor makes it a no-op; check nothing in faust needs what it records",
    ),
    (
        Monitor.on_message_out,
        "7c4054247cde96c35740d0f5876b90d67549eed0af16f19cdcb3337e719a6c3b",
        "LeanMonitor makes it a no-op; check nothing in faust needs what it records",
    ),
    (
        Monitor.track_tp_end_offset,
        "94ceb4542d7c1082f7c59da60c76399f2ad71f2bb9c276fdc3b3ccdb7b716d4d",
        "LeanMonitor makes it a no-op; check nothing in faust needs what it records",
    ),
    (
        Store._db_for_partition,
        "cb7e67d5f9efc4bced7b7ab09a55fe717c352daad5b693594e3f7ca52a98787f",
        "faust_adapter.partition_db calls it; check it still opens a partition's database on "
        "first use and returns the same one after",
    ),
    (
        RocksDBOptions.as_options,
        "d2a1bea17736d2eb2f8d2da592ef843f31bd9583b17b3fcbb2ebd84c15051660",
        "faust_adapter._BoundedRocksDBOptions.as_options copies its rocksdict branch with a shared "
        "block cache and memtable budget; copy any option faust added or changed",
    ),
    (
        Store._visible_items,
        "545dc16a2b25e4a4c6ce4483ba808b7121b733ac32ecbdcbba78348248f816c2",
        "faust_adapter.visible_items mirrors it for rocksdict (db.items() without "
        "`offset_key`); check it still yields the raw (key, value) bytes of one partition "
        "database without faust's offset record",
    ),
    (
        Store._set,
        "4227e561e288d9413bf663a3a67940fd4976f5484e70e49445858ce4d400d26e",
        "FaustTableStore.put writes the partition database directly as this does (raw key, "
        "raw value); check `table[key] = value` still stores nothing else it needs",
    ),
    (
        Store.apply_changelog_batch,
        "ea3344d369fc4ab5e3cdace30565691136035a463acb7b2551fdc0b8af71643b",
        "faust restores FaustTableStore's tables through it from the changelog records the "
        "store sends; check it still writes each record's raw key and value (None: delete) "
        "into the database of the record's partition",
    ),
]


def _source_sha256(function: Callable[..., Any]) -> str:
    return hashlib.sha256(inspect.getsource(function).encode()).hexdigest()


def _parameters(function: Callable[..., Any]) -> list[tuple[str, Any, Any]]:
    """Names, kinds and defaults, not annotations (faust's are types, the adapter's strings)."""
    return [(p.name, p.kind, p.default) for p in inspect.signature(function).parameters.values()]


def _locked_version(lock: Path, name: str) -> str | None:
    match = re.search(rf"^{re.escape(name)}==([^\s\\;]+)", lock.read_text(), re.MULTILINE)
    return match.group(1) if match else None


@contextlib.contextmanager
def _worker_app(state: Path, **settings: Any) -> Iterator[Any]:
    """The worker's app as `create_app` builds it; nothing is started or connected."""
    app = create_app(
        Settings(state_dir=state, kafka_bootstrap_servers="127.0.0.1:9", **settings),
        StreamConfig(data_dir=state / "worker"),
    ).app
    try:
        yield app
    finally:
        # The event loops building it opened: the app's and its consumer thread's.
        consumer = faust_adapter.started_consumer(app)
        if consumer is not None:
            consumer._thread.thread_loop.close()
        app.loop.close()


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    with _worker_app(tmp_path_factory.mktemp("faust-adapter")) as built:
        yield built


@pytest.fixture(scope="module")
def consumer(app: Any) -> Any:
    return app.consumer


# -- the version ---------------------------------------------------------------------------


def test_installed_faust_is_the_version_the_adapter_was_written_against() -> None:
    installed = importlib.metadata.version("faust-streaming")
    assert installed == faust_adapter.FAUST_VERSION, (
        f"faust-streaming {installed} is installed; streams/faust_adapter.py was written "
        f"against {faust_adapter.FAUST_VERSION}: re-check every internal it uses (this file "
        "lists them), then update FAUST_VERSION, the pin and the locks"
    )


def test_pyproject_and_the_locks_pin_that_faust_version_exactly() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert f"faust-streaming=={faust_adapter.FAUST_VERSION}" in project["dependencies"]
    for lock in ("requirements.lock", "requirements-dev.lock"):
        assert _locked_version(ROOT / lock, "faust-streaming") == faust_adapter.FAUST_VERSION, lock


# -- code copied or mirrored from faust ----------------------------------------------------


@pytest.mark.parametrize(
    ("function", "recorded", "recheck"),
    COPIED_OR_MIRRORED,
    ids=[f"{f.__module__}.{f.__qualname__}" for f, _, _ in COPIED_OR_MIRRORED],
)
def test_faust_code_copied_or_mirrored_is_unchanged_since_the_copy(
    function: Callable[..., Any], recorded: str, recheck: str
) -> None:
    actual = _source_sha256(function)
    assert actual == recorded, (
        f"{function.__module__}.{function.__qualname__} changed since faust-streaming "
        f"{faust_adapter.FAUST_VERSION} (source sha256 {actual}, recorded {recorded}): "
        f"{recheck}; then record the new hash in {Path(__file__).name}"
    )


# -- the consumer and its fetch loop -------------------------------------------------------


def test_faust_drains_messages_through_the_one_consumer_method_the_adapter_overrides() -> None:
    fetcher = inspect.getsource(faust_consumer.Fetcher._fetcher.fun)
    assert "consumer._drain_messages(self)" in fetcher, "the fetcher no longer calls it"
    defining = [
        klass for klass in faust_adapter.Consumer.__mro__[1:] if "_drain_messages" in vars(klass)
    ]
    # Only faust's base Consumer defines it: the copy replaces nothing the driver customised.
    assert defining == [faust_consumer.Consumer]
    assert _parameters(faust_consumer.Consumer._drain_messages) == _parameters(
        faust_adapter.Consumer._drain_messages
    )
    assert issubclass(faust_adapter.Consumer, faust_aiokafka.Consumer)
    assert issubclass(faust_adapter.Transport, faust_aiokafka.Transport)


def test_install_consumer_gives_the_app_the_adapters_consumer(app: Any, consumer: Any) -> None:
    transport_init = _parameters(transport_base.Transport.__init__)
    assert [name for name, _, _ in transport_init] == ["self", "url", "app", "loop"]
    assert App.transport.fset is not None, "App.transport is no longer settable"
    assert type(app.transport) is faust_adapter.Transport
    assert type(consumer) is faust_adapter.Consumer


def test_the_consumer_has_every_internal_the_copied_fetch_loop_reads(
    app: Any, consumer: Any
) -> None:
    # mode's Service internals
    assert callable(consumer._stopped.is_set)
    assert callable(consumer.diag.set_flag) and callable(consumer.diag.unset_flag)
    assert callable(consumer.log.dev)
    assert [n for n, _, _ in _parameters(consumer.wait_first)] == ["coros", "timeout"]
    assert [n for n, _, _ in _parameters(consumer.sleep)][:1] == ["n"]
    # faust's Consumer internals
    assert consumer._read_offset[("nowhere", 0)] is None  # a defaultdict of None
    assert consumer._committed_offset.get(("nowhere", 0)) is None
    assert consumer._commit_every is None or isinstance(consumer._commit_every, int)
    assert isinstance(consumer._n_acked, int)
    assert callable(consumer.suspend_flow.is_set) and callable(consumer.suspend_flow.wait)
    assert [n for n, _, _ in _parameters(consumer._add_gap)] == ["tp", "offset_from", "offset_to"]
    assert [n for n, _, _ in _parameters(consumer.getmany)] == ["timeout"]
    assert isinstance(consumer.consumer_stopped_errors, tuple)
    assert consumer.consumer_stopped_errors
    assert consumer.transport is app.transport
    assert isinstance(consumer.should_stop, bool)
    assert callable(consumer.commit)


def test_the_conductor_hands_other_topics_off_through_a_coroutine(app: Any, consumer: Any) -> None:
    conductor = app.topics
    assert callable(conductor.acks_enabled_for)
    assert consumer.callback is conductor.on_message
    assert inspect.iscoroutinefunction(conductor.on_message)


def test_the_consumer_has_every_internal_the_batch_hand_off_reads(app: Any, consumer: Any) -> None:
    assert inspect.iscoroutinefunction(consumer._wait_next_records)
    assert [n for n, _, _ in _parameters(consumer._wait_next_records)] == ["timeout"]
    assert isinstance(consumer._buffered_partitions, set)
    assert callable(consumer.scheduler.iterate)
    assert callable(consumer._to_message)
    assert inspect.iscoroutinefunction(consumer.perform_seek)
    assert isinstance(consumer.flow_active, bool)
    assert isinstance(app.consumer_generation_id, int)
    assert isinstance(app.monitor.stream_inbound_time, dict)
    assert [n for n, _, _ in _parameters(faust_consumer.Consumer._new_offset)] == ["self", "tp"]
    # Records as the aiokafka driver fetches them carry what the worker reads.
    from aiokafka.structs import ConsumerRecord

    fields = {f for f in ConsumerRecord.__dataclass_fields__}
    assert {"topic", "partition", "offset", "key", "value", "headers"} <= fields


def test_marked_offsets_commit_for_batch_topics_and_acks_for_the_others(
    tmp_path: Path,
) -> None:
    with _worker_app(tmp_path) as app:
        consumer = app.consumer
        faust_adapter.install_batch_handler(app, ["source"], lambda batch: None)
        faust_adapter.mark_done(app, {("source", 0): 10, ("source", 1): 5})
        faust_adapter.mark_done(app, {("source", 0): 7})  # never backwards
        assert set(consumer._filter_tps_with_pending_acks()) >= {TP("source", 0), TP("source", 1)}
        assert consumer._filter_committable_offsets([TP("source", 0), TP("source", 1)]) == {
            TP("source", 0): 10,
            TP("source", 1): 5,
        }
        # Taken once: nothing new to commit until the next mark.
        assert consumer._new_offset(TP("source", 0)) is None
        faust_adapter.mark_done(app, {("source", 2): 3})
        faust_adapter.forget_done(app, [TP("source", 2)])
        assert consumer._new_offset(TP("source", 2)) is None
        # Other topics: faust's acks, as before.
        consumer._acked[TP("other", 0)].extend([0, 1, 2])
        assert consumer._new_offset(TP("other", 0)) == 3


# -- the monitor ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "hook",
    [
        "on_message_in",
        "on_stream_event_in",
        "on_stream_event_out",
        "on_message_out",
        "track_tp_end_offset",
    ],
)
def test_lean_monitor_overrides_faust_monitor_hooks_with_their_signatures(hook: str) -> None:
    assert _parameters(getattr(Monitor, hook)) == _parameters(
        getattr(faust_adapter.LeanMonitor, hook)
    )


def test_the_driver_still_reads_the_stream_inbound_time_lean_monitor_keeps(app: Any) -> None:
    assert isinstance(app.monitor, faust_adapter.LeanMonitor)
    assert "stream_inbound_time" in Monitor.__annotations__
    driver = inspect.getsource(faust_aiokafka.AIOKafkaConsumerThread.verify_event_path)
    assert "monitor.stream_inbound_time" in driver


# -- the RocksDB store ---------------------------------------------------------------------


def test_the_rocksdb_store_gives_partition_databases_and_their_visible_items(app: Any) -> None:
    assert [n for n, _, _ in _parameters(Store._db_for_partition)] == ["self", "partition"]
    assert [n for n, _, _ in _parameters(Store._visible_items)] == ["self", "db"]
    table = app.tables["pending-predictions"]
    assert isinstance(table.data, Store)
    db = faust_adapter.partition_db(table, 1)
    assert db is faust_adapter.partition_db(table, 1)
    db.put(b"key", b"value")
    db.put(table.data.offset_key, b"7")
    assert list(faust_adapter.visible_items(table, db)) == [(b"key", b"value")]
    db.delete(b"key")
    db.delete(table.data.offset_key)


def test_the_persisted_changelog_offset_is_what_recovery_starts_after(app: Any) -> None:
    table = app.tables["pending-predictions"]
    assert faust_adapter.persisted_offset(table, 2) is None
    faust_adapter.set_persisted_offset(table, 2, 41)
    assert faust_adapter.persisted_offset(table, 2) == 41
    tp = TP(table.changelog_topic.get_topic_name(), 2)
    assert table.persisted_offset(tp) == 41
    recovery = inspect.getsource(Recovery)
    assert "persisted_offset = table.persisted_offset(tp)" in recovery
    faust_adapter.partition_db(table, 2).delete(table.data.offset_key)


def _record(offset: int, key: bytes, value: bytes | None) -> SimpleNamespace:
    return SimpleNamespace(offset=offset, key=key, value=value)


def test_restore_writes_changelog_records_in_one_batch_after_faust_buffered_older_ones(
    tmp_path: Path,
) -> None:
    with _worker_app(tmp_path) as app:
        table = app.tables["pending-predictions"]
        recovery = app.tables.recovery
        tp = TP(table.changelog_topic.get_topic_name(), 3)
        other = TP("not-a-changelog", 0)
        recovery.active_tps.add(tp)
        recovery.tp_to_table[tp] = table
        recovery.active_offsets[tp] = 4
        # faust's own buffer holds an older record of a key the fetched records overwrite.
        old = SimpleNamespace(tp=tp, partition=3, offset=4, key=b"a", value=b"old")
        recovery.buffers[table].append(SimpleNamespace(message=old))
        fetched = {
            tp: [
                _record(3, b"z", b"before what was seen"),
                _record(5, b"a", b"new"),
                _record(6, b"b", b"x"),
                _record(7, b"b", None),
                _record(8, b"c", b"last"),
            ],
            other: [_record(0, b"k", b"v")],
        }
        rest = faust_adapter.restore_changelogs(app, fetched)
        db = faust_adapter.partition_db(table, 3)
        assert dict(faust_adapter.visible_items(table, db)) == {b"a": b"new", b"c": b"last"}
        assert faust_adapter.persisted_offset(table, 3) == 8
        assert recovery.active_offsets[tp] == 8
        assert recovery.buffers[table] == []
        # faust sees only the last record (already restored, so it skips it) and other topics.
        assert [r.offset for r in rest[tp]] == [8]
        assert rest[other] == fetched[other]
        # A round of records all seen already writes nothing and moves nothing back.
        again = faust_adapter.restore_changelogs(app, {tp: [_record(6, b"b", b"stale")]})
        assert [r.offset for r in again[tp]] == [6]
        assert faust_adapter.persisted_offset(table, 3) == 8
        assert db.get(b"b") is None


def test_the_active_seek_first_restores_the_changelog_through_librdkafka(tmp_path: Path) -> None:
    with _worker_app(tmp_path) as app:
        table = app.tables["pending-predictions"]
        recovery = app.tables.recovery
        topic = table.changelog_topic.get_topic_name()
        tp = TP(topic, 1)
        last = faust_adapter.BULK_RESTORE_MIN_ENTRIES + 10
        recovery.tp_to_table[tp] = table
        recovery.active_highwaters[tp] = last
        offsets = {tp: 9}
        # One round reaching the highwater (offsets between are compacted away).
        consumer = ScriptedConsumer(
            [
                ChangelogRecord(1, 10, b"a", b"1", topic=topic),
                ChangelogRecord(1, last, b"b", b"2", topic=topic),
            ]
        )
        sought: list[tuple[str, dict[Any, int]]] = []

        async def faust_seek(consumer: Any, tps: Any, offsets: Any, title: str) -> None:
            sought.append((title, dict(offsets)))

        recovery._seek_offsets = faust_seek
        faust_adapter.install_bulk_restore(app, lambda: consumer)
        # What faust's recovery awaits for the standby partitions: no restore, faust's seek.
        asyncio.run(recovery._seek_offsets(None, {tp}, offsets, "standby"))
        assert consumer.assigned == [] and sought == [("standby", {tp: 9})]
        asyncio.run(recovery._seek_offsets(None, {tp}, offsets, "active"))
        assigned = [(tp.topic, tp.partition, tp.offset) for tp in consumer.assigned]
        assert assigned == [(topic, 1, 10)] and consumer.closed
        # faust seeks from, and counts as restored, the offset the restore reached.
        assert sought[-1] == ("active", {tp: last})
        db = faust_adapter.partition_db(table, 1)
        assert dict(faust_adapter.visible_items(table, db)) == {b"a": b"1", b"b": b"2"}
        assert faust_adapter.persisted_offset(table, 1) == last
        assert faust_adapter.restore_tally(app).entries == 2


def test_a_short_changelog_is_left_to_faust_recovery(tmp_path: Path) -> None:
    with _worker_app(tmp_path) as app:
        table = app.tables["pending-predictions"]
        recovery = app.tables.recovery
        tp = TP(table.changelog_topic.get_topic_name(), 0)
        recovery.tp_to_table[tp] = table
        recovery.active_highwaters[tp] = faust_adapter.BULK_RESTORE_MIN_ENTRIES - 2
        opened: list[int] = []

        async def faust_seek(consumer: Any, tps: Any, offsets: Any, title: str) -> None:
            pass

        recovery._seek_offsets = faust_seek
        faust_adapter.install_bulk_restore(app, lambda: opened.append(1))  # type: ignore[arg-type,return-value]
        asyncio.run(recovery._seek_offsets(None, {tp}, {tp: -1}, "active"))
        assert opened == []


def test_a_table_without_the_rocksdb_store_has_no_partition_database() -> None:
    assert faust_adapter.partition_db(SimpleNamespace(data=object()), 0) is None


# -- the app -------------------------------------------------------------------------------


def test_the_app_keeps_its_consumer_and_recovery_flag_where_the_adapter_reads_them(
    tmp_path: Path,
) -> None:
    with _worker_app(tmp_path) as app:
        assert faust_adapter.started_consumer(app) is None  # not created by looking
        consumer = app.consumer
        assert faust_adapter.started_consumer(app) is consumer
        tp = TP("nowhere", 0)
        assert faust_adapter.committed_offset(consumer, tp) is None
        assert tp not in consumer._committed_offset
        consumer._committed_offset[tp] = 42
        assert faust_adapter.committed_offset(consumer, tp) == 42
        assert "in_recovery" in AppT.__annotations__
        assert faust_adapter.in_recovery(app) is False
        recovery = inspect.getsource(Recovery)
        assert "self.app.in_recovery = True" in recovery
        assert "self.app.in_recovery = False" in recovery


def test_restore_tally_sums_each_recovery_from_its_start_to_its_last_entry() -> None:
    tally = faust_adapter.RestoreTally()
    assert tally.seconds == 0.0
    tally.record(100, started_at=10.0, now=11.0)
    tally.record(50, started_at=10.0, now=12.5)
    assert (tally.entries, tally.seconds) == (150, 2.5)
    tally.record(10, started_at=20.0, now=20.5)  # a later recovery
    assert (tally.entries, tally.seconds) == (160, 3.0)


# -- the RocksDB stores' memory ------------------------------------------------------------


def test_every_join_table_store_is_opened_with_bounded_memtables(app: Any) -> None:
    from safeloop.streams.app import ROCKSDB_OPTIONS

    assert len(app.tables) == 2
    for table in app.tables.values():
        options = table.data.rocksdb_options
        assert options.write_buffer_size == ROCKSDB_OPTIONS["write_buffer_size"] == 8 * 2**20
        assert options.max_write_buffer_number == 2
        # faust pops keys from the dict it is given: a second store from the same table must
        # still get the sizes.
        assert table.options["write_buffer_size"] == 8 * 2**20


def test_every_partition_database_of_a_process_shares_one_memtable_budget(app: Any) -> None:
    budget = faust_adapter.rocksdb_memory_bytes() // 2
    # 16 databases, as a worker owning 8 partitions of the two tables has.
    databases = [
        faust_adapter.partition_db(table, partition)
        for table in app.tables.values()
        for partition in range(8)
    ]
    stores = [table.data for table in app.tables.values()]
    assert all(isinstance(store, faust_adapter.BoundedRocksDBStore) for store in stores)
    value = b"v" * 200
    highest = 0
    # About 4x the budget in all, spread evenly as a worker's partitions fill: each database
    # alone stays below its own 2 x 8 MB, so only the shared budget can flush them. Memtables
    # being flushed still count, so while writes outrun the flushes the peak passes the budget.
    for batch in range(30):
        for n, db in enumerate(databases):
            for i in range(256):
                db[b"%d-%d-%d" % (n, batch, i)] = value
        highest = max(highest, faust_adapter.memtable_usage_bytes())
    assert 0 < highest <= budget * 2
    assert sum(len(list(db.keys())) for db in databases) == 30 * 256 * len(databases)


def test_every_partition_database_of_a_process_reads_through_one_bounded_block_cache(
    app: Any,
) -> None:
    databases = [
        faust_adapter.partition_db(table, partition)
        for table in app.tables.values()
        for partition in (2, 3)
    ]
    value = b"w" * 1000
    for n, db in enumerate(databases):
        for i in range(12_000):
            db[b"%d-%d" % (n, i)] = value
        db.flush()
    before = faust_adapter.block_cache_usage_bytes()
    # Reading ~48 MB of blocks back (more than the one cache holds): every database's reads
    # land in the same cache, which stays within its capacity.
    for n, db in enumerate(databases):
        for i in range(12_000):
            assert db[b"%d-%d" % (n, i)] == value
    after = faust_adapter.block_cache_usage_bytes()
    assert after > before
    assert after <= faust_adapter.rocksdb_memory_bytes() * 1.05


def test_the_worker_app_holds_rocksdb_to_the_memory_its_settings_give(tmp_path: Path) -> None:
    default = Settings().stream_rocksdb_memory_mb * 2**20
    assert faust_adapter.rocksdb_memory_bytes() == default
    try:
        with _worker_app(tmp_path, stream_rocksdb_memory_mb=4) as small:
            assert faust_adapter.rocksdb_memory_bytes() == 4 * 2**20
            db = faust_adapter.partition_db(next(iter(small.tables.values())), 6)
            value = b"u" * 1000
            for i in range(12_000):
                db[b"%d" % i] = value
            db.flush()
            for i in range(12_000):
                assert db[b"%d" % i] == value
            # ~12 MB of blocks read through a 4 MB cache, which cannot evict what the module's
            # other databases' memtables reserved in it.
            blocks = faust_adapter.block_cache_usage_bytes() - faust_adapter.memtable_usage_bytes()
            assert blocks <= 4 * 2**20 * 1.05
    finally:
        faust_adapter.bound_rocksdb_memory(default)
    with pytest.raises(ValueError, match="positive"):
        faust_adapter.bound_rocksdb_memory(0)


def test_a_full_scan_of_a_partition_reads_past_the_block_cache(app: Any) -> None:
    table = next(iter(app.tables.values()))
    db = faust_adapter.partition_db(table, 5)
    there = sum(1 for _ in faust_adapter.visible_items(table, db))
    value = b"s" * 1000
    for i in range(8_000):
        db[b"scan-%d" % i] = value
    db.flush()
    default = faust_adapter.rocksdb_memory_bytes()
    # Room for every block, so a scan through the cache would show.
    faust_adapter.bound_rocksdb_memory(256 * 2**20)

    def blocks() -> int:
        # The cache also holds the memtables' reservations, which a background flush releases.
        return faust_adapter.block_cache_usage_bytes() - faust_adapter.memtable_usage_bytes()

    try:
        before = blocks()
        scanned = sum(1 for _ in faust_adapter.visible_items(table, db))
        assert scanned == there + 8_000
        # 8 MB of blocks read.
        assert blocks() - before < 2**20
        for i in range(8_000):
            assert db[b"scan-%d" % i] == value
        # Point reads do go through it.
        assert blocks() - before > 4 * 2**20
    finally:
        faust_adapter.bound_rocksdb_memory(default)


# -- the worker's graceful stop ------------------------------------------------------------


def test_a_draining_worker_runs_its_hook_before_mode_stops_the_app() -> None:
    from mode.services import Service

    stop = inspect.getsource(Service.stop)
    # The drain writes through the app's tables and producer: they must still run.
    assert stop.index("await self.on_stop()") < stop.index("await self._stop_children()")
    defining = [
        klass
        for klass in faust_adapter.DrainingWorker.__mro__[1:]
        if "on_stop" in vars(klass) and klass.__module__.startswith(("faust", "mode"))
    ]
    # Only mode's no-op callback defines on_stop: the hook shadows nothing of faust's.
    assert [klass.__qualname__ for klass in defining] == ["ServiceCallbacks"], defining
