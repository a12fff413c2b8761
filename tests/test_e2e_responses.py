"""End to end: the official `openai` SDK → a real mitmdump with the addon (/v1/responses, /v1/audio/transcriptions)
→ the loopback upstream.

Answers are validated against the SDK's own types (`Response`, `ResponseStreamEvent`), not by field
presence; what went upstream is checked on the fake upstream.
"""

from __future__ import annotations

import base64
import json

import httpx
import openai
import pydantic
import pytest
from openai.types.responses import Response, ResponseStreamEvent

from harness import TEST_KEY
from harness.mitmdump import Mitmdump
from harness.upstream import UpstreamServer

pytestmark = pytest.mark.e2e

STREAM_EVENT = pydantic.TypeAdapter(ResponseStreamEvent)
PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\0" * 16).decode()
WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather in a city",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
        "additionalProperties": False,
    },
    "strict": True,
}


@pytest.fixture
def client(proxy: Mitmdump) -> openai.OpenAI:
    return openai.OpenAI(base_url=proxy.url + "/v1", api_key="ollama", max_retries=0, timeout=20)


def whole(client: openai.OpenAI, **body) -> Response:
    """A non-streamed answer, validated as the SDK's Response."""
    raw = client.responses.with_raw_response.create(**body)
    return Response.model_validate(raw.http_response.json())


def raw_events(proxy: Mitmdump, body: dict, path: str = "/v1/responses") -> list[dict]:
    """The SSE events of a streamed answer, each validated as the SDK's ResponseStreamEvent."""
    response = httpx.post(proxy.url + path, json={**body, "stream": True}, timeout=20)
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
    events = []
    for block in response.text.split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        if "data" in fields:
            data = json.loads(fields["data"])
            assert data["type"] == fields["event"]
            STREAM_EVENT.validate_python(data)
            events.append(data)
    assert [e["sequence_number"] for e in events if "sequence_number" in e] == list(range(len(events)))
    return events


def test_a_whole_answer(client: openai.OpenAI, upstream: UpstreamServer) -> None:
    response = whole(client, model="gpt-4o-mini", input="hello there", instructions="be brief")
    assert response.model == "gpt-4o-mini" and response.status == "completed" and response.id.startswith("resp_")
    assert response.output_text == "echo: hello there"
    assert (response.usage.input_tokens, response.usage.output_tokens, response.usage.total_tokens) == (7, 3, 10)
    sent = upstream.fake.requests[-1]
    assert sent.path == "/v1/chat/completions" and sent.headers["authorization"] == f"Bearer {TEST_KEY}"
    assert sent.body == {
        "model": "gpt-4o-mini",
        "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello there"}],
    }


def test_a_stream_event_by_event(client: openai.OpenAI, proxy: Mitmdump) -> None:
    events = raw_events(proxy, {"model": "gpt-4o-mini", "input": "one two"})
    assert [e["type"] for e in events] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        *["response.output_text.delta"] * 3,
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert events[-1]["response"]["output"][0]["content"][0]["text"] == "echo: one two"
    with client.responses.stream(model="gpt-4o-mini", input="three four") as stream:
        deltas = [e.delta for e in stream if e.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert "".join(deltas) == final.output_text == "echo: three four" and final.usage.output_tokens == 3


@pytest.mark.parametrize("stream", [False, True])
def test_a_tool_round_trip(client: openai.OpenAI, upstream: UpstreamServer, stream: bool) -> None:
    upstream.fake.queue_reply("", [{"name": "get_weather", "arguments": {"city": "Paris"}}])
    upstream.fake.queue_reply("18 degrees in Paris.")
    ask = [{"role": "user", "content": "weather in Paris?"}]
    if stream:
        with client.responses.stream(model="gpt-4o-mini", input=ask, tools=[WEATHER]) as events:
            first = events.get_final_response()
    else:
        first = whole(client, model="gpt-4o-mini", input=ask, tools=[WEATHER], tool_choice="auto")
    calls = [item for item in first.output if item.type == "function_call"]
    assert len(calls) == 1 and calls[0].name == "get_weather" and json.loads(calls[0].arguments) == {"city": "Paris"}
    assert upstream.fake.requests[-1].body["tools"] == [
        {"type": "function", "function": {k: v for k, v in WEATHER.items() if k != "type"}}
    ]
    history = [
        *ask,
        calls[0].model_dump(exclude_none=True),
        {"type": "function_call_output", "call_id": calls[0].call_id, "output": "18 degrees"},
    ]
    second = whole(client, model="gpt-4o-mini", input=history, tools=[WEATHER])
    assert second.output_text == "18 degrees in Paris."
    sent = upstream.fake.requests[-1].body["messages"]
    assert sent[-2]["tool_calls"][0]["id"] == calls[0].call_id
    assert sent[-1] == {"role": "tool", "tool_call_id": calls[0].call_id, "content": "18 degrees"}


def test_images(client: openai.OpenAI, upstream: UpstreamServer) -> None:
    content = [
        {"type": "input_text", "text": "what is it?"},
        {"type": "input_image", "image_url": f"data:image/png;base64,{PNG}", "detail": "low"},
    ]
    response = whole(client, model="gpt-4o-mini", input=[{"role": "user", "content": content}])
    assert response.output_text == "echo: what is it?"
    assert upstream.fake.requests[-1].body["messages"][0]["content"] == [
        {"type": "text", "text": "what is it?"},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}", "detail": "low"}},
    ]


def test_reasoning(client: openai.OpenAI, proxy: Mitmdump, upstream: UpstreamServer) -> None:
    upstream.fake.queue_reply("42", thinking="six times seven")
    response = whole(client, model="o4-mini", input="6*7?", reasoning={"effort": "high"}, max_output_tokens=500)
    assert [item.type for item in response.output] == ["reasoning", "message"]
    assert response.output[0].summary[0].text == "six times seven" and response.output_text == "42"
    sent = upstream.fake.requests[-1].body
    assert sent["reasoning_effort"] == "high" and sent["max_completion_tokens"] == 500
    upstream.fake.queue_reply("42", thinking="six times seven")
    types = [
        e["type"] for e in raw_events(proxy, {"model": "o4-mini", "input": "6*7?", "reasoning": {"effort": "low"}})
    ]
    assert "response.reasoning_summary_text.delta" in types and types[-1] == "response.completed"
    whole(client, model="gpt-4o-mini", input="6*7?", reasoning={"effort": "high"})
    assert "reasoning_effort" not in upstream.fake.requests[-1].body, "gpt-4o-mini cannot think: not sent"


class Colour(pydantic.BaseModel):
    colour: str


def test_structured_output(client: openai.OpenAI, upstream: UpstreamServer) -> None:
    upstream.fake.queue_reply('{"colour": "blue"}')
    parsed = client.responses.parse(model="gpt-4o-mini", input="a colour", text_format=Colour)
    assert parsed.output_parsed == Colour(colour="blue")
    fmt = upstream.fake.requests[-1].body["response_format"]
    assert fmt["type"] == "json_schema" and fmt["json_schema"]["name"] == "Colour"
    assert fmt["json_schema"]["strict"] is True and fmt["json_schema"]["schema"]["required"] == ["colour"]


def test_errors(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as missing:
        client.responses.create(model="missing-model", input="hi")
    assert missing.value.body["code"] == "model_not_found"
    with pytest.raises(openai.NotFoundError):
        client.responses.create(model="missing-model", input="hi", stream=True)
    with pytest.raises(openai.RateLimitError) as limited:
        client.responses.create(model="fault:429", input="hi")
    assert limited.value.response.headers["retry-after"] == "7"
    with pytest.raises(openai.InternalServerError):
        client.responses.create(model="fault:500", input="hi", stream=True)
    with pytest.raises(openai.BadRequestError) as stateful:
        client.responses.create(model="gpt-4o-mini", input="hi", previous_response_id="resp_123")
    assert stateful.value.body["param"] == "previous_response_id" and "stateless" in stateful.value.message
    with pytest.raises(openai.BadRequestError) as builtin:
        client.responses.create(
            model="gpt-4o-mini", input="hi", tools=[{"type": "file_search", "vector_store_ids": ["v"]}]
        )
    assert "file_search" in builtin.value.message


@pytest.mark.parametrize("fault", ["break", "reset", "error-event"])
def test_a_broken_stream_raises(client: openai.OpenAI, upstream: UpstreamServer, fault: str) -> None:
    """A stream that breaks off ends with `error` (the SDK raises it) and `response.failed`."""
    model = "gpt-4o-mini" if fault == "break" else f"fault:{fault}"
    if fault == "break":
        upstream.fake.queue_reply("partial answer", break_off=True)
    seen = []
    with pytest.raises(openai.APIError) as error:
        for event in client.responses.create(model=model, input="hi", stream=True):
            seen.append(event.type)
    assert seen[:2] == ["response.created", "response.in_progress"] and "response.completed" not in seen
    assert error.value.body["code"] == "server_error" and error.value.message


def test_forwarded_as_it_is(spawn, upstream: UpstreamServer) -> None:
    """responses_passthrough: to the upstream's own /responses, the model renamed both ways."""
    dump = spawn("reverse", f"openai_base_url={upstream.base_url}", "responses_passthrough=true")
    client = openai.OpenAI(base_url=dump.url + "/v1", api_key="ollama", max_retries=0, timeout=20)
    done = Response.model_validate(
        {
            "id": "resp_1",
            "object": "response",
            "created_at": 1,
            "model": "gpt-4o-mini-2024-07-18",
            "output": [],
            "parallel_tool_calls": True,
            "tool_choice": "auto",
            "tools": [],
            "status": "completed",
            "usage": {
                "input_tokens": 3,
                "output_tokens": 2,
                "total_tokens": 5,
                "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
                "output_tokens_details": {"reasoning_tokens": 0},
            },
        }
    ).model_dump(mode="json", exclude_none=True)
    upstream.fake.queue(200, done)
    response = whole(client, model="llama3.2:latest", input="hi", store=True)
    sent = upstream.fake.requests[-1]
    assert response.model == "llama3.2:latest" and sent.path == "/v1/responses"
    assert sent.body == {"model": "llama3.2", "input": "hi", "store": True}, "stored responses are the upstream's"
    events = [
        {"type": "response.created", "sequence_number": 0, "response": {**done, "status": "in_progress"}},
        {"type": "response.completed", "sequence_number": 1, "response": done},
    ]
    upstream.fake.queue(
        200,
        [f"event: {e['type']}\ndata: {json.dumps(e)}\n\n".encode() for e in events],
        {"content-type": "text/event-stream"},
    )
    streamed = list(client.responses.create(model="llama3.2:latest", input="hi", stream=True))
    assert [e.type for e in streamed] == ["response.created", "response.completed"]
    assert streamed[-1].response.model == "llama3.2:latest" and streamed[-1].response.usage.total_tokens == 5
    upstream.fake.queue(
        200, [f"event: x\ndata: {json.dumps(events[0])}\n\n".encode()], {"content-type": "text/event-stream"}
    )
    with pytest.raises(openai.APIError, match="ended before the answer was complete"):
        list(client.responses.create(model="llama3.2", input="hi", stream=True))


def test_transcriptions_are_forwarded(client: openai.OpenAI, upstream: UpstreamServer) -> None:
    upstream.fake.queue(200, {"text": "hello world"})
    wav = b"RIFF\x24\x00\x00\x00WAVEfmt " + b"\0" * 24
    result = client.audio.transcriptions.create(model="whisper-1:latest", file=("hello.wav", wav, "audio/wav"))
    assert result.text == "hello world"
    sent = upstream.fake.requests[-1]
    assert sent.path == "/v1/audio/transcriptions" and sent.headers["content-type"].startswith("multipart/form-data")
    assert (
        b'name="model"\r\n\r\nwhisper-1\r\n' in sent.body and wav in sent.body and b'filename="hello.wav"' in sent.body
    )
