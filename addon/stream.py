"""Incremental conversion of an OpenAI SSE stream into Ollama NDJSON: feed bytes, get lines."""

from __future__ import annotations

import json
from typing import Any, Literal

from addon.translate import (
    Clock,
    done_reason,
    dumps_line,
    logprobs_of,
    metrics,
    ollama_tool_call,
    parse_arguments,
    rfc3339_now,
    thinking_of,
)

Shape = Literal["chat", "generate"]


class _ToolCallDraft:
    __slots__ = ("id", "name", "arguments")

    def __init__(self) -> None:
        self.id: str | None = None
        self.name = ""
        self.arguments: list[str] = []


class SSEToNDJSON:
    """Turns the bytes of an OpenAI chat/completions (or completions) SSE stream into NDJSON lines.

    `feed(piece)` takes any piece of the body, however it was cut, and returns the complete
    Ollama lines it yields; `finish()` returns the tail: the final `done` line, or an `{"error"}`
    line when the upstream stream ended before it was complete. Tool-call fragments are gathered
    by index and emitted whole once the upstream says the message is finished. Every
    line of a generate stream carries `context` (empty: there are no token ids) unless the
    request was `raw`: Ollama sends it on the final line only, but the Vercel AI SDK's provider
    rejects lines without it.
    """

    def __init__(self, shape: Shape, model: str, clock: Clock, raw: bool = False) -> None:
        self.shape = shape
        self.context = shape == "generate" and not raw  # Ollama's final generate line has `context`
        self.model = model
        self.clock = clock
        self.warnings: list[str] = []
        self.finish_reason: str | None = None
        self.usage: dict[str, Any] | None = None
        self.timings: dict[str, Any] | None = None
        self.ended = False  # a final line (done or error) was emitted
        self._buffer = b""
        self._data: list[bytes] = []
        self._tool_calls: dict[int, _ToolCallDraft] = {}

    # -- input --------------------------------------------------------------------------------

    def feed(self, piece: bytes) -> list[bytes]:
        """Lines completed by this piece of the upstream body (possibly none)."""
        if self.ended:
            return []
        buffer = self._buffer + piece if self._buffer else piece
        end = buffer.rfind(b"\n")
        if end < 0:
            self._buffer = buffer
            return []
        self._buffer = buffer[end + 1 :]
        out: list[bytes] = []
        for line in buffer[:end].split(b"\n"):
            if line.endswith(b"\r"):
                line = line[:-1]
            if not line:
                self._dispatch(out)
            elif line.startswith(b"data:"):
                self._data.append(line[6:] if line[5:6] == b" " else line[5:])
            # other SSE fields (event:, id:, retry:) and ':' comments carry nothing for us
            if self.ended:
                break
        return out

    def finish(self) -> list[bytes]:
        """The tail of the stream, once the upstream body has ended."""
        out: list[bytes] = []
        if not self.ended:
            if self._buffer.strip():
                out.extend(self.feed(b"\n"))
            self._buffer = b""
            self._dispatch(out)
        if not self.ended:
            if self.finish_reason is not None:
                self._finish(out)
            else:
                self._fail(out, "the upstream stream ended before the answer was complete")
        return out

    # -- events -------------------------------------------------------------------------------

    def _dispatch(self, out: list[bytes]) -> None:
        if not self._data:
            return
        data = b"\n".join(self._data)
        self._data = []
        if data == b"[DONE]":
            self._finish(out)
            return
        try:
            event = json.loads(data)
        except ValueError:
            self._fail(out, f"the upstream sent an invalid stream event: {data[:200].decode('utf-8', 'replace')!r}")
            return
        if not isinstance(event, dict):
            self._fail(out, "the upstream sent an invalid stream event")
        elif "error" in event:
            error = event["error"]
            message = error.get("message") if isinstance(error, dict) else error
            self._fail(out, f"upstream error: {message}")
        else:
            try:
                self._event(event, out)
            except (AttributeError, TypeError, KeyError, IndexError, ValueError):  # a JSON object of another shape
                self._fail(out, f"the upstream sent an invalid stream event: {data[:200].decode('utf-8', 'replace')!r}")

    def _event(self, event: dict[str, Any], out: list[bytes]) -> None:
        if event.get("usage") and isinstance(event["usage"], dict):
            self.usage = event["usage"]
        if event.get("timings") and isinstance(event["timings"], dict):
            self.timings = event["timings"]
        choices = event.get("choices")
        if not choices:
            return
        choice = choices[0]
        delta = choice.get("delta") or {}
        text = delta.get("content") or delta.get("refusal") or choice.get("text") or ""
        thinking = thinking_of(delta)
        for fragment in delta.get("tool_calls") or ():
            self._tool_fragment(fragment)
        logprobs = logprobs_of(choice)
        if text or thinking or logprobs:
            self.clock.mark_token()
            chunk = self._chunk(text, thinking)
            if logprobs:
                chunk["logprobs"] = logprobs
            out.append(dumps_line(chunk))
        if choice.get("finish_reason"):
            self.finish_reason = choice["finish_reason"]
            if self._tool_calls:
                out.append(dumps_line(self._chunk("", None, self._drain_tool_calls())))

    def _tool_fragment(self, fragment: dict[str, Any]) -> None:
        self.clock.mark_token()
        index = fragment.get("index", len(self._tool_calls))
        draft = self._tool_calls.get(index)
        if draft is None:
            draft = self._tool_calls[index] = _ToolCallDraft()
        if fragment.get("id"):
            draft.id = fragment["id"]
        function = fragment.get("function") or {}
        if function.get("name"):
            draft.name += function["name"]
        if function.get("arguments"):
            draft.arguments.append(function["arguments"])

    def _drain_tool_calls(self) -> list[dict[str, Any]]:
        calls = []
        for position, index in enumerate(sorted(self._tool_calls)):
            draft = self._tool_calls[index]
            arguments, warning = parse_arguments("".join(draft.arguments))
            if warning:
                self.warnings.append(warning)
            calls.append(ollama_tool_call(position, draft.id, draft.name, arguments))
        self._tool_calls.clear()
        return calls

    # -- output -------------------------------------------------------------------------------

    def _chunk(self, text: str, thinking: str | None, tool_calls: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        if self.shape == "chat":
            message: dict[str, Any] = {"role": "assistant", "content": text}
            if thinking:
                message["thinking"] = thinking
            if tool_calls:
                message["tool_calls"] = tool_calls
            return {"model": self.model, "created_at": rfc3339_now(), "message": message, "done": False}
        chunk: dict[str, Any] = {"model": self.model, "created_at": rfc3339_now(), "response": text}
        if thinking:
            chunk["thinking"] = thinking
        if tool_calls:
            chunk["tool_calls"] = tool_calls
        chunk["done"] = False
        if self.context:  # beyond Ollama (final line only): the Vercel AI SDK's provider validates every line
            chunk["context"] = []
        return chunk

    def _finish(self, out: list[bytes]) -> None:
        if self._tool_calls:
            out.append(dumps_line(self._chunk("", None, self._drain_tool_calls())))
        final = self._chunk("", None)
        final["done"] = True
        final["done_reason"] = done_reason(self.finish_reason)
        if self.context:
            final["context"] = final.pop("context")  # after done_reason, as in Ollama
        final.update(metrics(self.clock, self.usage, self.timings))
        out.append(dumps_line(final))
        self.ended = True

    def _fail(self, out: list[bytes], message: str) -> None:
        out.append(dumps_line({"error": message}))
        self.ended = True
