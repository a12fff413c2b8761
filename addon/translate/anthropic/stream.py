"""The Anthropic Messages stream rendered from the accumulator's deltas (`MessagesStream`).

Events: `message_start` (usage: the given input estimate, 0 output tokens) and `ping` first; one
content block per run of reasoning (`thinking`, closed by a `signature_delta` with an empty
signature), text (`text`) or tool call (`tool_use`, its arguments as `input_json_delta`s as they
arrive); then `message_delta` (stop_reason, stop_sequence, usage from the upstream's last usage)
and `message_stop`; an `event: error` when the upstream fails after the stream started.

An Anthropic stream carries one block at a time, and a `tool_use` block stays open until its
call is done (the upstream's finish): a call that starts while another one's block is open is
held, its pieces with it, and so is text or reasoning that comes meanwhile; each follows when
the block before it closes. So parallel calls whose argument pieces interleave arrive whole,
one after the other.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from addon.translate.anthropic.answer import client_stop, stop_reason, usage_of
from addon.translate.anthropic.errors import AnthropicError, error_type, new_id
from addon.translate.chunks import Delta, Finish, Refusal, Text, Thinking, ToolArguments, ToolDone, ToolStart

SSE = "text/event-stream; charset=utf-8"
_encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def sse(event: str, data: dict[str, Any]) -> bytes:
    """One SSE event: `event: <type>\\ndata: <compact JSON>\\n\\n`, UTF-8 (a lone surrogate → U+FFFD)."""
    text = f"event: {event}\ndata: {_encode(data)}\n\n"
    try:
        return text.encode()
    except UnicodeEncodeError:
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace").encode()


@dataclass(slots=True)
class _Held:
    """A call waiting for the block before it to close: what it will start with."""

    call_id: str
    name: str
    pieces: list[str] = field(default_factory=list)
    done: bool = False


class MessagesStream:
    """The renderer of one `/v1/messages` stream (`translate.stream.Renderer`)."""

    content_type: str | None = SSE
    frame: tuple[tuple[bytes, ...], bytes] | None = None  # (`translate.stream.Renderer`)
    span: tuple[int, int] | None = None

    def __init__(
        self,
        client_model: str,
        input_tokens: int = 0,
        message_id: str | None = None,
        stop_sequences: tuple[str, ...] = (),
    ) -> None:
        self.model = client_model
        self.stop_sequences = stop_sequences  # the client's: only these are reported as `stop_sequence`
        self.id = message_id or new_id("msg")
        self.input_tokens = input_tokens
        self.started = False
        self.ended = False
        self.error: str | None = None  # the message of the final error event, once made
        self.warnings: list[str] = []
        self._blocks = 0  # content blocks started so far
        self._open: str | None = None  # "thinking", "text" or "tool" while a block is open
        self._open_call: int | None = None  # the position of the call whose block is open
        self._held: dict[int, _Held] = {}  # calls waiting, by position
        self._waiting: list[Delta] = []  # text and reasoning that came while a call's block was open

    def start(self) -> list[bytes]:
        """`message_start` and `ping`, once."""
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

    def one(self, delta: Text | Thinking) -> bytes:
        return self.render([delta])

    def render(self, deltas: list[Delta]) -> bytes:
        if self.ended:
            return b""
        out = self.start()
        for delta in deltas:
            self._delta(delta, out)
            if self.ended:
                break
        return b"".join(out)

    def fail(self, message: str, status: int = 500) -> bytes:
        """End the stream with `event: error` (type from `status`: 500 api_error, 529 overloaded_error …)."""
        if self.ended:
            return b""
        self.ended = True
        self.error = message
        return sse("error", {"type": "error", "error": {"type": error_type(status), "message": message}})

    # -- deltas

    def _delta(self, delta: Delta, out: list[bytes]) -> None:
        match delta:
            case Text() | Refusal() | Thinking() if self._open == "tool":
                self._waiting.append(delta)
            case Thinking():
                if self._open != "thinking":
                    self._begin("thinking", {"type": "thinking", "thinking": "", "signature": ""}, out)
                self._piece({"type": "thinking_delta", "thinking": delta.text}, out)
            case Text() | Refusal():
                if self._open != "text":
                    self._begin("text", {"type": "text", "text": ""}, out)
                self._piece({"type": "text_delta", "text": delta.text}, out)
            case ToolStart():
                held = _Held(delta.call_id or new_id("toolu"), delta.name)
                if self._open == "tool":
                    self._held[delta.position] = held
                else:
                    self._start_call(delta.position, held, out)
            case ToolArguments():
                if delta.position == self._open_call:
                    self._piece({"type": "input_json_delta", "partial_json": delta.piece}, out)
                elif delta.position in self._held:
                    self._held[delta.position].pieces.append(delta.piece)
            case ToolDone():
                if delta.warning:
                    self.warnings.append(delta.warning)
                if delta.position == self._open_call:
                    self._close(out)
                    self._next(out)
                elif delta.position in self._held:
                    self._held[delta.position].done = True
            case Finish():
                self._finish(delta, out)

    def _start_call(self, position: int, call: _Held, out: list[bytes]) -> None:
        self._begin("tool", {"type": "tool_use", "id": call.call_id, "name": call.name, "input": {}}, out)
        self._open_call = position
        if call.pieces:
            self._piece({"type": "input_json_delta", "partial_json": "".join(call.pieces)}, out)

    def _next(self, out: list[bytes]) -> None:
        """After a call's block closed: the calls held behind it, then what was said meanwhile."""
        while self._held:
            position = min(self._held)
            call = self._held.pop(position)
            self._start_call(position, call, out)
            if not call.done:
                return
            self._close(out)
        waiting, self._waiting = self._waiting, []
        for delta in waiting:
            self._delta(delta, out)

    def _finish(self, finish: Finish, out: list[bytes]) -> None:
        self._close(out)
        self._next(out)  # (every call is done by now: the accumulator closes them before Finish)
        self._close(out)
        try:
            usage = usage_of(finish.usage)
        except AnthropicError as e:
            out.append(self.fail(e.message))
            return
        delta_usage: dict[str, int] = {"output_tokens": usage["output_tokens"]}
        if finish.usage is not None:  # the real counts replace message_start's estimate
            delta_usage = {**usage}
        matched = client_stop(finish.matched_stop, self.stop_sequences)
        stop = "stop_sequence" if matched else stop_reason(finish.reason, False)
        delta = {"stop_reason": stop, "stop_sequence": matched}
        out.append(sse("message_delta", {"type": "message_delta", "delta": delta, "usage": delta_usage}))
        out.append(sse("message_stop", {"type": "message_stop"}))
        self.ended = True

    # -- blocks

    def _begin(self, kind: str, block: dict[str, Any], out: list[bytes]) -> None:
        self._close(out)
        index = self._blocks
        self._blocks += 1
        self._open = kind
        out.append(sse("content_block_start", {"type": "content_block_start", "index": index, "content_block": block}))

    def _close(self, out: list[bytes]) -> None:
        if self._open is None:
            return
        index = self._blocks - 1
        if self._open == "thinking":
            signature = {"type": "signature_delta", "signature": ""}
            out.append(sse("content_block_delta", {"type": "content_block_delta", "index": index, "delta": signature}))
        out.append(sse("content_block_stop", {"type": "content_block_stop", "index": index}))
        self._open = None
        self._open_call = None

    def _piece(self, delta: dict[str, Any], out: list[bytes]) -> None:
        out.append(
            sse("content_block_delta", {"type": "content_block_delta", "index": self._blocks - 1, "delta": delta})
        )
