"""OpenAI answers → Ollama answers: plain data in, plain data out, no I/O (but the clock).

`chunk` is the one builder of Ollama chat/generate objects: stream lines (`translate.stream`)
and whole answers (`chat_response`, `generate_response`) are all made by it, so they cannot
drift apart. `upstream_error` turns any upstream error answer into a status and one message.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any, Literal

from addon.translate.chunks import whole
from addon.translate.errors import read_upstream_error
from addon.wire.ollama import AssistantMessage, Chunk, Logprob, Metrics, OllamaToolCall, dumps_body
from addon.wire.openai import ChatCompletion, Choice, token_count

Shape = Literal["chat", "generate"]

# ---------------------------------------------------------------------------------------------
# Small shared pieces

_second: int = -1
_second_text = ""
_THREE = tuple(f"{n:03d}" for n in range(1000))  # milliseconds (and microseconds) as three digits
_TRIMMED = tuple(f"{n:03d}".rstrip("0") for n in range(1000))  # ... without trailing zeros


def rfc3339_now() -> str:
    """UTC now in Go's RFC3339Nano form: fractional seconds without trailing zeros, 'Z'."""
    global _second, _second_text
    second, micro = divmod(time.time_ns() // 1000, 1_000_000)
    if second != _second:  # formatting the date once a second is enough
        _second, _second_text = second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
    milli, micro = divmod(micro, 1000)  # (two table look-ups: cheaper than formatting and stripping zeros)
    if micro:
        return f"{_second_text}.{_THREE[milli]}{_TRIMMED[micro]}Z"
    return f"{_second_text}.{_TRIMMED[milli]}Z" if milli else f"{_second_text}Z"


def done_reason(finish_reason: str | None) -> str:
    """Ollama knows only 'stop' and 'length' for a finished generation."""
    return "length" if finish_reason == "length" else "stop"


@dataclass(slots=True)
class Clock:
    """Wall-clock marks of one exchange, in nanoseconds, for Ollama's duration metrics."""

    start_ns: int
    first_token_ns: int | None = None

    def mark_token(self) -> None:
        if self.first_token_ns is None:
            self.first_token_ns = time.time_ns()


def metrics(clock: Clock, usage: Any, timings: Any = None) -> Metrics:
    """The six metrics of a final Ollama chunk, as integers.

    Token counts come from the upstream's usage. Durations come from the upstream's own timings
    when it reports them (llama.cpp's `timings`), otherwise from what the proxy measured: prompt
    evaluation until the first token, evaluation from there to the end.
    """
    end = time.time_ns()
    total = max(end - clock.start_ns, 0)
    usage = usage if isinstance(usage, dict) else {}
    if (
        isinstance(timings, dict)
        and isinstance(timings.get("prompt_ms"), int | float)
        and isinstance(timings.get("predicted_ms"), int | float)
    ):
        prompt_duration = int(timings["prompt_ms"] * 1e6)
        eval_duration = int(timings["predicted_ms"] * 1e6)
    elif clock.first_token_ns is not None:
        prompt_duration = max(clock.first_token_ns - clock.start_ns, 0)
        eval_duration = max(end - clock.first_token_ns, 0)
    else:
        prompt_duration, eval_duration = 0, total
    return {
        "total_duration": total,
        "load_duration": 0,
        "prompt_eval_count": token_count(usage.get("prompt_tokens")),
        "prompt_eval_duration": prompt_duration,
        "eval_count": token_count(usage.get("completion_tokens")),
        "eval_duration": eval_duration,
    }


# ---------------------------------------------------------------------------------------------
# Tool calls, logprobs


def ollama_tool_call(index: int, call_id: str | None, name: str, arguments: dict[str, Any]) -> OllamaToolCall:
    call: OllamaToolCall = {"function": {"index": index, "name": name, "arguments": arguments}}
    if call_id:
        call = {"id": call_id, **call}
    return call


def logprobs_of(choice: Choice) -> list[Logprob] | None:
    """OpenAI `choices[].logprobs.content` → Ollama's `logprobs` list (same token/logprob/bytes)."""
    logprobs = choice.get("logprobs")
    if not isinstance(logprobs, dict) or not logprobs.get("content"):
        return None
    return [
        {
            "token": item.get("token", ""),
            "logprob": item.get("logprob", 0.0),
            "bytes": item.get("bytes"),
            "top_logprobs": [
                {"token": t.get("token", ""), "logprob": t.get("logprob", 0.0), "bytes": t.get("bytes")}
                for t in item.get("top_logprobs") or ()
            ],
        }
        for item in logprobs["content"] or ()
    ]


# ---------------------------------------------------------------------------------------------
# Answers


def chunk(
    shape: Shape,
    model: str,
    text: str,
    thinking: str | None = None,
    tool_calls: list[OllamaToolCall] | None = None,
    context: bool = False,
) -> Chunk:
    """An Ollama chat or generate object with `done: false`: a stream line, or the start of a whole answer.

    `context`: a generate object carries `"context": []` (Ollama sends token ids there, on its
    final answer, except for raw prompts; the proxy has none). Ollama puts it on the final line
    only; every line has it here, because the Vercel AI SDK's provider validates every line.
    """
    if shape == "chat":
        message: AssistantMessage = {"role": "assistant", "content": text}
        if thinking:
            message["thinking"] = thinking
        if tool_calls:
            message["tool_calls"] = tool_calls
        return {"model": model, "created_at": rfc3339_now(), "message": message, "done": False}
    out: Chunk = {"model": model, "created_at": rfc3339_now(), "response": text}
    if thinking:
        out["thinking"] = thinking
    if tool_calls:
        out["tool_calls"] = tool_calls
    out["done"] = False
    if context:
        out["context"] = []
    return out


def final(answer: Chunk, finish_reason: str | None, measured: Metrics) -> Chunk:
    """Make `answer` the last object of an exchange: `done`, `done_reason` and the metrics."""
    answer["done"] = True
    answer["done_reason"] = done_reason(finish_reason)
    if "context" in answer:
        answer["context"] = answer.pop("context")  # after done_reason, as in Ollama
    answer.update(measured)
    return answer


def whole_answer(
    shape: Shape, body: ChatCompletion, model: str, clock: Clock, raw: bool = False
) -> tuple[Chunk, list[str]]:
    """A whole chat.completion or text_completion → one Ollama /api/chat or /api/generate answer, read by
    the accumulator's rules (`translate.chunks.whole`; raises its `StreamFault` for what is no answer).

    A generate answer carries `context` unless the request was `raw`, as Ollama's does: an empty
    list, as the upstream has no token ids to give (clients such as the Vercel AI SDK provider
    require the field).
    """
    read = whole(body)
    calls = [ollama_tool_call(c.position, c.call_id, c.name, c.arguments) for c in read.calls]
    answer = final(
        chunk(shape, model, read.text + read.refusal, read.thinking or None, calls, shape == "generate" and not raw),
        read.finish.reason,
        metrics(clock, read.finish.usage, read.finish.timings),
    )
    if read.logprobs and (logprobs := logprobs_of({"logprobs": {"content": read.logprobs}})):
        answer["logprobs"] = logprobs
    return answer, [c.warning for c in read.calls if c.warning]


def chat_response(body: ChatCompletion, model: str, clock: Clock) -> tuple[Chunk, list[str]]:
    """A whole chat.completion → one Ollama /api/chat answer."""
    return whole_answer("chat", body, model, clock)


def generate_response(body: ChatCompletion, model: str, clock: Clock, raw: bool = False) -> tuple[Chunk, list[str]]:
    """A whole chat.completion or text_completion → one Ollama /api/generate answer."""
    return whole_answer("generate", body, model, clock, raw)


def gather(lines: list[bytes]) -> bytes:
    """NDJSON chunks → the single object a non-streaming Ollama answer is."""
    chunks = [json.loads(line) for line in lines if line.strip()]
    if chunks and "error" in chunks[-1]:
        return dumps_body(chunks[-1])
    whole = dict(chunks[-1]) if chunks else {}
    key = "message" if "message" in whole else "response"
    if key == "message":
        message: dict[str, Any] = {
            "role": "assistant",
            "content": "".join(c["message"].get("content", "") for c in chunks),
        }
        thinking = "".join(c["message"].get("thinking", "") for c in chunks)
        calls = [t for c in chunks for t in c["message"].get("tool_calls", ())]
        if thinking:
            message["thinking"] = thinking
        if calls:
            message["tool_calls"] = calls
        whole["message"] = message
    else:
        whole["response"] = "".join(c.get("response", "") for c in chunks)
    if logprobs := [item for c in chunks for item in c.get("logprobs", ())]:
        whole["logprobs"] = logprobs
    return dumps_body(whole)


# ---------------------------------------------------------------------------------------------
# Errors


def upstream_error(status: int, body: bytes, reason: str, model: str | None) -> tuple[int, str]:
    """An upstream error answer → (status, message) for an error answer in Ollama's shape (`translate.errors`
    reads it): an unknown model is Ollama's 404 `model 'x' not found`."""
    error = read_upstream_error(status, body)
    if model is not None and error.model_missing:
        return 404, f"model '{model}' not found"
    message = error.message or f"upstream answered {status} {reason}".rstrip()
    if error.key_refused():
        message = f"the upstream rejected the API key ({status}): {message}"
    return status, message
