"""HTTP content codings: streaming decoders for request bodies, encoders for responses."""

from __future__ import annotations

import importlib
import zlib
from types import ModuleType
from typing import Any, Protocol

import lz4.frame
import zstandard

from safeloop.infra.warehouse import exceptions


def _optional_brotli() -> ModuleType | None:
    try:
        return importlib.import_module("brotli")
    except ImportError:
        return None


_brotli = _optional_brotli()

# Preference when a client accepts several codings, as ClickHouse's HTTP handler ranks them.
_RESPONSE_PRIORITY = ("zstd", "br", "lz4", "gzip", "deflate")


class Decoder(Protocol):
    def decode(self, data: bytes) -> bytes: ...

    def finish(self) -> bytes: ...


class Encoder(Protocol):
    def encode(self, data: bytes) -> bytes: ...

    def finish(self) -> bytes: ...


class _Identity:
    def decode(self, data: bytes) -> bytes:
        return data

    def encode(self, data: bytes) -> bytes:
        return data

    def finish(self) -> bytes:
        return b""


class _Lz4Decoder:
    """LZ4 frames, possibly several back to back (clickhouse-connect frames each block)."""

    def __init__(self) -> None:
        self._frame = lz4.frame.LZ4FrameDecompressor()
        self._open = False

    def decode(self, data: bytes) -> bytes:
        out: list[bytes] = []
        while data:
            self._open = True
            out.append(self._frame.decompress(data))
            if not self._frame.eof:
                break
            data = self._frame.unused_data or b""
            self._frame = lz4.frame.LZ4FrameDecompressor()
            self._open = False
        return b"".join(out)

    def finish(self) -> bytes:
        if self._open:
            raise _truncated("lz4")
        return b""


class _ZstdDecoder:
    def __init__(self) -> None:
        self._obj: Any = zstandard.ZstdDecompressor().decompressobj(read_across_frames=True)

    def decode(self, data: bytes) -> bytes:
        result: bytes = self._obj.decompress(data)
        return result

    def finish(self) -> bytes:
        return b""


class _ZlibDecoder:
    """gzip (possibly multi-member) or zlib-wrapped deflate."""

    def __init__(self, wbits: int) -> None:
        self._wbits = wbits
        self._obj = zlib.decompressobj(wbits)
        self._open = False

    def decode(self, data: bytes) -> bytes:
        out: list[bytes] = []
        while data:
            self._open = True
            out.append(self._obj.decompress(data))
            if not self._obj.eof:
                break
            data = self._obj.unused_data
            self._obj = zlib.decompressobj(self._wbits)
            self._open = False
        return b"".join(out)

    def finish(self) -> bytes:
        if self._open:
            raise _truncated("zlib")
        return b""


class _BrotliDecoder:
    def __init__(self, module: ModuleType) -> None:
        self._obj = module.Decompressor()

    def decode(self, data: bytes) -> bytes:
        result: bytes = self._obj.process(data)
        return result

    def finish(self) -> bytes:
        return b""


class _CheckedDecoder:
    """Turns a codec library's failure into ClickHouse's CANNOT_DECOMPRESS."""

    def __init__(self, inner: Decoder, name: str) -> None:
        self._inner = inner
        self._name = name

    def decode(self, data: bytes) -> bytes:
        try:
            return self._inner.decode(data)
        except exceptions.ServerError:
            raise
        except Exception as exc:
            raise _corrupt(self._name, exc) from exc

    def finish(self) -> bytes:
        try:
            return self._inner.finish()
        except exceptions.ServerError:
            raise
        except Exception as exc:
            raise _corrupt(self._name, exc) from exc


def request_decoder(content_encoding: str | None) -> Decoder:
    """A streaming decoder for a request's Content-Encoding; unknown codings are rejected."""
    name = (content_encoding or "").strip().lower()
    inner: Decoder
    if name in {"", "identity", "none"}:
        return _Identity()
    if name == "lz4":
        inner = _Lz4Decoder()
    elif name == "zstd":
        inner = _ZstdDecoder()
    elif name in {"gzip", "x-gzip"}:
        inner = _ZlibDecoder(16 + zlib.MAX_WBITS)
    elif name == "deflate":
        inner = _ZlibDecoder(zlib.MAX_WBITS)
    elif name == "br" and _brotli is not None:
        inner = _BrotliDecoder(_brotli)
    else:
        raise exceptions.server_error(
            exceptions.UNKNOWN_COMPRESSION_METHOD,
            f"Unknown compression method '{content_encoding}'",
        )
    return _CheckedDecoder(inner, name)


def choose_response_coding(accept_encoding: str | None) -> str | None:
    """The coding to answer with, from the client's Accept-Encoding; None for none."""
    if not accept_encoding:
        return None
    offered = {part.split(";")[0].strip().lower() for part in accept_encoding.split(",")}
    for name in _RESPONSE_PRIORITY:
        if name in offered and (name != "br" or _brotli is not None):
            return name
    return None


class _ZstdEncoder:
    def __init__(self, level: int) -> None:
        self._obj = zstandard.ZstdCompressor(level=level).compressobj()

    def encode(self, data: bytes) -> bytes:
        # Flushing a block per chunk lets the client decode while the query still runs.
        return self._obj.compress(data) + self._obj.flush(zstandard.COMPRESSOBJ_FLUSH_BLOCK)

    def finish(self) -> bytes:
        result: bytes = self._obj.flush(zstandard.COMPRESSOBJ_FLUSH_FINISH)
        return result


class _Lz4Encoder:
    def __init__(self) -> None:
        self._obj = lz4.frame.LZ4FrameCompressor(auto_flush=True)
        self._started = False

    def encode(self, data: bytes) -> bytes:
        head = b""
        if not self._started:
            head = self._obj.begin()
            self._started = True
        result: bytes = head + self._obj.compress(data)
        return result

    def finish(self) -> bytes:
        head = b"" if self._started else self._obj.begin()
        result: bytes = head + self._obj.flush()
        return result


class _ZlibEncoder:
    def __init__(self, level: int, wbits: int) -> None:
        self._obj = zlib.compressobj(level, zlib.DEFLATED, wbits)

    def encode(self, data: bytes) -> bytes:
        return self._obj.compress(data) + self._obj.flush(zlib.Z_SYNC_FLUSH)

    def finish(self) -> bytes:
        return self._obj.flush()


class _BrotliEncoder:
    def __init__(self, module: ModuleType) -> None:
        self._obj = module.Compressor()

    def encode(self, data: bytes) -> bytes:
        result: bytes = self._obj.process(data) + self._obj.flush()
        return result

    def finish(self) -> bytes:
        result: bytes = self._obj.finish()
        return result


def response_encoder(coding: str | None, level: int = 3) -> Encoder:
    """A streaming encoder for a response coding chosen by `choose_response_coding`."""
    if coding == "zstd":
        return _ZstdEncoder(level)
    if coding == "lz4":
        return _Lz4Encoder()
    if coding == "gzip":
        return _ZlibEncoder(level, 16 + zlib.MAX_WBITS)
    if coding == "deflate":
        return _ZlibEncoder(level, zlib.MAX_WBITS)
    if coding == "br" and _brotli is not None:
        return _BrotliEncoder(_brotli)
    return _Identity()


def _corrupt(name: str, exc: Exception) -> exceptions.ServerError:
    return exceptions.server_error(
        exceptions.CANNOT_DECOMPRESS, f"Cannot decompress the request body ({name}): {exc}"
    )


def _truncated(name: str) -> exceptions.ServerError:
    return exceptions.server_error(
        exceptions.CANNOT_DECOMPRESS,
        f"Cannot decompress the request body ({name}): truncated input",
    )
