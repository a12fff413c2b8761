"""Anthropic's error shape and types, upstream errors read as Anthropic errors, and Anthropic-shaped ids."""

from __future__ import annotations

import json
import re
import secrets
from typing import Any, Final

_ERROR_TYPES: Final[dict[int, str]] = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    502: "api_error",
    503: "overloaded_error",
    504: "timeout_error",
    529: "overloaded_error",
}


def error_type(status: int) -> str:
    """Anthropic's error type for an HTTP status: the table above, else by class (4xx, 5xx)."""
    if status in _ERROR_TYPES:
        return _ERROR_TYPES[status]
    return "invalid_request_error" if 400 <= status < 500 else "api_error"


def error_body(status: int, message: str, kind: str | None = None) -> dict[str, Any]:
    """`{"type": "error", "error": {"type": …, "message": …}, "request_id": "req_…"}`."""
    return {
        "type": "error",
        "error": {"type": kind or error_type(status), "message": message},
        "request_id": new_id("req"),
    }


class AnthropicError(Exception):
    """A request or an upstream answer that cannot be served: status, Anthropic error type and message."""

    def __init__(self, status: int, message: str, kind: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.kind = kind or error_type(status)

    def body(self) -> dict[str, Any]:
        return error_body(self.status, self.message, self.kind)


def invalid(message: str) -> AnthropicError:
    return AnthropicError(400, message)


_MODEL_MISSING: Final = re.compile(
    r"model.*(not found|does not exist|not exist|unknown)|unknown model|no such model", re.I
)


def upstream_error(status: int, body: Any, client_model: str | None = None) -> tuple[int, dict[str, Any]]:
    """An upstream's error answer (OpenAI's `{"error": {...}}`, or any text) → (status, Anthropic error body).

    The status is kept (an unknown model, 404 or a 400 saying so, becomes 404 `not_found_error`);
    a status outside 400–599 (an error body with 200) becomes 502. The upstream's 401/403 say that
    the upstream refused the proxy's key, not the client's.
    """
    message, code = error_text(body)
    if status in (400, 404) and (code == "model_not_found" or _MODEL_MISSING.search(message)):
        name = f"'{client_model}' " if client_model else ""
        said = bool(client_model) and f"model '{client_model}' not found" in message  # llama.cpp's words already
        return 404, error_body(404, message if said else f"model {name}not found" + (f": {message}" if message else ""))
    if not 400 <= status < 600:
        status = 502
    if not message:
        message = f"the upstream answered {status}"
    if status in (401, 403):
        message = f"the upstream rejected the API key ({status}): {message}"
    return status, error_body(status, message)


def error_text(body: Any) -> tuple[str, str]:
    """(message, code) out of an error body: OpenAI's shape, `{"message"|"detail": …}`, or text."""
    if isinstance(body, (bytes, bytearray)):
        body = bytes(body).decode("utf-8", "replace")
    if isinstance(body, str):
        text = body.strip()
        try:
            body = json.loads(text) if text else None
        except ValueError:
            if text.startswith("<"):  # an HTML error page: its title or its words
                title = re.search(r"<title>(.*?)</title>", text, re.I | re.S)
                text = title.group(1) if title else re.sub(r"<[^>]+>", " ", text)
            return " ".join(text.split())[:500], ""
    if not isinstance(body, dict):
        return ("" if body is None else json.dumps(body)[:500]), ""
    error = body.get("error", body.get("message", body.get("detail")))
    code = ""
    if isinstance(error, dict):
        code = str(error.get("code") or error.get("type") or "")
        error = error.get("message") or error.get("msg") or json.dumps(error)
    if error is None:
        return json.dumps(body)[:500], code
    return (error if isinstance(error, str) else json.dumps(error))[:1000], code


_ID_ALPHABET: Final = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def new_id(prefix: str) -> str:
    """An id shaped like Anthropic's: `msg_01` + 22 base62 characters."""
    return f"{prefix}_01" + "".join(secrets.choice(_ID_ALPHABET) for _ in range(22))
