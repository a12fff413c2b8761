"""Errors in OpenAI's shape for the Responses API, and upstream errors read into it."""

from __future__ import annotations

import json
import re
from typing import Any

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

    def body(self) -> dict[str, Any]:
        return error_body(self.status, self.message, self.param, self.code)


_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    409: "conflict_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
}


def error_type(status: int) -> str:
    """OpenAI's `error.type` for a status (Ollama: 400 invalid_request_error, 404 not_found_error, else api_error)."""
    return _ERROR_TYPES.get(status, "invalid_request_error" if 400 <= status < 500 else "api_error")


def error_body(status: int, message: str, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    """`{"error": {"message", "type", "param", "code"}}` as OpenAI answers errors."""
    return {"error": {"message": message, "type": error_type(status), "param": param, "code": code}}


_MODEL_MISSING = re.compile(r"model.*(not found|does not exist|not exist|unknown)|unknown model|no such model", re.I)


def upstream_error(
    status: int, body: bytes | str | dict[str, Any] | None, reason: str = "", client_model: str | None = None
) -> tuple[int, dict[str, Any]]:
    """An upstream's error answer → (the same status, an OpenAI error body).

    OpenAI-shaped errors keep their message, type, param and code; anything else (text, HTML,
    `{"detail": …}`, `{"message": …}`) becomes a message. A 2xx status here means the upstream
    answered 200 with an error in the body: that is a bad gateway (502). With `client_model`, an
    unknown model (OpenAI's 404 `model_not_found`, llama.cpp's 400 "model … not found") is a 404
    `model_not_found` naming the client's model, as Ollama answers it.
    """
    status, out = _upstream_error(status, body, reason)
    error = out["error"]
    if (
        client_model is not None
        and status in (400, 404)
        and (error.get("code") == "model_not_found" or _MODEL_MISSING.search(error["message"]))
    ):
        said = f"model '{client_model}' not found" in error["message"]  # llama.cpp's words already
        message = error["message"] if said else f"model '{client_model}' not found: {error['message']}"
        return 404, error_body(404, message, None, "model_not_found")
    return status, out


def _upstream_error(status: int, body: bytes | str | dict[str, Any] | None, reason: str) -> tuple[int, dict[str, Any]]:
    status = status if 400 <= status <= 599 else 502
    parsed: Any = body
    if isinstance(body, (bytes, str)):
        text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
        try:
            parsed = json.loads(text)
        except ValueError:
            parsed = " ".join(text.split())[:500]
    error: Any = parsed.get("error", parsed) if isinstance(parsed, dict) else parsed
    if isinstance(error, dict):
        message = error.get("message") or error.get("detail") or error.get("msg") or ""
        if not isinstance(message, str):
            message = json.dumps(message)
        out = error_body(status, message or _fallback_message(status, reason))
        for key in ("type", "param", "code"):
            value = error.get(key)
            if isinstance(value, (str, int)) and not isinstance(value, bool) and value != "":
                out["error"][key] = str(value)
        return status, out
    message = error if isinstance(error, str) and error else _fallback_message(status, reason)
    return status, error_body(status, message)


def _fallback_message(status: int, reason: str) -> str:
    return f"the upstream answered {status} {reason}".rstrip()


def bad_request(message: str, param: str | None = None, code: str | None = None) -> ResponsesError:
    return ResponsesError(400, message, param, code)


def bad_gateway(message: str) -> ResponsesError:
    return ResponsesError(502, message, None, "bad_upstream_answer")
