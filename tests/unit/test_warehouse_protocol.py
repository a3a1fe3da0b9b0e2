"""The embedded endpoint's pure protocol parts: parameters, errors, codings, bodies, SQL routing."""

from __future__ import annotations

import base64
import gzip
import io
import zlib

import lz4.frame
import pytest
import zstandard
from clickhouse_connect.driver.transform import extract_exception_with_tag
from urllib3 import encode_multipart_formdata

from safeloop.infra.exceptions import WarehouseError
from safeloop.infra.settings import Secret
from safeloop.infra.warehouse import exceptions, framing, sql
from safeloop.infra.warehouse.auth import Credentials, check_bind_auth, is_loopback
from safeloop.infra.warehouse.body import ChunkedBody, EmptyBody, LengthBody, QueryStream
from safeloop.infra.warehouse.compression import (
    choose_response_coding,
    request_decoder,
    response_encoder,
)
from safeloop.infra.warehouse.exceptions import ServerError
from safeloop.infra.warehouse.forms import is_form, parse_form
from safeloop.infra.warehouse.params import ExternalTable, parse_params
from safeloop.infra.warehouse.statement import InsertPlan, QueryPlan, read_statement

# --- parameters ------------------------------------------------------------------------------


def test_params_sort_transport_settings_and_query_parameters() -> None:
    params = parse_params(
        [
            ("query", "SELECT {a:UInt8}"),
            ("database", "safeloop"),
            ("session_id", "s1"),
            ("session_timeout", "120"),
            ("session_check", "1"),
            ("query_id", "q1"),
            ("wait_end_of_query", "1"),
            ("default_format", "JSON"),
            ("user", "u"),
            ("password", "hunter2"),
            ("max_threads", "2"),
            ("enable_http_compression", "1"),
            ("param_a", "7"),
            ("max_threads", "9"),  # the first occurrence wins, as in ClickHouse
        ]
    )
    assert params.query == "SELECT {a:UInt8}"
    assert params.database == "safeloop"
    assert (params.session_id, params.session_timeout, params.session_check) == ("s1", 120, True)
    assert params.query_id == "q1"
    assert params.wait_end_of_query
    assert params.default_format == "JSON"
    assert (params.user, params.password) == ("u", "hunter2")
    assert params.settings == {"max_threads": "2", "enable_http_compression": "1"}
    assert params.query_params == {"a": "7"}
    assert "hunter2" not in repr(params)


def test_external_descriptors_apply_only_to_uploaded_files() -> None:
    params = parse_params(
        [("ext_structure", "id UInt32"), ("date_time_input_format", "basic"), ("other_types", "x")],
        files=[("ext", b"1\n")],
    )
    assert params.external == (ExternalTable("ext", b"1\n", structure="id UInt32"),)
    # `date_time_input_format` ends like a descriptor but no file is named `date_time_input`.
    assert params.settings == {"date_time_input_format": "basic", "other_types": "x"}


def test_external_table_columns_from_types() -> None:
    assert ExternalTable("t", b"", types="UInt8, String").columns() == "_1 UInt8, _2 String"
    with pytest.raises(ServerError) as info:
        ExternalTable("t", b"").columns()
    assert info.value.code == exceptions.BAD_ARGUMENTS


@pytest.mark.parametrize("raw", ["-1", "abc", "3601"])
def test_invalid_session_timeout(raw: str) -> None:
    with pytest.raises(ServerError) as info:
        parse_params([("session_timeout", raw)])
    assert info.value.code == exceptions.INVALID_SESSION_TIMEOUT


# --- errors ----------------------------------------------------------------------------------


def test_engine_message_parsed_without_wrapper_text() -> None:
    error = exceptions.from_engine_message(
        "Streaming query failed: Code: 60. DB::Exception: Unknown table 'x'. (UNKNOWN_TABLE)"
    )
    assert error.code == 60
    assert error.text == "Code: 60. DB::Exception: Unknown table 'x'. (UNKNOWN_TABLE)"
    assert error.name == "UNKNOWN_TABLE"
    assert error.http_status == 404


def test_engine_message_without_code_is_unknown_exception() -> None:
    error = exceptions.from_engine_message("segfault-ish nonsense")
    assert error.code == exceptions.UNKNOWN_EXCEPTION
    assert error.text.startswith("Code: 1002. DB::Exception: segfault-ish nonsense")


@pytest.mark.parametrize(
    ("code", "status"),
    [
        (60, 404),
        (47, 404),
        (115, 404),
        (62, 400),
        (27, 400),
        (516, 403),
        (194, 401),
        (395, 500),
        (229, 413),
        (48, 501),
        (159, 408),
        (373, 500),
    ],
)
def test_http_status_follows_clickhouse(code: int, status: int) -> None:
    assert exceptions.http_status(code) == status


def test_error_body_has_one_version_trailer() -> None:
    error = exceptions.from_engine_message(
        "Code: 62. DB::Exception: Syntax error. (SYNTAX_ERROR) (version 1.2)"
    )
    assert exceptions.error_body(error, "26.9") == (
        b"Code: 62. DB::Exception: Syntax error. (SYNTAX_ERROR) (version 26.9)\n"
    )


def test_server_error_worded_like_clickhouse() -> None:
    error = exceptions.server_error(exceptions.SESSION_IS_LOCKED, "Session s is locked")
    assert error.text == "Code: 373. DB::Exception: Session s is locked. (SESSION_IS_LOCKED)"


def test_exception_block_is_what_clickhouse_connect_extracts() -> None:
    error = exceptions.server_error(exceptions.UNKNOWN_EXCEPTION, "boom")
    block = exceptions.exception_block(error, "tagABC123", "26.9")
    assert block.startswith(b"__exception__\r\ntagABC123\r\n")
    assert block.endswith(b" tagABC123\r\n__exception__\r\n")
    message = extract_exception_with_tag(b"\x01\x02 partial native block" + block, "tagABC123")
    assert message is not None
    assert "Code: 1002. DB::Exception: boom" in message


# --- compression -----------------------------------------------------------------------------


def _split(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


PAYLOAD = b"".join(b"row %d with some repetitive text\n" % i for i in range(20_000))
ENCODED = {
    # clickhouse-connect compresses every block as a frame of its own: several frames back to back.
    "lz4": lz4.frame.compress(PAYLOAD[:300_000]) + lz4.frame.compress(PAYLOAD[300_000:]),
    "zstd": zstandard.compress(PAYLOAD[:300_000]) + zstandard.compress(PAYLOAD[300_000:]),
    "gzip": gzip.compress(PAYLOAD[:1000]) + gzip.compress(PAYLOAD[1000:]),
    "deflate": zlib.compress(PAYLOAD),
    "identity": PAYLOAD,
    "": PAYLOAD,
}


@pytest.mark.parametrize("coding", sorted(ENCODED))
@pytest.mark.parametrize("piece", [997, 65536, 1 << 20])
def test_request_decoders_stream_any_split(coding: str, piece: int) -> None:
    decoder = request_decoder(coding)
    out = b"".join(decoder.decode(part) for part in _split(ENCODED[coding], piece))
    assert out + decoder.finish() == PAYLOAD


def test_unknown_request_coding_rejected() -> None:
    with pytest.raises(ServerError) as info:
        request_decoder("snappy")
    assert info.value.code == exceptions.UNKNOWN_COMPRESSION_METHOD


@pytest.mark.parametrize("coding", ["lz4", "zstd", "gzip", "deflate"])
def test_corrupt_request_body_is_cannot_decompress(coding: str) -> None:
    decoder = request_decoder(coding)
    with pytest.raises(ServerError) as info:
        decoder.decode(b"\x00" * 64 + b"definitely not compressed")
        decoder.finish()
    assert info.value.code == exceptions.CANNOT_DECOMPRESS


@pytest.mark.parametrize("coding", ["lz4", "gzip", "deflate"])
def test_truncated_body_detected(coding: str) -> None:
    decoder = request_decoder(coding)
    decoder.decode(ENCODED[coding][:1000])
    with pytest.raises(ServerError) as info:
        decoder.finish()
    assert info.value.code == exceptions.CANNOT_DECOMPRESS


@pytest.mark.parametrize(
    ("accept", "chosen"),
    [
        ("lz4,zstd,gzip,deflate", "zstd"),
        ("gzip, deflate", "gzip"),
        ("lz4", "lz4"),
        ("deflate;q=0.5", "deflate"),
        ("identity", None),
        ("", None),
        (None, None),
    ],
)
def test_response_coding_choice(accept: str | None, chosen: str | None) -> None:
    assert choose_response_coding(accept) == chosen


def _decode_response(coding: str, data: bytes) -> bytes:
    if coding == "lz4":
        return bytes(lz4.frame.decompress(data))
    if coding == "zstd":
        return zstandard.ZstdDecompressor().decompressobj().decompress(data)
    if coding == "gzip":
        return gzip.decompress(data)
    if coding == "deflate":
        return zlib.decompress(data)
    return data


@pytest.mark.parametrize("coding", ["lz4", "zstd", "gzip", "deflate", None])
def test_response_encoders_round_trip_as_one_stream(coding: str | None) -> None:
    encoder = response_encoder(coding)
    parts = [encoder.encode(part) for part in _split(PAYLOAD, 100_000)]
    # Every piece is decodable as soon as it is sent (streaming), and all form one stream.
    assert all(parts)
    data = b"".join(parts) + encoder.finish()
    assert _decode_response(coding or "", data) == PAYLOAD


def test_empty_response_still_valid() -> None:
    for coding in ("lz4", "zstd", "gzip", "deflate"):
        assert _decode_response(coding, response_encoder(coding).finish()) == b""


# --- request bodies --------------------------------------------------------------------------


def test_chunked_body_with_extensions_and_trailers() -> None:
    raw = b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: 1\r\n\r\nNEXT REQUEST"
    stream = io.BytesIO(raw)
    body = ChunkedBody(stream)
    assert b"".join(iter(body.read, b"")) == b"hello world"
    assert stream.read() == b"NEXT REQUEST"


def test_truncated_bodies_rejected() -> None:
    with pytest.raises(ServerError):
        b"".join(iter(ChunkedBody(io.BytesIO(b"10\r\nshort")).read, b""))
    with pytest.raises(ServerError):
        b"".join(iter(LengthBody(io.BytesIO(b"abc"), 10).read, b""))


def test_query_stream_prefix_then_decoded_body() -> None:
    body = LengthBody(io.BytesIO(ENCODED["zstd"]), len(ENCODED["zstd"]))
    stream = QueryStream(b"INSERT INTO t FORMAT TSV\n", body, request_decoder("zstd"))
    assert b"".join(stream.pieces()) == b"INSERT INTO t FORMAT TSV\n" + PAYLOAD


def test_query_stream_size_limit() -> None:
    stream = QueryStream(
        b"SELECT 1", LengthBody(io.BytesIO(b"x" * 100), 100), request_decoder(None)
    )
    with pytest.raises(ServerError) as info:
        stream.read_all(50)
    assert info.value.code == exceptions.QUERY_IS_TOO_LARGE


def _stream(text: bytes) -> QueryStream:
    return QueryStream(b"", LengthBody(io.BytesIO(text), len(text)), request_decoder(None))


def test_read_statement_leaves_insert_data_in_stream() -> None:
    native = b"\x0a\x02" + bytes(range(256))  # binary data starting with a newline byte
    stream = _stream(b"INSERT INTO t (a, b) SETTINGS x = 1 FORMAT Native\n" + native)
    plan = read_statement(stream)
    assert plan == InsertPlan("INSERT INTO t (a, b) SETTINGS x = 1", "Native")
    assert b"".join(stream.pieces()) == native


def test_read_statement_whole_query() -> None:
    plan = read_statement(_stream(b"  -- hi\n(SELECT 1) FORMAT JSON"))
    assert isinstance(plan, QueryPlan)
    assert plan.keyword == "SELECT"
    assert plan.has_result and plan.streamable and plan.read_only


def test_empty_query_is_syntax_error() -> None:
    with pytest.raises(ServerError) as info:
        read_statement(QueryStream(b"", EmptyBody(), request_decoder(None)))
    assert info.value.code == exceptions.SYNTAX_ERROR


# --- SQL routing -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "statement", "fmt", "data"),
    [
        (b"INSERT INTO t FORMAT TSV\n1\t2\n", "INSERT INTO t", "TSV", b"1\t2\n"),
        (b"insert into t format CSV 1,2", "insert into t", "CSV", b"1,2"),
        (b"INSERT INTO t FORMAT Native \r\n\n\x01", "INSERT INTO t", "Native", b"\n\x01"),
        (
            b"INSERT INTO t VALUES (1, 'a'), (2, 'b')",
            "INSERT INTO t",
            "Values",
            b"(1, 'a'), (2, 'b')",
        ),
        (
            b"INSERT INTO `my table` (a) /* FORMAT x */ -- FORMAT y\n FORMAT JSONEachRow\n{}",
            "INSERT INTO `my table` (a) /* FORMAT x */ -- FORMAT y",
            "JSONEachRow",
            b"{}",
        ),
        (
            b"WITH (SELECT 1) AS one, 'FORMAT' AS f INSERT INTO t FORMAT TabSeparated\n5\ta\n",
            "WITH (SELECT 1) AS one, 'FORMAT' AS f INSERT INTO t",
            "TabSeparated",
            b"5\ta\n",
        ),
        (
            b"INSERT INTO FUNCTION file('a FORMAT b', 'CSV') SELECT 1 FORMAT CSV\nx",
            "INSERT INTO FUNCTION file('a FORMAT b', 'CSV') SELECT 1",
            "CSV",
            b"x",
        ),
    ],
)
def test_split_insert(text: bytes, statement: str, fmt: str, data: bytes) -> None:
    split = sql.split_insert(text, complete=True)
    assert isinstance(split, sql.InsertSplit)
    assert (split.statement, split.format, text[split.data_offset :]) == (statement, fmt, data)


@pytest.mark.parametrize(
    ("text", "complete", "verdict"),
    [
        (b"SELECT 1", True, sql.Verdict.NOT_INSERT),
        (b"INSERT INTO t SELECT * FROM s", True, sql.Verdict.NOT_INSERT),
        (b"INSERT INTO t FROM INFILE 'x' FORMAT CSV", True, sql.Verdict.NOT_INSERT),
        (b"INSERT INTO t SELECT * FROM s", False, sql.Verdict.NEED_MORE),
        (b"INSERT INTO t FORMAT Nat", False, sql.Verdict.NEED_MORE),
        (b"INSERT INTO t FORMAT Native", False, sql.Verdict.NEED_MORE),
        (b"INSERT INTO t (a, 'unterminated", False, sql.Verdict.NEED_MORE),
        (b"INS", False, sql.Verdict.NEED_MORE),
        (b"WITH 1 AS x SELECT x FORMAT TabSeparated", True, sql.Verdict.NOT_INSERT),
        (b"WITH (SELECT 1 FORMAT TSV) AS x SELECT x, ", False, sql.Verdict.NOT_INSERT),
        (b"WITH 1 AS x INSERT INTO t SELECT x", True, sql.Verdict.NOT_INSERT),
        (b"WITH 1 AS x INSERT INTO t FORMAT TabSep", False, sql.Verdict.NEED_MORE),
    ],
)
def test_split_insert_verdicts(text: bytes, complete: bool, verdict: sql.Verdict) -> None:
    assert sql.split_insert(text, complete) is verdict


def test_values_insert_found_even_when_incomplete() -> None:
    split = sql.split_insert(b"INSERT INTO t VALUES (1", complete=False)
    assert isinstance(split, sql.InsertSplit)
    assert split.format == "Values"


@pytest.mark.parametrize(
    ("text", "fmt"),
    [
        (b"SELECT 1\n FORMAT Native", "Native"),
        (b"SELECT 1 FORMAT JSON SETTINGS max_threads = 1", "JSON"),
        (b"SELECT 1 FORMAT TSV;", "TSV"),
        (b"SELECT format FROM t", None),
        (b"SELECT format('{}', 'x') AS f", None),
        (b"SELECT * FROM (SELECT 1 FORMAT JSON)", None),
        (b"SELECT 'FORMAT CSV'", None),
        (b"SELECT 1", None),
    ],
)
def test_output_format(text: bytes, fmt: str | None) -> None:
    assert sql.output_format(text) == fmt


@pytest.mark.parametrize(
    ("text", "keyword"),
    [
        (b"select 1", "SELECT"),
        (b"/* c */ ((SELECT 1))", "SELECT"),
        (b"-- c\nCREATE TABLE t", "CREATE"),
        (b"# c\nSHOW TABLES", "SHOW"),
        (b";", ""),
        (b"", ""),
    ],
)
def test_first_keyword(text: bytes, keyword: str) -> None:
    assert sql.first_keyword(text) == keyword


def test_assigned_settings() -> None:
    assert sql.assigned_settings(b"SET max_threads = 2, `log_comment` = 'a=b'") == {
        "max_threads",
        "log_comment",
    }


# --- framing of streamed blocks ---------------------------------------------------------------


def test_text_header_kept_once() -> None:
    framer = framing.framer_for("TSVWithNamesAndTypes")
    assert framer is not None
    first = framer(b"n\nUInt8\n1\n2\n", True)
    later = framer(b"n\nUInt8\n3\n", False)
    assert first + later == b"n\nUInt8\n1\n2\n3\n"


def test_binary_header_kept_once() -> None:
    header = b"\x02\x01a\x02bb\x05UInt8\x06String"
    framer = framing.framer_for("RowBinaryWithNamesAndTypes")
    assert framer is not None
    assert framer(header + b"ROWS2", False) == b"ROWS2"
    assert framer(header + b"ROWS1", True) == header + b"ROWS1"


def test_framing_by_format() -> None:
    assert framing.framer_for("Native") is not None
    assert framing.framer_for("JSON") is None
    assert framing.framer_for("Parquet") is None
    assert framing.has_header("CSVWithNames")
    assert not framing.has_header("Native")


# --- forms -----------------------------------------------------------------------------------


def test_multipart_form_as_urllib3_sends_it() -> None:
    body, ctype = encode_multipart_formdata(
        {
            "query": "SELECT * FROM ext WHERE x = {x:String}",
            "param_x": 'a "quoted" value\r\nwith lines',
            "ext": ("ext.tsv", b"1\tone\r\n2\ttwo\n", "application/octet-stream"),
        }
    )
    assert is_form(ctype)
    form = parse_form(ctype, body)
    assert form.fields == [
        ("query", "SELECT * FROM ext WHERE x = {x:String}"),
        ("param_x", 'a "quoted" value\r\nwith lines'),
    ]
    assert form.files == [("ext", b"1\tone\r\n2\ttwo\n")]


def test_urlencoded_form() -> None:
    form = parse_form("application/x-www-form-urlencoded", b"query=SELECT+1&param_a=%20x")
    assert form.fields == [("query", "SELECT 1"), ("param_a", " x")]


def test_malformed_multipart_rejected() -> None:
    with pytest.raises(ServerError):
        parse_form("multipart/form-data; boundary=xyz", b"no boundary here")


# --- authentication --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.3.2.1", True),
        ("::1", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("::", False),
        ("10.1.2.3", False),
        ("example.com", False),
    ],
)
def test_is_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_non_local_bind_requires_credentials() -> None:
    check_bind_auth("127.0.0.1", "default", Secret(""))
    with pytest.raises(WarehouseError, match="CLICKHOUSE_PASSWORD"):
        check_bind_auth("0.0.0.0", "default", Secret(""))
    with pytest.raises(WarehouseError):
        check_bind_auth("0.0.0.0", "", Secret("pw"))
    check_bind_auth("0.0.0.0", "safeloop", Secret("pw"))


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def test_credentials_checked_from_every_source() -> None:
    creds = Credentials("safeloop", Secret("s3cret"))
    assert creds.check({"authorization": _basic("safeloop", "s3cret")}, None, None) is None
    assert (
        creds.check({"x-clickhouse-user": "safeloop", "x-clickhouse-key": "s3cret"}, None, None)
        is None
    )
    assert creds.check({}, "safeloop", "s3cret") is None
    for headers, user, password in [
        ({"authorization": _basic("safeloop", "wrong")}, None, None),
        ({"authorization": _basic("other", "s3cret")}, None, None),
        ({"x-clickhouse-user": "safeloop"}, None, None),
        ({}, None, None),
        ({"authorization": "Basic !!!"}, None, None),
    ]:
        denied = creds.check(headers, user, password)
        assert denied is not None
        assert denied.code == exceptions.AUTHENTICATION_FAILED
        assert denied.http_status == 403
        assert "s3cret" not in denied.text


def test_no_password_configured_means_open_on_loopback() -> None:
    assert Credentials().check({}, None, None) is None


@pytest.mark.parametrize(
    ("text", "keyword"),
    [
        (b"WITH 1 AS x SELECT x", "WITH"),
        (b"WITH 1 AS x INSERT INTO t SELECT x", "INSERT"),
        (b"WITH (SELECT 1) AS x INSERT INTO t SELECT x", "INSERT"),
        (b"(SELECT 1)", "SELECT"),
    ],
)
def test_a_with_clause_belongs_to_the_statement_after_it(text: bytes, keyword: str) -> None:
    assert sql.first_keyword(text) == keyword
