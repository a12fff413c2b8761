"""The Responses stream rendered from the accumulator's deltas (`ResponsesStream`)."""

from __future__ import annotations

import json
import time
from typing import Any

from addon.translate.chunks import Delta, Finish, Refusal, Text, Thinking, ToolArguments, ToolDone, ToolStart
from addon.translate.responses.answer import (
    call_arguments,
    function_call_item,
    message_item,
    new_id,
    refusal_part,
    response_object,
    responses_usage,
    status_of,
    text_part,
)
from addon.translate.responses.tools import namespaced_names
from addon.wire.openai import error_type

SSE = "text/event-stream; charset=utf-8"


def _json(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


def sse_event(event: dict[str, Any]) -> bytes:
    """One Responses SSE event: `event: <type>\\ndata: <json>\\n\\n`.

    A lone surrogate (JSON allows "\\ud800") becomes U+FFFD rather than failing to encode.
    """
    text = f"event: {event['type']}\ndata: {_json(event)}\n\n"
    try:
        return text.encode()
    except UnicodeEncodeError:
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace").encode()


# The codes a Response's `error.code` may take that can arise here (openai.types.responses.ResponseError).
_RESPONSE_ERROR_CODES = {"server_error", "rate_limit_exceeded", "invalid_prompt"}


class ResponsesStream:
    """The renderer of one translated `/v1/responses` stream (`translate.stream.Renderer`).

    `render(deltas)` returns the events they make; `Finish` closes every open item and ends with
    `response.completed` (or `response.incomplete` when the upstream stopped for length or content
    filter); `fail(message)` makes an `error` event and `response.failed`. The first call of either
    also opens the stream with `response.created` and `response.in_progress`. Items are announced
    when their first piece arrives: reasoning (summary text), the message (output_text and refusal
    parts), and one function_call per call (`ToolStart`), whose arguments stream as they come.
    After the end every call returns b"".
    """

    content_type: str | None = SSE
    frame: tuple[tuple[bytes, ...], bytes] | None = None  # (`translate.stream.Renderer`)
    span: tuple[int, int] | None = None

    def __init__(
        self,
        client_model: str,
        request_body: dict[str, Any],
        *,
        response_id: str | None = None,
        created_at: int | None = None,
    ) -> None:
        self.client_model = client_model
        self.request_body = request_body if isinstance(request_body, dict) else {}
        self.response_id = response_id or new_id("resp")
        self.created_at = created_at if created_at is not None else int(time.time())
        self.ended = False
        self.error: str | None = None  # the message of the final error event, once made
        self.response: dict[str, Any] | None = None  # the final Response once finished or failed
        self._sequence = 0
        self._started = False
        self._items: list[dict[str, Any]] = []  # by output_index
        self._open: set[int] = set()
        self._reasoning: int | None = None  # output_index of the open reasoning item
        self._message: int | None = None  # output_index of the open message item
        self._text_part: int | None = None  # content_index in the open message
        self._refusal_part: int | None = None
        self._calls: dict[int, tuple[int, str]] = {}  # by position: (output_index, item id)
        self._usage: dict[str, Any] | None = None
        self.warnings: list[str] = []
        self._namespaces = namespaced_names(self.request_body)

    # -- public --------------------------------------------------------------------------------

    def start(self) -> list[bytes]:
        """`response.created` and `response.in_progress`, once."""
        if self._started or self.ended:
            return []
        self._started = True
        snapshot = self._response("in_progress", [])
        return [
            self._event("response.created", response=snapshot),
            self._event("response.in_progress", response=snapshot),
        ]

    def one(self, delta: Text | Thinking) -> bytes:
        return self.render([delta])

    def render(self, deltas: list[Delta]) -> bytes:
        """The events these deltas make."""
        if self.ended:
            return b""
        out = self.start()
        for delta in deltas:
            match delta:
                case Thinking():
                    out += self._reasoning_delta(delta.text)
                case Text():
                    out += self._text_delta("text", delta.text)
                case Refusal():
                    out += self._text_delta("refusal", delta.text)
                case ToolStart():
                    out += self._announce_call(delta)
                case ToolArguments():
                    index, item_id = self._calls[delta.position]
                    self._items[index]["arguments"] += delta.piece
                    out.append(
                        self._event(
                            "response.function_call_arguments.delta",
                            item_id=item_id,
                            output_index=index,
                            delta=delta.piece,
                        )
                    )
                case ToolDone():
                    if delta.warning:
                        self.warnings.append(delta.warning)
                    index, _ = self._calls[delta.position]
                    self._items[index]["arguments"] = call_arguments(delta)
                case Finish():
                    self._usage = delta.usage
                    out += self._finish(delta.reason)
        return b"".join(out)

    def _finish(self, reason: str) -> list[bytes]:
        """Close every open item and end with `response.completed` (or `response.incomplete`)."""
        out: list[bytes] = []
        status, incomplete = status_of(reason)
        if not any(item["type"] in ("message", "function_call") for item in self._items):
            out += self._close_reasoning()  # an answer that is all reasoning still gets its (empty) message
            out += self._open_message()
            out += self._open_part("text")
        last = len(self._items) - 1
        for index in sorted(self._open):
            out += self._close(index, "incomplete" if status == "incomplete" and index == last else "completed")
        self.ended = True
        self.response = self._response(status, self._items, responses_usage(self._usage, strict=False), incomplete)
        kind = "response.completed" if status == "completed" else "response.incomplete"
        out.append(self._event(kind, response=self.response))
        return out

    def fail(self, message: str, code: str = "server_error") -> bytes:
        """An `error` event and `response.failed`: the stream broke off after it started."""
        if self.ended:
            return b""
        out = self.start()
        self.ended = True
        message = message if isinstance(message, str) and message else "the upstream stream failed"
        self.error = message
        for index in self._open:
            item = self._items[index]
            if item["type"] != "reasoning":
                item["status"] = "incomplete"
        self.response = self._response(
            "failed",
            self._items,
            responses_usage(self._usage, strict=False),
            error={"code": code if code in _RESPONSE_ERROR_CODES else "server_error", "message": message},
        )
        # `code`, `message`, `param`: the documented error event. `error`, the same again as an
        # object: what the openai SDKs raise on (APIError) instead of handing on a cut answer.
        error = {"type": error_type(500), "code": code, "message": message, "param": None}
        out.append(self._event("error", code=code, message=message, param=None, error=error))
        out.append(self._event("response.failed", response=self.response))
        return b"".join(out)

    # -- items ---------------------------------------------------------------------------------

    def _reasoning_delta(self, text: str) -> list[bytes]:
        out: list[bytes] = []
        if self._reasoning is None:
            out += self._close_text_item()
            index = self._add_item({"id": new_id("rs"), "type": "reasoning", "summary": []})
            self._reasoning = index
            item = self._items[index]
            out.append(self._event("response.output_item.added", output_index=index, item=item))
            item["summary"].append({"type": "summary_text", "text": ""})
            out.append(
                self._event(
                    "response.reasoning_summary_part.added",
                    item_id=item["id"],
                    output_index=index,
                    summary_index=0,
                    part={"type": "summary_text", "text": ""},
                )
            )
        index = self._reasoning
        item = self._items[index]
        item["summary"][0]["text"] += text
        out.append(
            self._event(
                "response.reasoning_summary_text.delta",
                item_id=item["id"],
                output_index=index,
                summary_index=0,
                delta=text,
            )
        )
        return out

    def _text_delta(self, kind: str, text: str) -> list[bytes]:
        out = self._close_reasoning()
        if self._message is None:
            out += self._open_message()
        if (self._text_part if kind == "text" else self._refusal_part) is None:
            out += self._open_part(kind)
        index = self._message
        assert index is not None
        item = self._items[index]
        if kind == "text":
            part = self._text_part
            item["content"][part]["text"] += text
            out.append(
                self._event(
                    "response.output_text.delta",
                    item_id=item["id"],
                    output_index=index,
                    content_index=part,
                    delta=text,
                    logprobs=[],
                )
            )
        else:
            part = self._refusal_part
            item["content"][part]["refusal"] += text
            out.append(
                self._event(
                    "response.refusal.delta", item_id=item["id"], output_index=index, content_index=part, delta=text
                )
            )
        return out

    def _open_message(self) -> list[bytes]:
        index = self._add_item(message_item(new_id("msg"), [], "in_progress"))
        self._message, self._text_part, self._refusal_part = index, None, None
        return [self._event("response.output_item.added", output_index=index, item=self._items[index])]

    def _open_part(self, kind: str) -> list[bytes]:
        index = self._message
        assert index is not None
        item = self._items[index]
        part = text_part("") if kind == "text" else refusal_part("")
        item["content"].append(part)
        position = len(item["content"]) - 1
        if kind == "text":
            self._text_part = position
        else:
            self._refusal_part = position
        return [
            self._event(
                "response.content_part.added", item_id=item["id"], output_index=index, content_index=position, part=part
            )
        ]

    def _announce_call(self, call: ToolStart) -> list[bytes]:
        out = self._close_reasoning() + self._close_text_item()
        item_id = new_id("fc")
        item = function_call_item(
            item_id, call.call_id or new_id("call"), call.name, "", "in_progress", self._namespaces
        )
        index = self._add_item(item)
        self._calls[call.position] = (index, item_id)
        out.append(self._event("response.output_item.added", output_index=index, item=item))
        return out

    def _close_reasoning(self) -> list[bytes]:
        return self._close(self._reasoning, "completed") if self._reasoning is not None else []

    def _close_text_item(self) -> list[bytes]:
        return self._close(self._message, "completed") if self._message is not None else []

    def _close(self, index: int, status: str) -> list[bytes]:
        if index not in self._open:
            return []
        self._open.discard(index)
        item = self._items[index]
        out: list[bytes] = []
        if item["type"] == "reasoning":
            self._reasoning = None
            text = item["summary"][0]["text"]
            out.append(
                self._event(
                    "response.reasoning_summary_text.done",
                    item_id=item["id"],
                    output_index=index,
                    summary_index=0,
                    text=text,
                )
            )
            out.append(
                self._event(
                    "response.reasoning_summary_part.done",
                    item_id=item["id"],
                    output_index=index,
                    summary_index=0,
                    part={"type": "summary_text", "text": text},
                )
            )
        elif item["type"] == "message":
            self._message = None
            for position, part in enumerate(item["content"]):
                if part["type"] == "output_text":
                    out.append(
                        self._event(
                            "response.output_text.done",
                            item_id=item["id"],
                            output_index=index,
                            content_index=position,
                            text=part["text"],
                            logprobs=[],
                        )
                    )
                else:
                    out.append(
                        self._event(
                            "response.refusal.done",
                            item_id=item["id"],
                            output_index=index,
                            content_index=position,
                            refusal=part["refusal"],
                        )
                    )
                out.append(
                    self._event(
                        "response.content_part.done",
                        item_id=item["id"],
                        output_index=index,
                        content_index=position,
                        part=part,
                    )
                )
            item["status"] = status
        else:
            out.append(
                self._event(
                    "response.function_call_arguments.done",
                    item_id=item["id"],
                    output_index=index,
                    arguments=item["arguments"],
                )
            )
            item["status"] = status
        out.append(self._event("response.output_item.done", output_index=index, item=item))
        return out

    def _add_item(self, item: dict[str, Any]) -> int:
        self._items.append(item)
        index = len(self._items) - 1
        self._open.add(index)
        return index

    # -- events --------------------------------------------------------------------------------

    def _event(self, kind: str, **fields: Any) -> bytes:
        """Serialised at once, so later changes to the items do not reach events already made."""
        event = {"type": kind, "sequence_number": self._sequence, **fields}
        self._sequence += 1
        return sse_event(event)

    def _response(
        self,
        status: str,
        output: list[dict[str, Any]],
        usage: dict[str, Any] | None = None,
        reason: str | None = None,
        error: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        return response_object(
            self.request_body,
            self.client_model,
            response_id=self.response_id,
            created_at=self.created_at,
            status=status,
            output=_copy(output),
            usage=usage,
            incomplete_reason=reason,
            error=error,
        )


def _copy(value: Any) -> Any:
    """A deep copy of JSON data (items change after their events were built)."""
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy(v) for v in value]
    return value
