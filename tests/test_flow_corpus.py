"""Issue "One translation core": every recorded upstream answer reaches every family the same way.

Each flow in flows/*/ whose upstream request went to `…/chat/completions` and was answered 200
(llama-server's and real api.openai.com answers; flows/README.md) is part of the cross-family
corpus: its raw response body (the SSE text of a stream, or the whole JSON) goes through the
proxy's own converters for Ollama `/api/chat` (and `/api/generate` where there are no calls),
Anthropic `/v1/messages` and OpenAI `/v1/responses` (tests/families.py, as tests/test_quirks.py),
streamed, and for a stream also assembled whole; each family's real SDK reads the result back.

What they must read comes from an independent oracle, not from the proxy's accumulator:
openai-python's own reading of the recorded body (`ChatCompletionStreamState` over the chunks its
client decodes from the SSE; the `ChatCompletion` model for a whole answer). The proxy's stated
rules (tests/fixtures/quirks/README.md) then say what each family carries: a refusal is text
where the family has no refusal of its own, calls make the finish `tool_calls` (but `length`),
`/api/generate` has no tools.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2
import openai
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mitmproxy import io
from openai.lib.streaming.chat import ChatCompletionStreamState

from tests.families import FAMILIES, read, streamed, strict, whole

FLOWS = Path(__file__).parent.parent / "flows"


@dataclass(frozen=True)
class Recorded:
    name: str  # <folder>/<scenario>
    body: bytes
    stream: bool


def recorded_answers() -> list[Recorded]:
    """Every 200 answer of a chat-completions upstream in flows/*/, in folder and file order."""
    found = []
    for path in sorted(FLOWS.glob("*/*.flow")):
        with path.open("rb") as file:
            for flow in io.FlowReader(file).stream():
                response = getattr(flow, "response", None)
                if response is None or response.status_code != 200:
                    continue
                if not flow.request.path.split("?")[0].endswith("/chat/completions"):
                    continue
                stream = response.headers.get("content-type", "").startswith("text/event-stream")
                found.append(Recorded(f"{path.parent.name}/{path.stem}", response.content or b"", stream))
    return found


ANSWERS = {r.name: r for r in recorded_answers()}


# ---------------------------------------------------------------------------------------------
# The oracle: openai-python's reading of the recorded body


def _client(body: bytes, stream: bool) -> openai.OpenAI:
    kind = "text/event-stream" if stream else "application/json"
    return openai.OpenAI(
        api_key="test",
        base_url="http://upstream.test/v1",
        max_retries=0,
        http_client=httpx2.Client(
            transport=httpx2.MockTransport(lambda _: httpx2.Response(200, content=body, headers={"content-type": kind}))
        ),
    )


@functools.cache
def oracle(recorded: Recorded) -> Any:
    """openai-python's completion: the stream accumulated by `ChatCompletionStreamState` (its
    snapshot: `get_final_completion` refuses a `length` finish), or the whole `ChatCompletion`."""
    client = _client(recorded.body, recorded.stream)
    ask: dict[str, Any] = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    if not recorded.stream:
        return client.chat.completions.create(**ask)
    state: ChatCompletionStreamState[Any] = ChatCompletionStreamState()
    for chunk in client.chat.completions.create(**ask, stream=True):
        state.handle_chunk(chunk)
    return state.current_completion_snapshot


def meaning(completion: Any) -> dict[str, Any]:
    """What the oracle's completion says: its first choice's text, refusal, thinking, calls and finish."""
    choice = next(c for c in completion.choices if c.index == 0)
    message = choice.message
    extra = message.model_extra or {}
    thinking = [extra[k] for k in ("reasoning_content", "reasoning") if isinstance(extra.get(k), str) and extra[k]]
    if len(set(thinking)) > 1:
        raise ValueError("two different reasonings: no family can carry both")
    calls = []
    for call in message.tool_calls or ():
        arguments = strict(call.function.arguments) if call.function.arguments else {}
        if not isinstance(arguments, dict):
            raise ValueError(f"arguments that are no JSON object: {call.function.arguments!r}")
        calls.append([call.function.name, arguments])
    return {
        "text": message.content or "",
        "refusal": message.refusal or "",
        "thinking": thinking[0] if thinking else "",
        "calls": calls,
        "finish": choice.finish_reason,
    }


def cannot_carry(recorded: Recorded) -> str | None:
    """Why no family can carry this answer as an answer, if so (it is then skipped, with this reason)."""
    try:
        meaning(oracle(recorded))
    except openai.APIError as e:
        return f"the upstream sent an error in a 200 answer ({e.message}): every family answers an error"
    except ValueError as e:
        return f"the proxy's own rule decides, not the oracle: {e}"
    return None


def expected_for(recorded: Recorded, family: str) -> dict[str, Any]:
    """What `family`'s SDK must read: the oracle's meaning under the proxy's stated rules."""
    expected = meaning(oracle(recorded))
    if family != "responses":  # only Responses has a refusal part: elsewhere a refusal is text
        expected["text"] += expected["refusal"]
        expected["refusal"] = ""
    if family == "generate":
        expected["calls"] = []
    finish = expected["finish"]
    if expected["calls"] and finish not in ("length", "content_filter"):
        finish = "tool_calls"
    elif not expected["calls"] and finish == "tool_calls":
        finish = "stop"
    expected["finish"] = finish
    return expected


def has_calls(recorded: Recorded) -> bool:
    return bool(meaning(oracle(recorded))["calls"])


def cases(stream: bool) -> list[Any]:
    found = []
    for name, recorded in ANSWERS.items():
        if recorded.stream != stream:
            continue
        reason = cannot_carry(recorded)
        for family in FAMILIES:
            if family == "generate" and reason is None and has_calls(recorded):
                continue  # /api/generate has no tools
            marks = [pytest.mark.skip(reason=reason)] if reason else []
            found.append(pytest.param(name, family, id=f"{name}-{family}", marks=marks))
    return found


# ---------------------------------------------------------------------------------------------
# The tests


@pytest.mark.parametrize(("name", "family"), cases(stream=True))
def test_every_family_reads_a_recorded_stream_as_openai_python_does(name: str, family: str) -> None:
    recorded = ANSWERS[name]
    assert read(family, streamed(family, recorded.body), stream=True) == expected_for(recorded, family)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from([c.values for c in cases(stream=True) if not c.marks]),
    st.lists(st.integers(min_value=0, max_value=20000), min_size=1, max_size=25),
)
def test_any_chunking_of_a_recorded_stream_gives_the_same_answer(case: tuple[str, str], cuts: list[int]) -> None:
    name, family = case
    recorded = ANSWERS[name]
    assert read(family, streamed(family, recorded.body, cuts), stream=True) == expected_for(recorded, family)


@pytest.mark.parametrize(("name", "family"), cases(stream=True))
def test_every_family_reads_a_recorded_stream_assembled_whole(name: str, family: str) -> None:
    """The stream's events as one answer (openai-python's accumulation of them) through the whole converters."""
    recorded = ANSWERS[name]
    assembled = oracle(recorded).to_dict()
    assert read(family, whole(family, assembled), stream=False) == expected_for(recorded, family)


@pytest.mark.parametrize(("name", "family"), cases(stream=False))
def test_every_family_reads_a_recorded_whole_answer_as_openai_python_does(name: str, family: str) -> None:
    recorded = ANSWERS[name]
    body = json.loads(recorded.body)  # lenient, as the proxy reads an upstream's JSON
    assert read(family, whole(family, body), stream=False) == expected_for(recorded, family)


def test_the_corpus_holds_every_recorded_answer() -> None:
    folders = {name.split("/")[0] for name in ANSWERS}
    assert folders == {p.name for p in FLOWS.iterdir() if p.is_dir()}
    assert sum(r.stream for r in ANSWERS.values()) >= 20 and sum(not r.stream for r in ANSWERS.values()) >= 30


def test_llama_server_streams_nothing_of_a_tool_call_cut_by_stop_that_whole_it_answers() -> None:
    """The recorded quirk (collector/scenarios.py `chat-tools-stop-newline`): tools and stop ["\\n"];
    llama-server's parser keeps a beginning `<tool_call>` back while streaming and drops it at the
    stop, while the same request whole answers it as text. Both are carried as they were sent."""
    whole_answer = meaning(oracle(ANSWERS["llama-server/chat-tools-stop-newline"]))
    stream_answer = meaning(oracle(ANSWERS["llama-server/chat-tools-stop-newline-stream"]))
    assert (whole_answer["text"], whole_answer["calls"], whole_answer["finish"]) == ("<tool_call>", [], "stop")
    assert (stream_answer["text"], stream_answer["calls"], stream_answer["finish"]) == ("", [], "stop")


def test_an_answer_no_family_can_carry_is_skipped_with_its_reason() -> None:
    error = Recorded("x/error", b'data: {"error": {"message": "overloaded"}}\n\n', stream=True)
    nan = Recorded(
        "x/nan",
        b'{"choices": [{"index": 0, "finish_reason": "tool_calls", "message": {"role": "assistant", "tool_calls":'
        b' [{"id": "c", "type": "function", "function": {"name": "f", "arguments": "{\\"a\\": NaN}"}}]}}]}',
        stream=False,
    )
    assert "error in a 200 answer (overloaded)" in (cannot_carry(error) or "")
    assert "the proxy's own rule decides" in (cannot_carry(nan) or "")
