"""Errors in OpenAI's shape for the Responses API, and upstream errors read into it."""

from __future__ import annotations

from addon.translate.errors import model_not_found, read_upstream_error
from addon.wire.model import JSON
from addon.wire.openai import ErrorBody, error_type

STATELESS = (
    "this server's Responses API is stateless (as Ollama's): it stores no responses or conversations; "
    "send the whole conversation in `input`"
)


class ResponsesError(Exception):
    """A request or answer that cannot be translated; `body()` is OpenAI's error shape."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code

    def body(self) -> ErrorBody:
        return error_body(self.status, self.message, self.param, self.code)


def error_body(status: int, message: str, param: str | None = None, code: str | None = None) -> ErrorBody:
    """`{"error": {"message", "type", "param", "code"}}` as OpenAI answers errors."""
    return {"error": {"message": message, "type": error_type(status), "param": param, "code": code}}


def upstream_error(
    status: int, body: bytes | str | JSON, reason: str = "", client_model: str | None = None
) -> tuple[int, ErrorBody]:
    """An upstream's error answer (`translate.errors` reads it) → (the same status, an OpenAI error body).

    OpenAI-shaped errors keep their message, type, param and code; anything else (text, HTML,
    `{"detail": …}`, `{"message": …}`) becomes a message. A 2xx status here means the upstream
    answered 200 with an error in the body: that is a bad gateway (502). With `client_model`, an
    unknown model (OpenAI's 404 `model_not_found`, llama.cpp's 400 "model … not found") is a 404
    `model_not_found` naming the client's model, as Ollama answers it. The upstream's 401/403 say
    that the upstream refused the proxy's key, not the client's.
    """
    error = read_upstream_error(status, body)
    if client_model is not None and error.model_missing:
        return 404, error_body(404, model_not_found(error, client_model), None, "model_not_found")
    message = error.message or f"the upstream answered {error.status} {reason}".rstrip()
    if error.key_refused():
        message = f"the upstream rejected the API key ({error.status}): {message}"
    out = error_body(error.status, message, error.param, error.code)
    if error.kind is not None:
        out["error"]["type"] = error.kind
    return error.status, out


def bad_request(message: str, param: str | None = None, code: str | None = None) -> ResponsesError:
    return ResponsesError(400, message, param, code)


def bad_gateway(message: str) -> ResponsesError:
    return ResponsesError(502, message, None, "bad_upstream_answer")
