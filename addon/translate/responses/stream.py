"""chat.completion.chunk dicts → Responses SSE events, as they arrive (`ResponsesStream`)."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

from addon.translate.responses.answer import (
    arguments_text,
    function_call_item,
    message_item,
    new_id,
    reasoning_of,
    refusal_part,
    response_object,
    responses_usage,
    status_of,
    text_part,
)
from addon.translate.responses.errors import upstream_error
from addon.translate.responses.tools import namespaced_names
from addon.translate.values import dict_or, is_int
from addon.wire.openai import error_type


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


@dataclass(slots=True)
class _Call:
    """One tool call of the stream, gathered by its upstream index."""

    call_id: str | None = None
    name: str = ""
    arguments: list[str] = field(default_factory=list)
    output_index: int | None = None  # set once its output item was announced
    item_id: str = ""


class ResponsesStream:
    """Decoded chat.completion.chunk dicts in, Responses SSE events out, in real time.

    `feed_event(chunk)` returns the events a chunk yields (possibly none), `finish()` the closing
    events and `response.completed` (or `response.incomplete` when the upstream stopped for
    length or content filter), `fail(message)` an `error` event and `response.failed`. The first
    call of any of them also opens the stream with `response.created` and `response.in_progress`.
    Items are announced when their first piece arrives: reasoning (summary text), the message
    (output_text and refusal parts), and one function_call per tool-call index, whose arguments
    stream as they come; a tool call is announced once its name is known. After `finish()` or
    `fail()` every call returns []. No method raises on odd input or emits an empty event.
    """

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
        self._calls: dict[Any, _Call] = {}
        self._finish_reason: str | None = None
        self._usage: dict[str, Any] | None = None
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

    def feed_event(self, openai_chunk: dict[str, Any]) -> list[bytes]:
        """The events one decoded upstream chunk yields."""
        if self.ended:
            return []
        out = self.start()
        chunk = openai_chunk if isinstance(openai_chunk, dict) else {}
        if chunk.get("error") is not None:
            _, body = upstream_error(502, chunk)
            return out + self.fail(body["error"]["message"])
        if isinstance(chunk.get("usage"), dict):
            self._usage = chunk["usage"]
        choices = chunk.get("choices")
        choice = choices[0] if isinstance(choices, list) and choices and isinstance(choices[0], dict) else {}
        delta = dict_or(choice.get("delta"), {})
        if reasoning := reasoning_of(delta):
            out += self._reasoning_delta(reasoning)
        if isinstance(delta.get("content"), str) and delta["content"]:
            out += self._text_delta("text", delta["content"])
        if isinstance(delta.get("refusal"), str) and delta["refusal"]:
            out += self._text_delta("refusal", delta["refusal"])
        calls = delta.get("tool_calls")
        for position, fragment in enumerate(calls if isinstance(calls, list) else ()):
            if isinstance(fragment, dict):
                out += self._tool_fragment(position, fragment)
        if isinstance(choice.get("finish_reason"), str):
            self._finish_reason = choice["finish_reason"]
        return out

    def finish(self) -> list[bytes]:
        """Close every open item and end with `response.completed` (or `response.incomplete`)."""
        if self.ended:
            return []
        out = self.start()
        status, reason = status_of(self._finish_reason)
        for call in self._calls.values():  # tool calls whose name never came are announced now
            if call.output_index is None:
                out += self._announce_call(call)
        if not any(item["type"] in ("message", "function_call") for item in self._items):
            out += self._close_reasoning()  # an answer that is all reasoning still gets its (empty) message
            out += self._open_message()
            out += self._open_part("text")
        last = len(self._items) - 1
        for index in sorted(self._open):
            out += self._close(index, "incomplete" if status == "incomplete" and index == last else "completed")
        self.ended = True
        self.response = self._response(status, self._items, responses_usage(self._usage, strict=False), reason)
        kind = "response.completed" if status == "completed" else "response.incomplete"
        out.append(self._event(kind, response=self.response))
        return out

    def fail(self, message: str, code: str = "server_error") -> list[bytes]:
        """An `error` event and `response.failed`: the stream broke off after it started."""
        if self.ended:
            return []
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
        return out

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

    def _tool_fragment(self, position: int, fragment: dict[str, Any]) -> list[bytes]:
        key: Any = fragment.get("index")
        if not is_int(key):  # servers that send calls without an index: by id, else a name starts a call
            call_id = fragment.get("id")
            known = [k for k, c in self._calls.items() if call_id and c.call_id == call_id]
            function = dict_or(fragment.get("function"), {})
            if known:
                key = known[0]
            elif call_id or function.get("name") or not self._calls:
                key = ("unindexed", len(self._calls))
            else:
                key = next(reversed(self._calls))
        call = self._calls.get(key)
        if call is None:
            call = self._calls[key] = _Call()
        if isinstance(fragment.get("id"), str) and fragment["id"] and call.call_id is None:
            call.call_id = fragment["id"]
        function = dict_or(fragment.get("function"), {})
        if call.output_index is None and isinstance(function.get("name"), str):
            call.name += function["name"]
        arguments = arguments_text(function.get("arguments"))
        out: list[bytes] = []
        if call.output_index is None:
            if arguments:
                call.arguments.append(arguments)
            if call.name:
                out += self._announce_call(call)
        elif arguments:
            call.arguments.append(arguments)
            item = self._items[call.output_index]
            item["arguments"] += arguments
            out.append(
                self._event(
                    "response.function_call_arguments.delta",
                    item_id=call.item_id,
                    output_index=call.output_index,
                    delta=arguments,
                )
            )
        return out

    def _announce_call(self, call: _Call) -> list[bytes]:
        out = self._close_reasoning() + self._close_text_item()
        call.call_id = call.call_id or new_id("call")
        call.item_id = new_id("fc")
        index = self._add_item(
            function_call_item(call.item_id, call.call_id, call.name, "", "in_progress", self._namespaces)
        )
        call.output_index = index
        out.append(self._event("response.output_item.added", output_index=index, item=self._items[index]))
        if buffered := "".join(call.arguments):
            self._items[index]["arguments"] = buffered
            out.append(
                self._event(
                    "response.function_call_arguments.delta", item_id=call.item_id, output_index=index, delta=buffered
                )
            )
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
