"""Form bodies: multipart/form-data (query, param_*, external data) and url-encoded fields."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import parse_qsl

from safeloop.infra.warehouse import exceptions

_BOUNDARY_RE = re.compile(r'boundary="?([^";]+)"?', re.IGNORECASE)
_DISPOSITION_RE = re.compile(rb"^content-disposition:(.*)$", re.IGNORECASE | re.MULTILINE)
_PARAM_RE = re.compile(rb'\b(name|filename)="((?:[^"\\]|\\.)*)"', re.IGNORECASE)


@dataclass
class Form:
    """Plain fields (name, text) in order, and file parts (name, bytes)."""

    fields: list[tuple[str, str]] = field(default_factory=list)
    files: list[tuple[str, bytes]] = field(default_factory=list)


def is_form(content_type: str | None) -> bool:
    kind = (content_type or "").split(";")[0].strip().lower()
    return kind in {"multipart/form-data", "application/x-www-form-urlencoded"}


def parse_form(content_type: str, body: bytes) -> Form:
    """Parse a form body of the given Content-Type."""
    if content_type.lower().startswith("application/x-www-form-urlencoded"):
        text = body.decode("utf-8", "replace")
        return Form(fields=parse_qsl(text, keep_blank_values=True))
    match = _BOUNDARY_RE.search(content_type)
    if match is None:
        raise _malformed("no boundary in the multipart Content-Type")
    return _parse_multipart(match.group(1).encode(), body)


def _parse_multipart(boundary: bytes, body: bytes) -> Form:
    form = Form()
    marker = b"--" + boundary
    pos = body.find(marker)
    if pos < 0:
        raise _malformed("the multipart body has no boundary line")
    pos += len(marker)
    while not body.startswith(b"--", pos):
        header_start = body.find(b"\r\n", pos) + 2
        header_end = body.find(b"\r\n\r\n", header_start)
        if header_start < 2 or header_end < 0:
            raise _malformed("a multipart part has no header block")
        content_start = header_end + 4
        content_end = body.find(b"\r\n" + marker, content_start)
        if content_end < 0:
            raise _malformed("a multipart part is not terminated")
        _add_part(form, body[header_start:header_end], body[content_start:content_end])
        pos = content_end + 2 + len(marker)
    return form


def _add_part(form: Form, headers: bytes, content: bytes) -> None:
    disposition = _DISPOSITION_RE.search(headers)
    if disposition is None:
        raise _malformed("a multipart part has no Content-Disposition")
    params = {
        key.lower().decode(): value.decode("utf-8", "replace")
        for key, value in _PARAM_RE.findall(disposition.group(1))
    }
    name = params.get("name")
    if name is None:
        raise _malformed("a multipart part has no name")
    if "filename" in params:
        form.files.append((name, content))
    else:
        form.fields.append((name, content.decode("utf-8", "replace")))


def _malformed(reason: str) -> exceptions.ServerError:
    return exceptions.server_error(exceptions.BAD_ARGUMENTS, f"Malformed form body: {reason}")
