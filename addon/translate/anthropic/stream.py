"""OpenAI chat-completion chunks → Anthropic SSE events, as they arrive (`MessagesStream`)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from addon.translate.anthropic.answer import matched_stop, reasoning_of, stop_reason, usage_of
from addon.translate.anthropic.errors import AnthropicError, error_text, error_type, new_id
from addon.translate.values import is_int

_encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def sse(event: str, data: dict[str, Any]) -> bytes:
    """One SSE event: `event: <type>\\ndata: <compact JSON>\\n\\n`, UTF-8 (a lone surrogate → U+FFFD)."""
    text = f"event: {event}\ndata: {_encode(data)}\n\n"
    try:
        return text.encode()
    except UnicodeEncodeError:
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace").encode()


class _StreamFault(Exception):
    """Input the stream cannot express: the stream ends with an error event."""


@dataclass(slots=True)
class _ToolCall:
    call_id: str
    name: str = ""
    pending: str = ""  # argument text not yet sent (before the block could start)
    block: int | None = None  # the content block index, once started


class MessagesStream:
    """Decoded OpenAI chat-completion chunks → Anthropic SSE events, as they arrive.

    `feed_event(chunk)` for each decoded `data:` object, `finish()` after `[DONE]` (or at the
    end of the upstream body), `fail(message)` when the upstream fails mid-way. Each returns
    the bytes to send now (possibly none, never an empty piece); after the end every call
    returns []. Odd input never raises: it ends the stream with an `event: error`.

    Events: `message_start` (usage: the given input estimate, 0 output tokens) and `ping` with the
    first chunk; one content block per run of reasoning (`thinking`, closed by a `signature_delta`
    with an empty signature), text (`text`) or tool call (`tool_use`, its arguments as
    `input_json_delta`s as they arrive, a new block per tool-call index); then `message_delta`
    (stop_reason, stop_sequence, usage from the upstream's final usage chunk) and `message_stop`.
    """

    def __init__(self, client_model: str, input_tokens: int = 0, message_id: str | None = None) -> None:
        self.model = client_model
        self.id = message_id or new_id("msg")
        self.input_tokens = input_tokens
        self.started = False
        self.ended = False
        self.error: str | None = None  # the message of the final error event, once made
        self._blocks = 0  # content blocks started so far
        self._open: str | None = None  # "thinking", "text" or "tool" while a block is open
        self._open_tool: _ToolCall | None = None
        self._tools: dict[int, _ToolCall] = {}
        self._finish: str | None = None
        self._matched: str | None = None
        self._usage: Any = None

    # -- public

    def start(self) -> list[bytes]:
        """`message_start` and `ping`, once; call it early to answer before the first chunk."""
        if self.started or self.ended:
            return []
        self.started = True
        message: dict[str, Any] = {
            "id": self.id,
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": self.input_tokens, "output_tokens": 0},
        }
        return [sse("message_start", {"type": "message_start", "message": message}), sse("ping", {"type": "ping"})]

    def feed_event(self, chunk: Any) -> list[bytes]:
        if self.ended:
            return []
        out = self.start()
        try:
            self._chunk(chunk, out)
        except _StreamFault as e:
            return out + self.fail(str(e))
        except Exception as e:  # noqa: BLE001 - odd input must not break the flow: end it cleanly instead
            return out + self.fail(f"the upstream's stream could not be converted: {type(e).__name__}: {e}")
        return out

    def finish(self) -> list[bytes]:
        if self.ended:
            return []
        out = self.start()
        if self._finish is None:
            return out + self.fail("the upstream stream ended before the answer was complete")
        try:
            for call in self._tools.values():  # a call whose name never came still gets its block
                if call.block is None:
                    self._start_tool(call, out)
            self._close(out)
            usage = usage_of(self._usage)
        except (_StreamFault, AnthropicError) as e:
            return out + self.fail(e.message if isinstance(e, AnthropicError) else str(e))
        delta_usage: dict[str, int] = {"output_tokens": usage["output_tokens"]}
        if isinstance(self._usage, dict):  # the real counts replace message_start's estimate
            delta_usage = {**usage}
        stop = "stop_sequence" if self._matched else stop_reason(self._finish, bool(self._tools))
        out.append(
            sse(
                "message_delta",
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": stop, "stop_sequence": self._matched},
                    "usage": delta_usage,
                },
            )
        )
        out.append(sse("message_stop", {"type": "message_stop"}))
        self.ended = True
        return out

    def fail(self, message: str, status: int = 500) -> list[bytes]:
        """End the stream with `event: error` (type from `status`: 500 api_error, 529 overloaded_error …)."""
        if self.ended:
            return []
        self.ended = True
        self.error = message
        return [sse("error", {"type": "error", "error": {"type": error_type(status), "message": message}})]

    # -- conversion

    def _chunk(self, chunk: Any, out: list[bytes]) -> None:
        if not isinstance(chunk, dict):
            raise _StreamFault("the upstream sent an event that is not a JSON object")
        if chunk.get("error"):
            message = error_text({"error": chunk["error"]})
            raise _StreamFault(f"the upstream failed: {message}")
        if chunk.get("usage") is not None:
            self._usage = chunk["usage"]
        choices = chunk.get("choices")
        if choices is None:
            return
        if not isinstance(choices, list):
            raise _StreamFault("the upstream sent choices that are not a list")
        for choice in choices:
            if not isinstance(choice, dict):
                raise _StreamFault("the upstream sent a choice that is not an object")
            if is_int(choice.get("index")) and choice["index"] != 0:
                continue  # n > 1 is not asked for
            delta = choice.get("delta") or {}
            if not isinstance(delta, dict):
                raise _StreamFault("the upstream sent a delta that is not an object")
            if thinking := reasoning_of(delta):
                self._thinking(thinking, out)
            for name in ("content", "refusal"):
                if isinstance(text := delta.get(name), str) and text:
                    self._text(text, out)
            calls = delta.get("tool_calls")
            if calls:
                if not isinstance(calls, list):
                    raise _StreamFault("the upstream sent tool_calls that are not a list")
                for call in calls:
                    self._tool_fragment(call, out)
            if isinstance(choice.get("finish_reason"), str):
                self._finish = choice["finish_reason"]
                self._matched = matched_stop(choice)

    def _begin(self, kind: str, block: dict[str, Any], out: list[bytes]) -> int:
        self._close(out)
        index = self._blocks
        self._blocks += 1
        self._open = kind
        out.append(sse("content_block_start", {"type": "content_block_start", "index": index, "content_block": block}))
        return index

    def _close(self, out: list[bytes]) -> None:
        if self._open is None:
            return
        index = self._blocks - 1
        if self._open == "thinking":
            out.append(
                sse(
                    "content_block_delta",
                    {
                        "type": "content_block_delta",
                        "index": index,
                        "delta": {"type": "signature_delta", "signature": ""},
                    },
                )
            )
        out.append(sse("content_block_stop", {"type": "content_block_stop", "index": index}))
        self._open = None
        self._open_tool = None

    def _delta(self, delta: dict[str, Any], out: list[bytes]) -> None:
        out.append(
            sse("content_block_delta", {"type": "content_block_delta", "index": self._blocks - 1, "delta": delta})
        )

    def _thinking(self, text: str, out: list[bytes]) -> None:
        if self._open != "thinking":
            self._begin("thinking", {"type": "thinking", "thinking": "", "signature": ""}, out)
        self._delta({"type": "thinking_delta", "thinking": text}, out)

    def _text(self, text: str, out: list[bytes]) -> None:
        if self._open != "text":
            self._begin("text", {"type": "text", "text": ""}, out)
        self._delta({"type": "text_delta", "text": text}, out)

    def _tool_fragment(self, fragment: Any, out: list[bytes]) -> None:
        if not isinstance(fragment, dict):
            raise _StreamFault("the upstream sent a tool call that is not an object")
        function = fragment.get("function") or {}
        if not isinstance(function, dict):
            raise _StreamFault("the upstream sent a tool call function that is not an object")
        call_id = fragment.get("id") if isinstance(fragment.get("id"), str) and fragment["id"] else None
        index = fragment.get("index")
        if not is_int(index):  # some upstreams send whole calls without an index
            known = next((i for i, c in self._tools.items() if call_id and c.call_id == call_id), None)
            index = (
                known
                if known is not None
                else (max(self._tools, default=-1) + 1 if call_id or not self._tools else max(self._tools))
            )
        assert isinstance(index, int)
        call = self._tools.get(index)
        if call is None:
            call = self._tools[index] = _ToolCall(call_id or new_id("toolu"))
        name = function.get("name")
        arguments = function.get("arguments")
        if isinstance(arguments, dict):  # a few upstreams send the arguments as an object
            arguments = json.dumps(arguments, ensure_ascii=False)
        if call.block is None:
            if call_id:
                call.call_id = call_id
            if isinstance(name, str) and name:
                call.name = name
            if isinstance(arguments, str):
                call.pending += arguments
            if call.name:
                self._start_tool(call, out)
            return
        if not isinstance(arguments, str) or not arguments:
            return  # a repeated id or name: nothing new
        if self._open_tool is not call:
            raise _StreamFault(
                "the upstream interleaved the arguments of parallel tool calls, which an Anthropic stream cannot carry"
            )
        self._delta({"type": "input_json_delta", "partial_json": arguments}, out)

    def _start_tool(self, call: _ToolCall, out: list[bytes]) -> None:
        call.block = self._begin("tool", {"type": "tool_use", "id": call.call_id, "name": call.name, "input": {}}, out)
        self._open_tool = call
        if call.pending:
            self._delta({"type": "input_json_delta", "partial_json": call.pending}, out)
            call.pending = ""
