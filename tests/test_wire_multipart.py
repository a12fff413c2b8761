"""multipart/form-data: the boundary, a plain field's value, and that value replaced with every other byte kept."""

from __future__ import annotations

import httpx

from addon.wire.multipart import boundary_of, field, replace_field


def form(**data: str) -> tuple[bytes, bytes]:
    request = httpx.Request(
        "POST", "http://x/", files={"file": ("a.wav", b'RIFF--x\r\n\r\nname="model"', "audio/wav")}, data=data
    )
    body = request.read()
    boundary = boundary_of(request.headers["content-type"])
    assert boundary is not None
    return body, boundary


def test_boundaries() -> None:
    assert boundary_of('multipart/form-data; boundary="a b"') == b"a b"
    assert boundary_of("Multipart/Form-Data; charset=utf-8; boundary=xyz") == b"xyz"
    assert boundary_of("application/json") is None and boundary_of("multipart/form-data") is None


def test_fields_are_read_and_replaced_in_place() -> None:
    body, boundary = form(model="whisper", language="en")
    assert field(body, boundary, "model") == "whisper" and field(body, boundary, "language") == "en"
    assert field(body, boundary, "file") is None, "a file part is no plain field"
    assert field(body, boundary, "prompt") is None
    changed = replace_field(body, boundary, "model", "whisper-1")
    assert changed == body.replace(b"\r\n\r\nwhisper\r\n", b"\r\n\r\nwhisper-1\r\n")
    assert field(changed, boundary, "model") == "whisper-1" and replace_field(body, boundary, "prompt", "x") == body


def test_a_truncated_form_has_no_fields() -> None:
    body, boundary = form(model="whisper")
    assert field(body[: body.index(b"whisper") + 3], boundary, "model") is None
    assert field(b"", boundary, "model") is None
