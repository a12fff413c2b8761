"""The one accumulator of upstream chat completions: chunks in, typed family-neutral deltas out.

Every family that answers from an OpenAI chat-completions upstream (Ollama `/api/chat` and
`/api/generate`, Anthropic `/v1/messages`, OpenAI `/v1/responses`) renders from these deltas,
streamed (`Accumulator.feed` per decoded chunk, `Accumulator.end` at the end) and whole
(`whole`: the message is fed as one chunk, so the same rules apply). This module holds the
one set of rules for what real servers send:

- choices: only `choices[0]` (the proxy never asks for n > 1; a choice with another `index` is
  ignored); a chunk without choices (`choices: []` keep-alives, a usage chunk) carries no delta;
- text: `content` (a string, or a list of text parts), `refusal` as a refusal; `null` and `""`
  are nothing; reasoning in `reasoning_content` (DeepSeek, vLLM, llama.cpp) or else `reasoning`
  (OpenRouter, Groq, Ollama's /v1), never both; completions' `text`;
- tool calls, gathered into calls by position (the order they first appear): a fragment names
  its call by `index`; a new `id` at a known index is a new call (servers that number every call
  0); without `index`, by `id`, else the last call — unless it carries a name and the last call's
  arguments are already a whole JSON object; a name or id repeated on every fragment is kept
  once (a name in pieces before the arguments is joined); `arguments` as a JSON object (instead
  of JSON text) is that object's text; a call starts (`ToolStart`) once it has a name and its
  first argument piece, or when it is done; it is done (`ToolDone`) at the finish, or as soon as
  another call or text begins after it while its arguments are a whole JSON object (pieces for
  it after that are dropped); calls are numbered in the order they began;
- numbers no JSON parser reads (`NaN`, `Infinity`, `-Infinity`) in tool-call arguments become
  `null`, as JavaScript's JSON.stringify writes them, piece by piece as they stream;
- finish: `[DONE]` ends the answer; a body that ends without it ends it only if a finish reason
  came (else it was cut short); the reason is one of stop, length, tool_calls, content_filter:
  `tool_calls` only when there are calls (calls with finish `stop` are `tool_calls`); usage from
  any chunk, the last one wins (a final chunk with empty choices, the last choice chunk, or none);
- what no rule reads ends the answer with an error (`StreamFault`), in every family alike: an
  `error` member, an event that is no JSON object, `choices` or a delta or a call of another
  shape, content that is no text, a usage count that is no integer in [0, 2^63).

The driver reads events into it through `translate.reader.ChunkReader` (with a fast path for the
common event) and hands the deltas to a family's renderer (`translate.stream.ChunkStream`).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from addon.wire.openai import InvalidUsage, checked_usage, loads

# ---------------------------------------------------------------------------------------------
# The deltas


class Text(NamedTuple):
    text: str


class Refusal(NamedTuple):
    text: str


class Thinking(NamedTuple):
    text: str


class Logprobs(NamedTuple):
    """A choice's `logprobs.content` items, as the upstream sent them (only Ollama shows them)."""

    items: list[Any]


class ToolStart(NamedTuple):
    position: int
    call_id: str | None
    name: str


class ToolArguments(NamedTuple):
    position: int
    piece: str


class ToolDone(NamedTuple):
    position: int
    call_id: str | None
    name: str
    arguments_text: str  # every piece, joined
    arguments: dict[str, Any]  # parsed; {} when the text is no JSON object (then `warning` says so)
    warning: str | None


class Finish(NamedTuple):
    reason: str  # stop, length, tool_calls or content_filter
    matched_stop: str | None  # the stop string that ended the answer, where the upstream says (vLLM)
    usage: dict[str, Any] | None  # the upstream's last usage, its counts checked
    timings: dict[str, Any] | None  # llama.cpp's own measurements


type Delta = Text | Refusal | Thinking | Logprobs | ToolStart | ToolArguments | ToolDone | Finish


class StreamFault(ValueError):
    """What ends an answer with an error: an error event, an event that is no chunk, invalid usage."""


# ---------------------------------------------------------------------------------------------
# Tool-call arguments: NaN and Infinity out, as the pieces stream

_STRING_BODY = re.compile(r'[^"\\]*(?:\\.[^"\\]*)*', re.S)
_OUTSIDE = re.compile(r'"|-?[A-Za-z]+|-\Z')
_NONFINITE = frozenset(("NaN", "Infinity", "-NaN", "-Infinity"))
_PREFIXES = frozenset(word[:n] for word in _NONFINITE for n in range(1, len(word)))


class _Arguments:
    """The argument text of one call: sanitized piece by piece (a token cut between two pieces is
    held until the next one), all pieces kept for `ToolDone`."""

    __slots__ = ("checked", "held", "in_string", "object", "parts")

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.in_string = False
        self.held = ""
        self.object: Any = None  # arguments sent as a JSON object (not text): that object
        self.checked = (0, False)  # (pieces, whole): the last answer of `complete`

    def feed(self, piece: str) -> str:
        text = self.held + piece if self.held else piece
        self.held = ""
        out: list[str] = []
        position, end = 0, len(text)
        while position < end:
            if self.in_string:
                stop = _STRING_BODY.match(text, position).end()  # type: ignore[union-attr]
                if stop == end:
                    out.append(text[position:])
                    break
                if text[stop] == '"':
                    out.append(text[position : stop + 1])
                    self.in_string = False
                    position = stop + 1
                else:  # a backslash ends the piece: its escape continues in the next one
                    out.append(text[position:stop])
                    self.held = text[stop:]
                    break
                continue
            found = _OUTSIDE.search(text, position)
            if found is None:
                out.append(text[position:])
                break
            out.append(text[position : found.start()])
            token = found.group()
            position = found.end()
            if token == '"':
                out.append(token)
                self.in_string = True
            elif position == end and token in _PREFIXES:
                self.held = token
            else:
                out.append("null" if token in _NONFINITE else token)
        sanitized = "".join(out)
        if sanitized:
            self.parts.append(sanitized)
        return sanitized

    def close(self) -> str:
        """What was held at the end (a cut token that never completed), as it is."""
        held, self.held = self.held, ""
        if held:
            self.parts.append(held)
        return held

    def text(self) -> str:
        return "".join(self.parts)

    def complete(self) -> bool:
        """Whether the text so far is one whole JSON object (parsed once per new piece)."""
        if self.checked[0] != len(self.parts):
            try:
                whole = isinstance(loads(self.text() + self.held), dict)
            except (ValueError, RecursionError):
                whole = False
            self.checked = (len(self.parts), whole)
        return self.checked[1]


def parse_arguments(text: str) -> tuple[dict[str, Any], str | None]:
    """Tool-call argument text → an object (strictly), or {} and a warning when it is none."""
    if not text:
        return {}, None
    try:
        value = loads(text)
    except (ValueError, RecursionError):
        value = None
    if isinstance(value, dict):
        return value, None
    return {}, f"tool call arguments are not a JSON object and were replaced by {{}}: {text[:200]!r}"


# ---------------------------------------------------------------------------------------------
# The accumulator


class _Call:
    __slots__ = ("arguments", "call_id", "done", "index", "name", "position", "started")

    def __init__(self, position: int, index: Any) -> None:
        self.position = position
        self.index = index
        self.call_id: str | None = None
        self.name = ""
        self.arguments = _Arguments()
        self.started = False
        self.done = False


_DONE_REASONS = {"length": "length", "content_filter": "content_filter"}


def _text_of(value: Any) -> str:
    """Content as text: a string, or the text of a list of parts (some servers send parts)."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return "".join(p["text"] for p in value if isinstance(p, dict) and isinstance(p.get("text"), str))
    return ""


class Accumulator:
    """Chat-completion chunks → deltas, for one answer. `feed(chunk)` per chunk, `end()` once."""

    __slots__ = ("_by_index", "_calls", "finish_reason", "matched_stop", "open_calls", "timings", "usage")

    def __init__(self) -> None:
        self._calls: list[_Call] = []
        self.open_calls: list[_Call] = []  # calls not done yet (text that comes now may close some)
        self._by_index: dict[Any, _Call] = {}
        self.finish_reason: str | None = None  # the upstream's own word, once it came
        self.matched_stop: str | None = None
        self.usage: dict[str, Any] | None = None
        self.timings: dict[str, Any] | None = None

    def feed(self, chunk: Any) -> list[Delta]:
        """The deltas of one decoded chunk. Raises `StreamFault` for what is no chunk."""
        if not isinstance(chunk, dict):
            raise StreamFault("the upstream sent an invalid stream event")
        if chunk.get("error") is not None:  # ("error": null is none: some servers send it in every chunk)
            error = chunk["error"]
            message = error.get("message") if isinstance(error, dict) else error
            raise StreamFault(f"upstream error: {str(message or json.dumps(error))[:500]}")
        if (usage := chunk.get("usage")) is not None:
            try:
                checked_usage(usage)
            except InvalidUsage as e:
                raise StreamFault(str(e)) from None
            self.usage = usage
        if isinstance(timings := chunk.get("timings"), dict):
            self.timings = timings
        choices = chunk.get("choices")
        if not choices:
            return []
        if not isinstance(choices, list):
            raise StreamFault("the upstream sent choices that are not a list")
        if not isinstance(choice := choices[0], dict):
            raise StreamFault("the upstream sent a choice that is not an object")
        if choice.get("index") not in (0, None):  # n > 1 is never asked for: the first choice only
            choice = next((c for c in choices if isinstance(c, dict) and c.get("index") in (0, None)), None)
            if choice is None:
                return []
        deltas: list[Delta] = []
        delta = choice.get("delta")
        if delta is None:
            delta = choice.get("message")  # a whole answer fed as a chunk, or a server that says `message`
        if isinstance(delta, dict):
            if self.open_calls and (delta.get("content") or delta.get("reasoning_content") or delta.get("reasoning")):
                self._close_whole(deltas)
            if thinking := delta.get("reasoning_content") or delta.get("reasoning"):
                if isinstance(thinking, str):
                    deltas.append(Thinking(thinking))
            if content := delta.get("content"):
                if not isinstance(content, str | list):
                    raise StreamFault("the upstream sent content that is not text")
                if text := _text_of(content):
                    deltas.append(Text(text))
            if (refusal := delta.get("refusal")) and isinstance(refusal, str):
                deltas.append(Refusal(refusal))
            if calls := delta.get("tool_calls"):
                if not isinstance(calls, list):
                    raise StreamFault("the upstream sent tool_calls that are not a list")
                for fragment in calls:
                    self._fragment(fragment, deltas)
        elif delta is not None:
            raise StreamFault("the upstream sent a delta that is not an object")
        if (completion := choice.get("text")) and isinstance(completion, str):
            deltas.append(Text(completion))
        if (logprobs := choice.get("logprobs")) and isinstance(logprobs, dict):
            if (items := logprobs.get("content")) and isinstance(items, list):
                deltas.append(Logprobs(items))
        if (reason := choice.get("finish_reason")) and isinstance(reason, str):
            self.finish_reason = reason
            matched = choice.get("stop_reason")
            self.matched_stop = matched if reason == "stop" and isinstance(matched, str) and matched else None
            self._close_calls(deltas)
        return deltas

    def end(self) -> list[Delta]:
        """The deltas that close the answer: calls still open, then `Finish`."""
        deltas: list[Delta] = []
        self._close_calls(deltas)
        reason = self.finish_reason
        if self._calls and reason != "length" and reason != "content_filter":
            normal = "tool_calls"
        else:
            normal = _DONE_REASONS.get(reason or "", "stop")
        deltas.append(Finish(normal, self.matched_stop, self.usage, self.timings))
        return deltas

    @property
    def finished(self) -> bool:
        """Whether a finish reason came: a body that ends now is a whole answer."""
        return self.finish_reason is not None

    # -- tool calls

    def _fragment(self, fragment: Any, deltas: list[Delta]) -> None:
        if not isinstance(fragment, dict):
            raise StreamFault("the upstream sent a tool call that is not an object")
        function = fragment.get("function")
        if function is None:
            function = {}
        elif not isinstance(function, dict):
            raise StreamFault("the upstream sent a tool call function that is not an object")
        call_id = fragment.get("id")
        call_id = call_id if isinstance(call_id, str) and call_id else None
        name = function.get("name")
        name = name if isinstance(name, str) and name else None
        known = len(self._calls)
        call = self._call_of(fragment.get("index"), call_id, name)
        if len(self._calls) > known and len(self.open_calls) > 1:
            self._close_whole(deltas)
        if call_id and call.call_id is None:
            call.call_id = call_id
        arguments = function.get("arguments")
        if name and name != call.name and not call.started:
            if not call.name:
                call.name = name
            elif not call.arguments.parts:
                call.name += name  # a name sent in pieces (before its arguments)
        if arguments is None or arguments == "":
            return
        if not isinstance(arguments, str):
            if call.arguments.object is not None or call.arguments.parts:
                return  # the same object repeated on every fragment (or pieces and an object): the first stays
            call.arguments.object = arguments
            arguments = json.dumps(arguments, ensure_ascii=False, separators=(",", ":"))
        elif call.arguments.object is not None:
            return
        piece = call.arguments.feed(arguments)
        if call.done:
            return  # pieces after the call was closed: kept out of what was already given
        if not call.started and call.name:
            self._start(call, deltas)
        elif call.started and piece:
            deltas.append(ToolArguments(call.position, piece))

    def _call_of(self, index: Any, call_id: str | None, name: str | None) -> _Call:
        if isinstance(index, int) and not isinstance(index, bool):
            call = self._by_index.get(index)
            if call is not None and not (call_id and call.call_id and call_id != call.call_id):
                return call
        else:
            index = None
            if call_id:
                call = next((c for c in reversed(self._calls) if c.call_id == call_id), None)
                if call is not None:
                    return call
            elif self._calls:
                last = self._calls[-1]
                if not (name and last.name and last.arguments.complete()):
                    return last
        call = _Call(len(self._calls), index)
        self._calls.append(call)
        self.open_calls.append(call)
        if index is not None:
            self._by_index[index] = call
        return call

    def _start(self, call: _Call, deltas: list[Delta]) -> None:
        call.started = True
        deltas.append(ToolStart(call.position, call.call_id, call.name))
        if text := call.arguments.text():
            deltas.append(ToolArguments(call.position, text))

    def _close_whole(self, deltas: list[Delta]) -> None:
        """Something else began: the calls whose arguments are whole are done (their pieces are over)."""
        for call in self.open_calls:
            if call.name and call.arguments.parts and call.arguments.complete():
                self._close(call, deltas)
        self.open_calls = [call for call in self.open_calls if not call.done]

    def _close_calls(self, deltas: list[Delta]) -> None:
        for call in self.open_calls:
            self._close(call, deltas)
        self.open_calls = []

    def _close(self, call: _Call, deltas: list[Delta]) -> None:
        if not call.started:
            self._start(call, deltas)
        if held := call.arguments.close():
            deltas.append(ToolArguments(call.position, held))
        call.done = True
        text = call.arguments.text()
        arguments, warning = parse_arguments(text)
        deltas.append(ToolDone(call.position, call.call_id, call.name, text, arguments, warning))


# ---------------------------------------------------------------------------------------------
# Whole answers: the same rules, the message fed as one chunk


@dataclass(slots=True)
class Whole:
    """A whole chat completion, read by the accumulator's rules."""

    finish: Finish
    text: str = ""
    refusal: str = ""
    thinking: str = ""
    calls: list[ToolDone] = field(default_factory=list)
    logprobs: list[Any] = field(default_factory=list)


def whole(answer: Any) -> Whole:
    """A whole `chat.completion` (or `text_completion`) → `Whole`. Raises `StreamFault` for an answer that is
    none: an `error` in it, no choices, a first choice without a message or text, invalid usage."""
    if not isinstance(answer, dict):
        raise StreamFault("the upstream's answer is not a JSON object")
    if answer.get("error") is not None:
        Accumulator().feed(answer)  # raises with the upstream's own words
    choices = answer.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise StreamFault(f"the upstream answered 200 without an answer (no 'choices'): {json.dumps(answer)[:200]}")
    choice = choices[0]
    message = choice.get("message")
    if not isinstance(message, dict):
        if "text" not in choice:
            raise StreamFault("the upstream's answer is not a chat completion (choices[0] has no message)")
        message = {}
    calls = message.get("tool_calls")
    if isinstance(calls, list):  # a whole message's calls are whole: each its own, in order
        message = {
            **message,
            "tool_calls": [{**c, "index": i} if isinstance(c, dict) else c for i, c in enumerate(calls)],
        }
    chunks = Accumulator()
    deltas = chunks.feed({**answer, "choices": [{**choice, "index": 0, "delta": message}]}) + chunks.end()
    finish = deltas.pop()
    assert isinstance(finish, Finish)
    text: list[str] = []
    refusal: list[str] = []
    thinking: list[str] = []
    out = Whole(finish)
    for delta in deltas:
        match delta:
            case Text():
                text.append(delta.text)
            case Refusal():
                refusal.append(delta.text)
            case Thinking():
                thinking.append(delta.text)
            case ToolDone():
                out.calls.append(delta)
            case Logprobs():
                out.logprobs += delta.items
    out.text, out.refusal, out.thinking = "".join(text), "".join(refusal), "".join(thinking)
    return out
