"""The one reader of an upstream's error answer, for every family.

An upstream says what went wrong in many shapes: OpenAI's `{"error": {"message", "type", "param",
"code"}}`, `{"error": "..."}`, `{"message": ...}` or `{"detail": ...}` (FastAPI, vLLM), plain text,
or an HTML error page from a gateway. `read_upstream_error` reads any of them into one
`UpstreamError`; each family words it in its own shape (`translate.response.upstream_error` for
Ollama, `translate.anthropic.upstream_error`, `translate.responses.upstream_error`).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Final

from addon.wire.model import JSON

_MODEL_MISSING: Final = re.compile(
    r"model.*(not found|does not exist|not exist|unknown)|unknown model|no such model", re.I
)
_TITLE: Final = re.compile(r"<title>(.*?)</title>", re.I | re.S)
_TAG: Final = re.compile(r"<[^>]+>")


@dataclass(frozen=True, slots=True)
class UpstreamError:
    """What an upstream's error answer says.

    `status`: the upstream's, if it is an error status (400–599), else 502 (an error in a 200's
    body is a bad gateway). `message`: the upstream's words ("" when it said none). `kind`,
    `param`, `code`: OpenAI's fields, when the upstream gave them. `model_missing`: the upstream
    does not know the model (OpenAI's `model_not_found`, or words such as llama.cpp's).
    """

    status: int
    message: str
    kind: str | None = None
    param: str | None = None
    code: str | None = None
    model_missing: bool = False

    def key_refused(self) -> bool:
        """The upstream refused the proxy's key (not the client's: the client's is checked by the proxy)."""
        return self.status in (401, 403)


def read_upstream_error(status: int, body: bytes | str | JSON) -> UpstreamError:
    """Any upstream error answer (its body as bytes, text or parsed JSON) → an `UpstreamError`."""
    status = status if 400 <= status <= 599 else 502
    if isinstance(body, bytes | bytearray):
        body = bytes(body).decode("utf-8", "replace")
    if isinstance(body, str):
        text = body.strip()
        try:
            body = json.loads(text) if text else None
        except ValueError:
            if text.startswith("<"):  # an HTML error page: its title or its words
                title = _TITLE.search(text)
                text = title.group(1) if title else _TAG.sub(" ", text)
            return UpstreamError(status, " ".join(text.split())[:500])
    if not isinstance(body, dict):
        return UpstreamError(status, "" if body is None else json.dumps(body)[:500])
    error = body.get("error", body.get("message", body.get("detail")))
    fields: dict[str, str | None] = {"kind": None, "param": None, "code": None}
    if isinstance(error, dict):
        for name, key in (("kind", "type"), ("param", "param"), ("code", "code")):
            value = error.get(key)
            if isinstance(value, str | int) and not isinstance(value, bool) and value != "":
                fields[name] = str(value)
        error = error.get("message") or error.get("detail") or error.get("msg") or json.dumps(error)
    if error is None:
        message = json.dumps(body)[:500]
    else:
        message = (error if isinstance(error, str) else json.dumps(error))[:1000]
    missing = status in (400, 404) and (fields["code"] == "model_not_found" or bool(_MODEL_MISSING.search(message)))
    return UpstreamError(status, message, fields["kind"], fields["param"], fields["code"], missing)


def model_not_found(error: UpstreamError, model: str) -> str:
    """The message for a model the upstream does not know, naming the client's model (as Ollama does),
    with the upstream's words unless they already say so (llama.cpp's)."""
    said = f"model '{model}' not found"
    if said in error.message or not error.message:
        return error.message or said
    return f"{said}: {error.message}"
