"""The embedded ClickHouse endpoint, driven by clickhouse-connect exactly as a real server is."""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import signal
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import clickhouse_connect
import httpx
import numpy as np
import pandas as pd
import pytest
from clickhouse_connect.driver import Client
from clickhouse_connect.driver.exceptions import DatabaseError
from clickhouse_connect.driver.external import ExternalData

from safeloop.infra.clickhouse import clickhouse_client
from safeloop.infra.exceptions import PortInUseError, WarehouseError
from safeloop.infra.portcheck import free_port
from safeloop.infra.settings import Secret, Settings
from safeloop.infra.warehouse import ServerConfig, WarehouseProcess, WarehouseServer
from safeloop.infra.warehouse.engine import Engine
from safeloop.infra.warehouse.sessions import SessionStore

pytestmark = pytest.mark.integration

# Late enough that the first blocks are on the wire when it fails (one thread, small blocks).
MID_STREAM_FAILURE = (
    "SELECT number, throwIf(number = 3000000, 'boom') AS x FROM numbers(10000000) "
    "SETTINGS max_threads = 1, max_block_size = 65536"
)


def _settings(state_dir: Path, **changes: object) -> Settings:
    base = dataclasses.replace(
        Settings.from_env({}), state_dir=state_dir, warehouse_port=free_port()
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WarehouseProcess]:
    """The endpoint as `safeloop warehouse start` runs it: a daemon in its own process."""
    process = WarehouseProcess(_settings(tmp_path_factory.mktemp("warehouse-state")))
    process.start()
    yield process
    process.stop()


@pytest.fixture(scope="module")
def url(daemon: WarehouseProcess) -> str:
    return daemon.status().url


def _client(url: str, **kw: object) -> Client:
    host, port = url.removeprefix("http://").split(":")
    return clickhouse_connect.get_client(host=host, port=int(port), **kw)  # type: ignore[arg-type]


@pytest.fixture
def client(url: str) -> Iterator[Client]:
    c = _client(url)
    yield c
    c.close()


@pytest.fixture
def table(client: Client) -> Iterator[str]:
    name = f"t_{uuid.uuid4().hex[:10]}"
    client.command(
        f"CREATE TABLE {name} (id UInt64, value Float64, name String, kind LowCardinality(String), "
        "at DateTime64(3, 'UTC'), maybe Nullable(Int32), tags Array(String), "
        "attrs Map(String, Float64)) ENGINE = MergeTree ORDER BY id"
    )
    yield name
    client.command(f"DROP TABLE IF EXISTS {name}")


# --- plain HTTP ------------------------------------------------------------------------------


def test_ping_and_get_query(url: str) -> None:
    with httpx.Client(base_url=url, trust_env=False) as http:
        assert http.get("/ping").text == "Ok.\n"
        assert http.get("/").text == "Ok.\n"
        answer = http.get("/", params={"query": "SELECT 1 + 1"})
        assert answer.status_code == 200
        assert answer.text == "2\n"
        assert answer.headers["X-ClickHouse-Format"] == "TabSeparated"
        assert answer.headers["X-ClickHouse-Query-Id"]
        assert answer.headers["X-ClickHouse-Server-Display-Name"]
        assert answer.headers["X-ClickHouse-Timezone"]
        assert http.get("/nowhere").status_code == 404


def test_errors_in_clickhouse_form(url: str) -> None:
    with httpx.Client(base_url=url, trust_env=False) as http:
        missing = http.post("/", content=b"SELECT * FROM no_such_table")
        assert missing.status_code == 404
        assert missing.headers["X-ClickHouse-Exception-Code"] == "60"
        assert missing.text.startswith("Code: 60. DB::Exception:")
        assert "(UNKNOWN_TABLE)" in missing.text
        syntax = http.post("/", content=b"SELEC 1")
        assert (syntax.status_code, syntax.headers["X-ClickHouse-Exception-Code"]) == (400, "62")
        for modifying in ("CREATE TABLE x (a UInt8) ENGINE = Memory", "INSERT INTO x VALUES (1)"):
            readonly = http.get("/", params={"query": modifying})
            assert readonly.headers["X-ClickHouse-Exception-Code"] == "164"


def test_insert_statement_in_url_data_in_body(url: str, client: Client, table: str) -> None:
    with httpx.Client(base_url=url, trust_env=False) as http:
        answer = http.post(
            "/",
            params={"query": f"INSERT INTO {table} (id, value, name, kind, at) FORMAT CSV"},
            content=b"1,0.5,a,k,2024-01-01 00:00:00\n2,1.5,b,k,2024-01-01 00:00:01\n",
        )
        assert answer.status_code == 200, answer.text
        assert '"written_rows":"2"' in answer.headers["X-ClickHouse-Summary"]
    assert client.command(f"SELECT sum(value) FROM {table}") == 2


# --- clickhouse-connect ----------------------------------------------------------------------


def test_connect_handshake(client: Client) -> None:
    assert client.server_version
    assert client.server_tz is not None
    assert "max_threads" in client.server_settings
    assert client.ping()
    assert client.command("SELECT version()") == client.server_version


def test_insert_rows_and_query(client: Client, table: str) -> None:
    rows = [
        [
            i,
            i / 2,
            f"n{i}",
            "even" if i % 2 == 0 else "odd",
            dt.datetime(2024, 1, 1, 0, 0, i),
            None if i % 3 else i,
            [f"t{i}"],
            {"a": float(i)},
        ]
        for i in range(10)
    ]
    summary = client.insert(table, rows)
    assert summary.written_rows == 10
    result = client.query(f"SELECT * FROM {table} ORDER BY id")
    assert result.column_names[:3] == ("id", "value", "name")
    assert [list(r) for r in result.result_rows] == rows


def test_numpy_columns_round_trip(client: Client, table: str) -> None:
    ids = np.arange(200_000, dtype=np.uint64)
    values = ids.astype(np.float64) * 0.25
    client.insert(table, [ids, values], column_names=["id", "value"], column_oriented=True)
    back = client.query_np(f"SELECT id, value FROM {table} ORDER BY id")
    assert np.array_equal(back["id"], ids)
    assert np.array_equal(back["value"], values)


def test_pandas_round_trip(client: Client, table: str) -> None:
    frame = pd.DataFrame(
        {
            "id": np.arange(1000, dtype=np.uint64),
            "value": np.linspace(0, 1, 1000),
            "name": [f"name-{i}" for i in range(1000)],
            "kind": ["a", "b"] * 500,
            "at": pd.Timestamp("2024-05-01", tz="UTC")
            + pd.to_timedelta(np.arange(1000), unit="ms"),
        }
    )
    assert client.insert_df(table, frame).written_rows == 1000
    back = client.query_df(f"SELECT id, value, name, kind, at FROM {table} ORDER BY id")
    assert back["id"].tolist() == frame["id"].tolist()
    assert np.allclose(back["value"], frame["value"])
    assert back["name"].tolist() == frame["name"].tolist()
    assert back["kind"].tolist() == frame["kind"].tolist()
    assert back["at"].iloc[-1] == dt.datetime(2024, 5, 1, 0, 0, 0, 999000)


def test_server_side_parameters(url: str, client: Client) -> None:
    query = "SELECT {n:Int32} + 1, {s:String}, {a:Array(String)}, {d:DateTime}"
    parameters = {
        "n": 41,
        "s": "it's a\ttab",
        "a": ["x", "y"],
        "d": dt.datetime(2024, 2, 3, 4, 5, 6),
    }
    expected = [(42, "it's a\ttab", ["x", "y"], dt.datetime(2024, 2, 3, 4, 5, 6))]
    assert client.query(query, parameters=parameters).result_rows == expected
    # The same parameters sent in a multipart form body instead of the URL.
    form = _client(url, form_encode_query_params=True)
    try:
        assert form.query(query, parameters=parameters).result_rows == expected
    finally:
        form.close()


def test_settings_apply_to_the_query(client: Client) -> None:
    result = client.query(
        "SELECT getSetting('max_block_size'), getSetting('max_threads')",
        settings={"max_block_size": 1234, "max_threads": 1},
    )
    assert result.result_rows == [(1234, 1)]
    with pytest.raises(DatabaseError) as info:
        client.query("SELECT 1", settings={"max_block_size": "lots"})
    assert info.value.code is not None


def test_session_keeps_temporary_tables_and_set(url: str) -> None:
    session = _client(url, session_id=str(uuid.uuid4()))
    other = _client(url, autogenerate_session_id=False)
    try:
        session.command("CREATE TEMPORARY TABLE scratch (x UInt8)")
        session.insert("scratch", [[7], [8]])
        assert session.query("SELECT sum(x) FROM scratch").result_rows == [(15,)]
        with pytest.raises(DatabaseError):
            other.query("SELECT * FROM scratch")
        session.command("SET max_block_size = 4321")
        assert session.command("SELECT getSetting('max_block_size')") == 4321
        # A setting given with one request lasts for that request only.
        assert session.command("SELECT getSetting('max_threads')", settings={"max_threads": 1}) == 1
        assert session.command("SELECT getSetting('max_threads')") != 1
        assert session.command("SELECT getSetting('max_block_size')") == 4321
    finally:
        session.close()
        other.close()


def test_session_used_concurrently_is_locked(url: str) -> None:
    session_id = str(uuid.uuid4())
    first = _client(url, session_id=session_id)
    second = _client(url, session_id=session_id)
    outcome: list[BaseException | None] = []

    def slow() -> None:
        try:
            first.command("SELECT sleep(2)")
            outcome.append(None)
        except BaseException as exc:  # pragma: no cover - reported below
            outcome.append(exc)

    worker = threading.Thread(target=slow)
    worker.start()
    time.sleep(0.5)
    try:
        with pytest.raises(DatabaseError) as info:
            second.command("SELECT 1")
        assert info.value.code == 373
    finally:
        worker.join()
        first.close()
        second.close()
    assert outcome == [None]


def test_bad_query_raises_database_error_with_code(client: Client) -> None:
    with pytest.raises(DatabaseError) as info:
        client.query("SELECT * FROM no_such_table_anywhere")
    assert info.value.code == 60
    assert "no_such_table_anywhere" in str(info.value)
    with pytest.raises(DatabaseError) as syntax:
        client.command("CREATE TABL oops")
    assert syntax.value.code == 62


@pytest.mark.parametrize("compress", [True, "lz4", "zstd", "gzip", False])
def test_compression_both_ways(url: str, compress: bool | str, table: str) -> None:
    compressed = _client(url, compress=compress)
    try:
        ids = np.arange(300_000, dtype=np.uint64)
        compressed.insert(
            table, [ids, ids * 2.0], column_names=["id", "value"], column_oriented=True
        )
        back = compressed.query_np(f"SELECT id, value FROM {table} ORDER BY id")
        assert np.array_equal(back["value"], ids * 2.0)
    finally:
        compressed.close()


def test_response_compressed_as_accepted(url: str) -> None:
    with httpx.Client(base_url=url, trust_env=False) as http:
        answer = http.post(
            "/",
            content=b"SELECT number FROM numbers(1000)",
            headers={"Accept-Encoding": "gzip"},
            params={"enable_http_compression": "1"},
        )
        assert answer.headers["Content-Encoding"] == "gzip"
        assert answer.text.splitlines()[-1] == "999"  # httpx decoded it
        plain = http.post(
            "/",
            content=b"SELECT 1",
            headers={"Accept-Encoding": "gzip"},
            params={"enable_http_compression": "0"},
        )
        assert "Content-Encoding" not in plain.headers


def test_concurrent_clients_from_threads(url: str) -> None:
    failures: list[object] = []

    def work(n: int) -> None:
        c = _client(url, autogenerate_session_id=False)
        try:
            for i in range(15):
                rows = c.query(
                    "SELECT {n:UInt32} * 1000 + {i:UInt32} + number FROM numbers(3)",
                    parameters={"n": n, "i": i},
                ).result_rows
                if rows != [(n * 1000 + i,), (n * 1000 + i + 1,), (n * 1000 + i + 2,)]:
                    failures.append(rows)
        except Exception as exc:
            failures.append(exc)
        finally:
            c.close()

    threads = [threading.Thread(target=work, args=(n,)) for n in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []


def test_error_before_output_is_an_http_error(client: Client) -> None:
    with pytest.raises(DatabaseError) as info:
        client.query("SELECT throwIf(number = 100000, 'boom') FROM numbers(1000000)")
    assert info.value.code == 395
    assert "boom" in str(info.value)


@pytest.mark.parametrize("compress", [True, "lz4", "zstd", "gzip", False])
def test_mid_stream_exception_raises_database_error(url: str, compress: object) -> None:
    # The failure block travels inside the compressed stream, as the real server sends it.
    client = _client(url, compress=compress)
    seen = 0
    try:
        with (
            pytest.raises(DatabaseError) as info,
            client.query_row_block_stream(MID_STREAM_FAILURE) as stream,
        ):
            for block in stream:
                seen += len(block)
        assert seen > 0  # rows arrived before the failure: the response had started
        assert info.value.code == 395
        assert "boom" in str(info.value)
        assert client.command("SELECT 1") == 1  # the client recovers
    finally:
        client.close()


def test_mid_stream_exception_on_the_wire(url: str) -> None:
    with (
        httpx.Client(base_url=url, trust_env=False, timeout=60) as http,
        http.stream("POST", "/", content=MID_STREAM_FAILURE.encode() + b" FORMAT Native") as answer,
    ):
        assert answer.status_code == 200
        tag = answer.headers["X-ClickHouse-Exception-Tag"]
        body = b"".join(answer.iter_bytes())
    assert f"__exception__\r\n{tag}\r\n".encode() in body
    assert body.endswith(f" {tag}\r\n__exception__\r\n".encode())
    assert b"Code: 395." in body


def test_external_data(client: Client) -> None:
    data = ExternalData(
        file_name="ext", data=b"1\tone\n2\ttwo\n", structure="id UInt32, name String"
    )
    rows = client.query("SELECT id, name FROM ext ORDER BY id", external_data=data).result_rows
    assert rows == [(1, "one"), (2, "two")]
    typed = ExternalData(file_name="nums", data=b"5\n6\n", types="UInt8")
    assert client.query("SELECT sum(_1) FROM nums", external_data=typed).result_rows == [(11,)]


def test_header_formats_streamed_once(client: Client) -> None:
    text = client.raw_stream("SELECT number FROM numbers(300000)", fmt="TSVWithNames").read()
    lines = text.splitlines()
    assert lines[0] == b"number"
    assert len(lines) == 300_001
    binary = client.raw_query(
        "SELECT number FROM numbers(300000)", fmt="RowBinaryWithNamesAndTypes"
    )
    header = b"\x01\x06number\x06UInt64"
    assert binary.startswith(header)
    assert len(binary) == len(header) + 300_000 * 8
    empty = client.raw_query("SELECT number FROM numbers(10) WHERE 0", fmt="TSVWithNames")
    assert empty == b"number\n"


def test_other_formats_and_empty_results(client: Client) -> None:
    assert client.query("SELECT number FROM numbers(10) WHERE 0").result_rows == []
    assert client.query("SELECT number AS n FROM numbers(10) LIMIT 0").column_names == ("n",)
    assert b'"x": 1' in client.raw_query("SELECT 1 AS x", fmt="JSON")
    assert client.query_arrow("SELECT number FROM numbers(3)").num_rows == 3
    assert client.command("SHOW DATABASES")
    assert client.command("CREATE DATABASE IF NOT EXISTS other_db") is not None


def test_wait_end_of_query_buffers_large_results(client: Client) -> None:
    # query_np waits for the end of the query (wait_end_of_query=1): the result is buffered first.
    result = client.query_np("SELECT number, toString(number) FROM numbers(3000000)")
    assert len(result) == 3_000_000


# --- the endpoint as a process and an object -------------------------------------------------


def test_daemon_status_and_data_dir_lock(daemon: WarehouseProcess) -> None:
    status = daemon.status()
    assert status.running and status.pid is not None
    assert status.data_dir.is_dir()
    assert status.log_file.exists()
    with pytest.raises(WarehouseError, match="in use by process"):
        Engine(status.data_dir).open()
    assert daemon.start().pid == status.pid  # starting again is a no-op


def test_stale_pid_file_after_kill_is_recovered(tmp_path: Path) -> None:
    process = WarehouseProcess(_settings(tmp_path))
    first = process.start()
    assert first.pid is not None
    os.kill(first.pid, signal.SIGKILL)
    process._child.wait()  # type: ignore[union-attr] # reap it, as init would
    stale = process.status()
    assert not stale.running and stale.stale_pid_file
    again = process.start()
    try:
        assert again.running and again.pid != first.pid
        c = _client(again.url)
        assert c.command("SELECT 1") == 1
        c.close()
    finally:
        assert process.stop()
    assert not process.status().running
    assert not process.stop()


def test_port_in_use(tmp_path: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        with pytest.raises(PortInUseError):
            WarehouseProcess(_settings(tmp_path, warehouse_port=port)).start()


def test_daemon_checks_password_and_never_shows_it(tmp_path: Path) -> None:
    secret = "pw-" + uuid.uuid4().hex
    settings = _settings(tmp_path, clickhouse_user="safeloop", clickhouse_password=Secret(secret))
    process = WarehouseProcess(settings)
    status = process.start()
    try:
        assert status.pid is not None
        good = clickhouse_client(settings, database="")
        assert good.command("SELECT currentUser() != ''") == 1
        good.close()
        with pytest.raises(WarehouseError, match="516"):
            clickhouse_client(dataclasses.replace(settings, clickhouse_password=Secret("nope")))
        cmdline = Path(f"/proc/{status.pid}/cmdline").read_bytes()
        assert secret.encode() not in cmdline
    finally:
        process.stop()
    assert secret not in status.log_file.read_text()


def test_in_process_server_with_password_and_restart(tmp_path: Path) -> None:
    config = ServerConfig(tmp_path / "wh", port=0, user="safeloop", password=Secret("s3cret"))
    with WarehouseServer(config) as server:
        good = _client(server.url, username="safeloop", password="s3cret")
        good.command("CREATE TABLE kept (a UInt8) ENGINE = MergeTree ORDER BY a")
        good.insert("kept", [[1], [2]])
        good.close()
        with pytest.raises(DatabaseError) as info:
            _client(server.url, username="safeloop", password="wrong")
        assert info.value.code == 516
    with WarehouseServer(config) as server:
        again = _client(server.url, username="safeloop", password="s3cret")
        assert again.command("SELECT count() FROM kept") == 2
        again.close()


def test_non_local_bind_refused_without_password(tmp_path: Path) -> None:
    with pytest.raises(WarehouseError, match="CLICKHOUSE_PASSWORD"):
        WarehouseServer(ServerConfig(tmp_path / "wh", host="0.0.0.0", port=0))


# --- what a server would give readers --------------------------------------------------------


def test_with_insert_with_inline_data_takes_the_insert_path(client: Client) -> None:
    name = f"w_{uuid.uuid4().hex[:10]}"
    client.command(f"CREATE TABLE {name} (x UInt8, s String) ENGINE = MergeTree ORDER BY x")
    try:
        client.command(f"WITH 1 AS one INSERT INTO {name} FORMAT TabSeparated\n5\ta\n6\tb\n")
        client.command(f"WITH 7 AS seven INSERT INTO {name} SELECT seven, 'c'")
        rows = client.query(f"SELECT x, s FROM {name} ORDER BY x").result_rows
        assert rows == [(5, "a"), (6, "b"), (7, "c")]
    finally:
        client.command(f"DROP TABLE IF EXISTS {name}")


def test_a_session_is_free_for_the_next_query_as_soon_as_an_answer_ends(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The release of a session is made slow, so a server that releases it after the answer's
    # last chunk (the client already reading the next query's answer) is caught every time,
    # not once in thousands of queries.
    release_s = 0.3
    acquire = SessionStore.acquire

    @contextmanager
    def slow_release(
        store: SessionStore, session_id: str, timeout: float, check: bool
    ) -> Iterator[Any]:
        with acquire(store, session_id, timeout, check) as connection:
            yield connection
            time.sleep(release_s)

    monkeypatch.setattr(SessionStore, "acquire", slow_release)
    with WarehouseServer(ServerConfig(tmp_path / "wh", port=0)) as server:
        session_id = str(uuid.uuid4())
        # Two clients, two connections (clickhouse-connect's shared pool would carry both on one
        # keep-alive connection, served in turn), one session: each answer's end must find it
        # released.
        first = _client(server.url, session_id=session_id, dedicated_pool=True)
        second = _client(server.url, session_id=session_id, dedicated_pool=True)
        try:
            for index in range(3):
                started = time.monotonic()
                assert first.query(f"SELECT {index}, number FROM numbers(3)").row_count == 3
                answered = time.monotonic()
                # At once, on another connection: SESSION_IS_LOCKED had the session not been
                # released before the answer ended.
                assert second.command(f"SELECT {index}") == index
                assert answered - started >= release_s
                assert first.command(f"SELECT {index} + 1") == index + 1
        finally:
            first.close()
            second.close()


NATIVE_MIX = (
    "SELECT toDateTime('2024-07-01 12:00:00', 'America/Denver') AS t, "
    "toDateTime64('2024-07-01 12:00:00.250', 3, 'Asia/Tokyo') AS t64, "
    "toNullable(toDateTime('2024-07-01 12:00:00', 'America/Denver')) AS nt, "
    "toLowCardinality(toString(number % 2)) AS lc, [number, 1] AS a, map('k', number) AS m, "
    "toDecimal64(number, 2) AS d, number FROM numbers(5) ORDER BY number"
)


def test_native_results_keep_datetime_time_zones_for_the_declared_revision(url: str) -> None:
    client = _client(url)
    try:
        # clickhouse-connect declares revision 54405 once the endpoint answers it as a server.
        assert client.protocol_version == 54405
        rows = client.query(NATIVE_MIX).result_rows
        t, t64, nt, lc, a, m, d, number = rows[3]
        assert (str(t.tzinfo), t.hour, t.minute) == ("America/Denver", 12, 0)
        assert (str(t64.tzinfo), t64.hour, t64.microsecond) == ("Asia/Tokyo", 12, 250_000)
        assert str(nt.tzinfo) == "America/Denver" and nt == t
        assert (lc, a, m, float(d), number) == ("1", [3, 1], {"k": 3}, 3.0, 3)
        frame = client.query_df(NATIVE_MIX)
        assert str(frame["t"].dt.tz) == "America/Denver"
        assert frame["t"].iloc[0].hour == 12 and list(frame["number"]) == [0, 1, 2, 3, 4]
        # Many blocks, each with its block info, decode as one result.
        big = client.query(
            "SELECT toDateTime(number, 'America/Denver') AS t, toString(number) AS s "
            "FROM numbers(200000) SETTINGS max_block_size = 7000"
        )
        assert big.row_count == 200_000 and str(big.result_rows[-1][0].tzinfo) == "America/Denver"
    finally:
        client.close()


def test_without_a_declared_revision_native_is_written_as_for_revision_zero(url: str) -> None:
    with httpx.Client(base_url=url, trust_env=False) as http:
        query = "SELECT toDateTime(0, 'America/Denver') AS t FORMAT Native"
        plain = http.post("/", content=query).content
        declared = http.post("/?client_protocol_version=54405", content=query).content
    assert b"DateTime('America/Denver')" not in plain and b"DateTime" in plain
    assert declared.startswith(b"\x01\x00\x02\xff\xff\xff\xff\x00")
    assert b"DateTime('America/Denver')" in declared
