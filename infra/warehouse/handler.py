"""The HTTP side of the endpoint: one handler per connection, speaking ClickHouse's HTTP dialect."""

from __future__ import annotations

import json
import logging
import re
import secrets
import string
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from typing import Protocol
from urllib.parse import parse_qsl, urlsplit

from safeloop.infra.warehouse import exceptions, forms
from safeloop.infra.warehouse.auth import Credentials
from safeloop.infra.warehouse.body import (
    ChunkedBody,
    EmptyBody,
    LengthBody,
    QueryStream,
    RawBody,
    drain,
)
from safeloop.infra.warehouse.compression import (
    choose_response_coding,
    request_decoder,
    response_encoder,
)
from safeloop.infra.warehouse.engine import EngineInfo
from safeloop.infra.warehouse.exceptions import ServerError
from safeloop.infra.warehouse.executor import Executor, Request
from safeloop.infra.warehouse.params import RequestParams, parse_params
from safeloop.infra.warehouse.reply import Reply, content_type

log = logging.getLogger(__name__)

_OK = b"Ok.\n"
_PASSWORD = re.compile(r"((?:password|key)=)[^&\s'\"]*", re.IGNORECASE)
_TAG_ALPHABET = string.ascii_letters + string.digits
_MAX_FORM_SIZE = 256 * 1024 * 1024
_NOT_FOUND = (
    "There is no handle {path}\n\nUse / or /ping for health checks.\n"
    "Send queries with the POST method or GET /?query=...\n"
)


@dataclass(frozen=True)
class Front:
    """What every handler needs: the executor, engine facts and who may connect."""

    executor: Executor
    info: EngineInfo
    credentials: Credentials
    display_name: str


class _Tracker(Protocol):
    """The server keeps count of requests in flight, so that it can stop gracefully."""

    front: Front

    def request_started(self) -> None: ...

    def request_finished(self) -> None: ...


class Handler(BaseHTTPRequestHandler):
    """Serves /ping and queries on / for one client connection (HTTP/1.1 keep-alive)."""

    protocol_version = "HTTP/1.1"
    server_version = "safeloop-warehouse"
    timeout = 300  # idle keep-alive connections are dropped after this many seconds
    # Small writes (headers, last chunk) must not wait for the client's delayed ACK.
    disable_nagle_algorithm = True
    server: _Tracker  # type: ignore[assignment]
    _chunked = True

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def do_HEAD(self) -> None:
        self._send_simple(200, b"")

    def log_message(self, format: str, *args: object) -> None:
        # The request line can carry a password in its URL: it never reaches the log.
        if log.isEnabledFor(logging.DEBUG):
            log.debug("%s %s", self.address_string(), _PASSWORD.sub(r"\1***", format % args))

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        log.debug("%s %s %s", self.command, urlsplit(self.path).path, code)

    def _serve(self, method: str) -> None:
        url = urlsplit(self.path)
        if url.path in {"/ping", "/replicas_status"} or (
            url.path == "/" and method == "GET" and not url.query
        ):
            self._send_simple(200, _OK)
            return
        if url.path != "/":
            self._send_simple(404, _NOT_FOUND.format(path=url.path).encode())
            return
        self.server.request_started()
        try:
            self._query(method, url.query)
        finally:
            self.server.request_finished()

    def _query(self, method: str, query_string: str) -> None:
        front = self.server.front
        pairs = parse_qsl(query_string, keep_blank_values=True)
        query_id = dict(pairs).get("query_id") or str(uuid.uuid4())
        raw: RawBody = EmptyBody()
        params = RequestParams()
        try:
            raw = self._raw_body()
            headers = {key.lower(): value for key, value in self.headers.items()}
            url = dict(pairs)
            denied = front.credentials.check(headers, url.get("user"), url.get("password"))
            if denied is not None:
                # Not worth reading an unauthenticated body: answer, then hang up.
                self._fail(None, denied, query_id)
                return
            params, stream = self._parse(raw, pairs)
            reply = front.executor.execute(Request(params, stream, query_id, method))
        except ServerError as error:
            self._fail(raw, error, query_id)
            return
        except OSError as exc:
            log.info("query %s: the client connection failed (%s)", query_id, exc)
            self.close_connection = True
            return
        except Exception as exc:
            log.exception("query %s failed inside the endpoint", query_id)
            self._fail(
                raw, exceptions.server_error(exceptions.UNKNOWN_EXCEPTION, repr(exc)), query_id
            )
            return
        try:
            self._send_reply(reply, params)
        finally:
            reply.close()

    def _raw_body(self) -> RawBody:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return ChunkedBody(self.rfile)
        declared = self.headers.get("Content-Length") or "0"
        if not declared.strip().isdigit():
            raise exceptions.server_error(
                exceptions.BAD_ARGUMENTS, f"Invalid Content-Length {declared!r}"
            )
        length = int(declared)
        return LengthBody(self.rfile, length) if length > 0 else EmptyBody()

    def _parse(
        self, raw: RawBody, pairs: list[tuple[str, str]]
    ) -> tuple[RequestParams, QueryStream]:
        decoder = request_decoder(self.headers.get("Content-Encoding"))
        ctype = self.headers.get("Content-Type", "")
        files: list[tuple[str, bytes]] = []
        if forms.is_form(ctype):
            form = forms.parse_form(ctype, QueryStream(b"", raw, decoder).read_all(_MAX_FORM_SIZE))
            pairs = pairs + form.fields
            files = form.files
            raw = EmptyBody()
        params = parse_params(pairs, files)
        if params.native_compression:
            raise exceptions.server_error(
                exceptions.NOT_IMPLEMENTED,
                "ClickHouse's own block compression (compress/decompress=1) is not supported "
                "by the embedded endpoint; use HTTP Content-Encoding",
            )
        prefix = (params.query + "\n").encode() if params.query else b""
        return params, QueryStream(prefix, raw, decoder)

    def _send_reply(self, reply: Reply, params: RequestParams) -> None:
        info = self.server.front.info
        coding = None
        if _flag(params.setting("enable_http_compression"), info.http_compression):
            coding = choose_response_coding(self.headers.get("Accept-Encoding"))
        level = int(params.setting("http_zlib_compression_level") or info.zlib_level)
        encoder = response_encoder(coding, level)
        tag = "".join(secrets.choice(_TAG_ALPHABET) for _ in range(16))
        self.send_response(200)
        self._common_headers(reply.query_id)
        self.send_header("X-ClickHouse-Timezone", reply.timezone)
        if reply.format is not None:
            self.send_header("X-ClickHouse-Format", reply.format)
        self.send_header("Content-Type", content_type(reply.format))
        self.send_header("X-ClickHouse-Exception-Tag", tag)
        if coding is not None:
            self.send_header("Content-Encoding", coding)
        self.send_header("X-ClickHouse-Summary", _summary_json(reply.summary.items()))
        self._chunked = self.request_version != "HTTP/1.0"
        if self._chunked:
            self.send_header("Transfer-Encoding", "chunked")
        else:
            self.close_connection = True
        self.end_headers()
        try:
            try:
                for piece in reply.body:
                    self._chunk(encoder.encode(piece))
            except ServerError as error:
                # Too late for an HTTP error: ClickHouse's tagged block tells the client.
                log.info(
                    "query %s failed after its response started: %s", reply.query_id, error.text
                )
                self._chunk(encoder.encode(exceptions.exception_block(error, tag, info.version)))
            except OSError:
                raise
            except Exception as exc:
                log.exception("query %s failed while streaming", reply.query_id)
                failure = exceptions.server_error(exceptions.UNKNOWN_EXCEPTION, repr(exc))
                self._chunk(encoder.encode(exceptions.exception_block(failure, tag, info.version)))
            tail = encoder.finish()
            # Release the connection or session before the client can see the end of the
            # response: a follow-up query on the same session_id must find it free.
            reply.close()
            self._chunk(tail)
            if self._chunked:
                self.wfile.write(b"0\r\n\r\n")
        except OSError as exc:
            log.info("client went away during query %s (%s); cancelled", reply.query_id, exc)
            self.close_connection = True

    def _fail(self, raw: RawBody | None, error: ServerError, query_id: str) -> None:
        """Answer with ClickHouse's error response, after reading what the client still sends.

        With `raw` None the body is left unread and the connection closed after the answer.
        """
        log.info("query %s failed: %s", query_id, error.text)
        if raw is None:
            self.close_connection = True
        else:
            try:
                drain(raw)
            except (ServerError, OSError):
                self.close_connection = True
        body = exceptions.error_body(error, self.server.front.info.version)
        try:
            self.send_response(error.http_status)
            self._common_headers(query_id)
            self.send_header("X-ClickHouse-Exception-Code", str(error.code))
            self.send_header("Content-Type", "text/plain; charset=UTF-8")
            self.send_header("Content-Length", str(len(body)))
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(body)
        except OSError:
            self.close_connection = True

    def _common_headers(self, query_id: str) -> None:
        self.send_header("X-ClickHouse-Server-Display-Name", self.server.front.display_name)
        self.send_header("X-ClickHouse-Query-Id", query_id)
        self.send_header("Keep-Alive", f"timeout={self.timeout}")

    def _send_simple(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "text/html; charset=UTF-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _chunk(self, data: bytes) -> None:
        if data and not self._chunked:
            self.wfile.write(data)
        elif data:
            self.wfile.write(b"%x\r\n%b\r\n" % (len(data), data))


def _flag(raw: str | None, default: bool = False) -> bool:
    if raw is None or not raw.strip():
        return default
    return raw.strip().lower() in {"1", "true", "yes", "on"}


def _summary_json(items: Iterable[tuple[str, str]]) -> str:
    return json.dumps(dict(items), separators=(",", ":"))
