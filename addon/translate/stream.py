"""Incremental conversion of an OpenAI SSE stream into a client's stream format: feed bytes, get bytes.

Both are stream converters (`addon.endpoints.base.StreamConverter`) whose events come from the
one SSE decoder (`addon.wire.sse`):
- `SSEToNDJSON`: Ollama NDJSON for the chat and generate endpoints, its lines from the one chunk
  builder (`translate.response.chunk`);
- `ChunkConverter`: any other API's events, made by an `EventSink` from each decoded chunk (the
  Anthropic Messages and OpenAI Responses streams of `translate.anthropic` and `translate.responses`).
"""

from __future__ import annotations

from typing import Any, Protocol, cast

from addon.translate.response import (
    Clock,
    Shape,
    chunk,
    final,
    logprobs_of,
    metrics,
    ollama_tool_call,
    parse_arguments,
    thinking_of,
)
from addon.wire.ollama import NDJSON, OllamaToolCall, dumps_line
from addon.wire.openai import (
    ChatCompletion,
    InvalidUsage,
    ToolCallDelta,
    Usage,
    checked_usage,
    invalid_json,
    loads,
    usage_of,
)
from addon.wire.sse import MAX_EVENT, Event, SSEDecoder, SSETooLarge


class _ToolCallDraft:
    __slots__ = ("arguments", "id", "name")

    def __init__(self) -> None:
        self.id: str | None = None
        self.name = ""
        self.arguments: list[str] = []


class SSEToNDJSON:
    """Turns the bytes of an OpenAI chat/completions (or completions) SSE stream into NDJSON lines.

    `feed(piece)` takes any piece of the body, however it was cut, and returns the complete
    Ollama lines it yields; `finish()` returns the tail: the final `done` line, or an `{"error"}`
    line when the upstream stream ended before it was complete. Tool-call fragments are gathered
    by index and emitted whole once the upstream says the message is finished. Every line of a
    generate stream carries `context` (empty: there are no token ids) unless the request was
    `raw` (see `translate.response.chunk`).
    """

    content_type: str | None = NDJSON
    final_error_on_break = True

    def __init__(self, shape: Shape, model: str, clock: Clock, raw: bool = False, max_event: int = MAX_EVENT) -> None:
        self.shape: Shape = shape
        self.context = shape == "generate" and not raw
        self.model = model
        self.clock = clock
        self.warnings: list[str] = []
        self.finish_reason: str | None = None
        self.raw_usage: dict[str, Any] | None = None
        self.timings: dict[str, Any] | None = None
        self.ended = False  # a final line (done or error) was emitted
        self.aborted = False  # the upstream's stream broke a limit: the rest of it is not read
        self.error: str | None = None  # the message of the final error line, once emitted
        self._events = SSEDecoder(max_event)
        self._tool_calls: dict[int, _ToolCallDraft] = {}

    @property
    def usage(self) -> Usage | None:
        return usage_of(self.raw_usage)

    # -- input --------------------------------------------------------------------------------

    def feed(self, piece: bytes) -> bytes:
        """The lines completed by this piece of the upstream body (possibly none)."""
        if self.ended:
            return b""
        try:
            events = self._events.feed(piece)
        except SSETooLarge as e:
            self.aborted = True
            return self.fail(f"the upstream sent an invalid stream: {e}")
        return b"".join(self._each(events))

    def finish(self) -> bytes:
        """The tail of the stream, once the upstream body has ended."""
        out: list[bytes] = []
        if not self.ended:
            try:
                events = self._events.finish()
            except SSETooLarge as e:
                return self.fail(f"the upstream sent an invalid stream: {e}")
            out = self._each(events)
        if not self.ended:
            if self.finish_reason is not None:
                self._finish(out)
            else:
                out.append(self.fail("the upstream stream ended before the answer was complete"))
        return b"".join(out)

    def fail(self, message: str) -> bytes:
        """The final `{"error"}` line (nothing if a final line was already written)."""
        if self.ended:
            return b""
        self.ended = True
        self.error = message
        return dumps_line({"error": message})

    # -- events -------------------------------------------------------------------------------

    def _each(self, events: list[Event]) -> list[bytes]:
        out: list[bytes] = []
        for data, _ in events:
            self._dispatch(data, out)
            if self.ended:
                break
        return out

    def _dispatch(self, data: bytes, out: list[bytes]) -> None:
        if data == b"[DONE]":
            self._finish(out)
            return
        try:
            event = loads(data)
        except ValueError as e:
            why = invalid_json(data, e).removeprefix("the upstream sent ")
            out.append(self.fail(f"the upstream sent an invalid stream event: {why}"))
            return
        if not isinstance(event, dict):
            out.append(self.fail("the upstream sent an invalid stream event"))
        elif "error" in event:
            error = event["error"]
            message = error.get("message") if isinstance(error, dict) else error
            out.append(self.fail(f"upstream error: {message}"))
        else:
            try:
                self._event(cast("ChatCompletion", event), out)
            except InvalidUsage as e:
                out.append(self.fail(str(e)))
            except (AttributeError, TypeError, KeyError, IndexError, ValueError):  # a JSON object of another shape
                out.append(
                    self.fail(f"the upstream sent an invalid stream event: {data[:200].decode('utf-8', 'replace')!r}")
                )

    def _event(self, event: ChatCompletion, out: list[bytes]) -> None:
        if (usage := event.get("usage")) is not None:
            checked_usage(usage)  # Ollama's counts are Go ints: anything else is the upstream's fault
            self.raw_usage = usage
        if (timings := event.get("timings")) and isinstance(timings, dict):
            self.timings = cast("dict[str, Any]", timings)
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
            line = chunk(self.shape, self.model, text, thinking, None, self.context)
            if logprobs:
                line["logprobs"] = logprobs
            out.append(dumps_line(line))
        if reason := choice.get("finish_reason"):
            self.finish_reason = reason
            if self._tool_calls:
                out.append(dumps_line(chunk(self.shape, self.model, "", None, self._drain_tool_calls(), self.context)))

    def _tool_fragment(self, fragment: ToolCallDelta) -> None:
        self.clock.mark_token()
        index = fragment.get("index", len(self._tool_calls))
        draft = self._tool_calls.get(index)
        if draft is None:
            draft = self._tool_calls[index] = _ToolCallDraft()
        if call_id := fragment.get("id"):
            draft.id = call_id
        function = fragment.get("function") or {}
        if name := function.get("name"):
            draft.name += name
        if arguments := function.get("arguments"):
            draft.arguments.append(arguments)

    def _drain_tool_calls(self) -> list[OllamaToolCall]:
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

    def _finish(self, out: list[bytes]) -> None:
        if self._tool_calls:
            out.append(dumps_line(chunk(self.shape, self.model, "", None, self._drain_tool_calls(), self.context)))
        last = chunk(self.shape, self.model, "", None, None, self.context)
        final(last, self.finish_reason, metrics(self.clock, self.raw_usage, self.timings))
        out.append(dumps_line(last))
        self.ended = True


class EventSink(Protocol):
    """A translator of decoded OpenAI stream chunks into another API's stream events (one bytes
    object per event; never an empty one): `addon.translate.anthropic.MessagesStream`,
    `addon.translate.responses.ResponsesStream`."""

    ended: bool
    error: str | None  # the message of the final error event, once made

    def feed_event(self, chunk: dict[str, Any]) -> list[bytes]:
        """The events one decoded `chat.completion.chunk` yields."""

    def finish(self) -> list[bytes]:
        """The closing events once the upstream stream has ended (an error event if it was cut short)."""

    def fail(self, message: str) -> list[bytes]:
        """A final error event."""


class ChunkConverter:
    """A `StreamConverter` for any `EventSink`: the upstream's SSE decoded (by the one SSE
    decoder), each chunk handed to the sink, its events sent on as they come.

    `[DONE]` finishes the sink, an upstream error event or data that is no JSON object fails it,
    and so does an event over the decoder's cap; the token counts of the last `usage` seen are
    the exchange's. A body that ends with neither `[DONE]` nor a finish reason was cut short:
    the sink fails, whatever it would make of the end (a Responses stream would complete).
    """

    final_error_on_break = True

    def __init__(
        self, sink: EventSink, content_type: str | None = "text/event-stream; charset=utf-8", max_event: int = MAX_EVENT
    ) -> None:
        self.sink = sink
        self.content_type = content_type
        self.warnings: list[str] = []
        self.raw_usage: Any = None
        self.aborted = False  # the upstream's stream broke a limit: the rest of it is not read
        self.finished = False  # a chunk with a finish reason was seen
        self._events = SSEDecoder(max_event)

    @property
    def ended(self) -> bool:
        return self.sink.ended

    @property
    def error(self) -> str | None:
        return self.sink.error

    @property
    def usage(self) -> Usage | None:
        return usage_of(self.raw_usage)

    def feed(self, data: bytes) -> bytes:
        if self.sink.ended:
            return b""
        try:
            events = self._events.feed(data)
        except SSETooLarge as e:
            self.aborted = True
            return self.fail(f"the upstream sent an invalid stream: {e}")
        return b"".join(piece for event in events for piece in self._event(event.data))

    def finish(self) -> bytes:
        out: list[bytes] = []
        if not self.sink.ended:
            try:
                events = self._events.finish()
            except SSETooLarge as e:
                return self.fail(f"the upstream sent an invalid stream: {e}")
            out += [piece for event in events for piece in self._event(event.data)]
        if self.finished:
            out += self.sink.finish()
        else:
            out += self.sink.fail("the upstream stream ended before the answer was complete")
        return b"".join(out)

    def fail(self, message: str) -> bytes:
        return b"".join(self.sink.fail(message))

    def _event(self, data: bytes) -> list[bytes]:
        if self.sink.ended:
            return []
        if data == b"[DONE]":
            return self.sink.finish()
        try:
            chunk = loads(data)
        except ValueError:
            return self.sink.fail(
                f"the upstream sent an invalid stream event: {data[:200].decode('utf-8', 'replace')!r}"
            )
        if not isinstance(chunk, dict):
            return self.sink.fail("the upstream sent an invalid stream event")
        if "error" in chunk:
            error = chunk["error"]
            return self.sink.fail(f"upstream error: {error.get('message') if isinstance(error, dict) else error}")
        if isinstance(chunk.get("usage"), dict):
            self.raw_usage = chunk["usage"]
        choices = chunk.get("choices")
        if isinstance(choices, list) and choices and isinstance(choices[0], dict) and choices[0].get("finish_reason"):
            self.finished = True
        return self.sink.feed_event(chunk)
