"""multipart/form-data bodies, read and edited in place (the `/v1/audio` routes forward them as they are).

Only what forwarding needs: the boundary of a content type, the value of a plain field, and that
value replaced with every other byte of the body (file parts with their names and types) kept.
No I/O, no mitmproxy.
"""

from __future__ import annotations

import re

_BOUNDARY = re.compile(r'boundary=(?:"([^"]+)"|([^;\s]+))', re.I)
_NAME = re.compile(rb'\bname="([^"]*)"', re.I)


def boundary_of(content_type: str) -> bytes | None:
    """The boundary of a `multipart/form-data` content type, else None."""
    if not content_type.lower().lstrip().startswith("multipart/form-data"):
        return None
    match = _BOUNDARY.search(content_type)
    if match is None:
        return None
    return (match.group(1) or match.group(2)).encode("latin-1", "replace")


def _field_span(body: bytes, boundary: bytes, name: str) -> tuple[int, int] | None:
    """Where the value of the plain (not file) field `name` lies in `body`."""
    delimiter = b"--" + boundary
    wanted = name.encode()
    start = body.find(delimiter)
    while start >= 0:
        head_start = start + len(delimiter)
        if body[head_start : head_start + 2] == b"--":  # the closing delimiter
            return None
        head_end = body.find(b"\r\n\r\n", head_start)
        if head_end < 0:
            return None
        following = body.find(b"\r\n" + delimiter, head_end + 4)
        if following < 0:
            return None
        head = body[head_start:head_end]
        disposition = next(
            (line for line in head.split(b"\r\n") if line.lower().startswith(b"content-disposition:")), b""
        )
        found = _NAME.search(disposition)
        if found and found.group(1) == wanted and b"filename" not in disposition.lower():
            return head_end + 4, following
        start = following + 2
    return None


def field(body: bytes, boundary: bytes, name: str) -> str | None:
    """The value of the plain field `name` (UTF-8), or None if the form has none."""
    span = _field_span(body, boundary, name)
    return None if span is None else body[span[0] : span[1]].decode("utf-8", "replace")


def replace_field(body: bytes, boundary: bytes, name: str, value: str) -> bytes:
    """The body with the plain field `name` set to `value` (unchanged if the form has no such field)."""
    span = _field_span(body, boundary, name)
    if span is None:
        return body
    return body[: span[0]] + value.encode() + body[span[1] :]
