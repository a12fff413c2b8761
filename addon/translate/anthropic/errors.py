"""Anthropic's error shape and types, upstream errors read as Anthropic errors, and Anthropic-shaped ids."""

from __future__ import annotations

import secrets
from typing import Final

from addon.translate.errors import model_not_found, read_upstream_error
from addon.wire.anthropic import ErrorBody
from addon.wire.model import JSON

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


def error_body(status: int, message: str, kind: str | None = None) -> ErrorBody:
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

    def body(self) -> ErrorBody:
        return error_body(self.status, self.message, self.kind)


def invalid(message: str) -> AnthropicError:
    return AnthropicError(400, message)


def upstream_error(status: int, body: bytes | str | JSON, client_model: str | None = None) -> tuple[int, ErrorBody]:
    """An upstream's error answer (`translate.errors` reads it) → (status, Anthropic error body).

    The status is kept (an unknown model, 404 or a 400 saying so, becomes 404 `not_found_error`);
    a status outside 400–599 (an error body with 200) becomes 502. The upstream's 401/403 say that
    the upstream refused the proxy's key, not the client's.
    """
    error = read_upstream_error(status, body)
    if error.model_missing:
        if client_model:
            return 404, error_body(404, model_not_found(error, client_model))
        return 404, error_body(404, "model not found" + (f": {error.message}" if error.message else ""))
    message = error.message or f"the upstream answered {error.status}"
    if error.key_refused():
        message = f"the upstream rejected the API key ({error.status}): {message}"
    return error.status, error_body(error.status, message)


def error_text(body: JSON) -> str:
    """The message of an upstream error object (an `error` member of an answer or a stream event)."""
    return read_upstream_error(502, body).message


_ID_ALPHABET: Final = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def new_id(prefix: str) -> str:
    """An id shaped like Anthropic's: `msg_01` + 22 base62 characters."""
    return f"{prefix}_01" + "".join(secrets.choice(_ID_ALPHABET) for _ in range(22))
