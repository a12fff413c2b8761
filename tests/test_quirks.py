"""Issue 20: the same upstream answer reaches every API family the same way.

The corpus in tests/fixtures/quirks/ (README there: which server does what) holds, per quirk of
real servers, a stream (`.sse`) and a whole answer (`.json`), and what they mean
(`expected.json`: text, thinking, tool calls by name and parsed arguments, finish). Each is
converted by the proxy's own converters for Ollama `/api/chat` (and `/api/generate` where there
are no calls), Anthropic `/v1/messages` and OpenAI `/v1/responses`, streamed and whole, and read
back by each family's real SDK (ollama, anthropic, openai), whose reading must give the expected
answer (the converters and readers: tests/families.py). Streams are also cut into pieces every which way (hypothesis): the answer must not change.
Bytes no strict JSON parser reads (NaN, Infinity) must never reach a client.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.families import FAMILIES, converter, read, streamed, whole

__all__ = ["FAMILIES", "QUIRKS", "expected_for", "read", "sse_body"]  # tests/test_e2e_quirks.py reads these

QUIRKS = Path(__file__).parent / "fixtures" / "quirks"
EXPECTED: dict[str, Any] = json.loads((QUIRKS / "expected.json").read_text())
NAMES = sorted(EXPECTED)


def sse_body(name: str) -> bytes:
    return (QUIRKS / f"{name}.sse").read_bytes()


def whole_body(name: str) -> Any:
    return json.loads((QUIRKS / f"{name}.json").read_text())  # lenient: the upstream may send NaN


def has_calls(name: str) -> bool:
    return bool(EXPECTED[name]["expected"]["calls"])


def expected_for(name: str, family: str) -> dict[str, Any]:
    expected = {"refusal": "", **EXPECTED[name]["expected"]}  # no quirk is a refusal
    if family == "generate":
        expected["calls"] = []  # generate has no tools: its text, thinking and finish only
        if expected["finish"] == "tool_calls":
            expected["finish"] = "stop"
    return expected


def families_for(name: str) -> list[str]:
    return [f for f in FAMILIES if not (f == "generate" and has_calls(name))]


CASES = [(name, family) for name in NAMES for family in families_for(name)]


@pytest.mark.parametrize(("name", "family"), CASES)
def test_every_family_reads_the_same_answer_from_a_stream(name: str, family: str) -> None:
    assert read(family, streamed(family, sse_body(name)), stream=True) == expected_for(name, family)


@pytest.mark.parametrize(("name", "family"), CASES)
def test_every_family_reads_the_same_answer_from_a_whole_answer(name: str, family: str) -> None:
    assert read(family, whole(family, whole_body(name)), stream=False) == expected_for(name, family)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from(CASES),
    st.lists(st.integers(min_value=0, max_value=4000), min_size=1, max_size=25),
)
def test_any_chunking_of_a_stream_gives_the_same_answer(case: tuple[str, str], cuts: list[int]) -> None:
    name, family = case
    assert read(family, streamed(family, sse_body(name), cuts), stream=True) == expected_for(name, family)


def test_the_corpus_covers_what_the_issue_names() -> None:
    named = {
        "arguments-object",
        "fragments-without-index",
        "parallel-interleaved",
        "whole-calls-in-one-chunk",
        "repeated-id-and-name",
        "call-without-id",
        "empty-and-null-content",
        "reasoning-content",
        "reasoning-field",
        "finish-with-content",
        "usage-absent",
        "no-done",
        "tool-calls-finish-without-calls",
        "calls-with-finish-stop",
        "keep-alives",
        "nan-in-arguments",
        "other-choices",
    }
    assert named <= set(NAMES)
    for name in NAMES:
        assert EXPECTED[name]["source"], f"{name}: say which servers do this"


@pytest.mark.parametrize("family", FAMILIES)
def test_a_stream_cut_short_is_an_error_in_every_family(family: str) -> None:
    body = sse_body("plain")
    cut = body[: body.index(b'"finish_reason": "stop"') - 200]
    cut = cut[: cut.rindex(b"\n\n") + 2]
    stream = converter(family)
    out = stream.feed(cut) + stream.finish()
    assert stream.ended and stream.error == "the upstream stream ended before the answer was complete"
    assert b"ended before the answer was complete" in out
