"""Named client keys (addon/guard/keys.py): the catalog's [keys.NAME] tables, identification, the
models a key may use, per-minute limits; and their answers through the addon's hooks (401, 403, 429
in each family's shape, discovery listing only a key's models)."""

from __future__ import annotations

import json

import pytest
from mitmproxy.exceptions import OptionsError

from addon.catalog.catalog import Catalog
from addon.guard.keys import ClientKey, ClientKeys, KeySpec, model_refusal, parse_keys
from addon.proxy import OllamaProxy
from harness.inproc import client_flow, configured_proxy

ENV = {"ALICE_KEY": "alice-key-0123456789", "BOB_KEY": "bob-key-0123456789", "EMPTY": ""}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_parse_keys() -> None:
    specs = parse_keys(
        {
            "alice": {"key_env": "ALICE_KEY", "models": ["gpt-4o*", " fast "], "requests_per_minute": 60},
            "bob": {"key_env": "BOB_KEY", "tokens_per_minute": 1000},
        },
        environ=ENV,
    )
    assert specs["alice"] == KeySpec("alice", "ALICE_KEY", ENV["ALICE_KEY"], ("gpt-4o*", "fast"), 60, None)
    assert specs["bob"].tokens_per_minute == 1000 and specs["bob"].models == ()
    assert ENV["ALICE_KEY"] not in repr(specs)  # the value never shows in a repr


@pytest.mark.parametrize(
    ("tables", "message"),
    [
        (
            {"alice": {"key_env": "NOPE"}},
            r"\[keys.alice\]: key_env names the environment variable NOPE, which is not set",
        ),
        ({"alice": {"key_env": "EMPTY"}}, r"which is empty"),
        ({"alice": {}}, r"key_env is required"),
        ({"alice": {"key_env": "alice-key-0123456789"}}, r"key_env is required"),
        ({"alice": {"key": "alice-key-0123456789"}}, r"key is refused: a key never goes in the file"),
        ({"alice": {"key_env": "ALICE_KEY", "color": 1}}, r"unknown key 'color'"),
        ({"alice": {"key_env": "ALICE_KEY", "models": "x"}}, r"models must be a list"),
        ({"alice": {"key_env": "ALICE_KEY", "models": [""]}}, r"non-empty name patterns"),
        ({"alice": {"key_env": "ALICE_KEY", "requests_per_minute": 0}}, r"requests_per_minute must be a positive"),
        ({"alice": {"key_env": "ALICE_KEY", "tokens_per_minute": True}}, r"tokens_per_minute must be a positive"),
        ({"a b": {"key_env": "ALICE_KEY"}}, r"invalid key name"),
        ({"ollama_api_key": {"key_env": "ALICE_KEY"}}, r"invalid key name"),
        (
            {"a": {"key_env": "ALICE_KEY"}, "b": {"key_env": "ALICE_KEY"}},
            r"\[keys.b\]: holds the same key as \[keys.a\]",
        ),
        (["alice"], r"'keys' must be a table"),
    ],
)
def test_bad_key_tables(tables, message: str) -> None:
    with pytest.raises(OptionsError, match=message) as raised:
        parse_keys(tables, environ=ENV)
    assert ENV["ALICE_KEY"] not in str(raised.value)


def test_the_catalog_reads_keys() -> None:
    catalog = Catalog.parse({"keys": {"alice": {"key_env": "ALICE_KEY"}}}, environ=ENV)
    assert list(catalog.keys) == ["alice"]


def test_identify_and_constant_time() -> None:
    import inspect

    keys = ClientKeys.build(parse_keys({"alice": {"key_env": "ALICE_KEY"}}, environ=ENV), "global-key-0123456789")
    assert keys.identify(ENV["ALICE_KEY"]).name == "alice"
    assert keys.identify("global-key-0123456789").name == "ollama_api_key"
    for wrong in ("", None, "alice-key-012345678", ENV["ALICE_KEY"] + " ", "bob-key-0123456789", "\udcff"):
        assert keys.identify(wrong) is None
    assert "hmac.compare_digest(" in inspect.getsource(ClientKeys.identify)
    assert not ClientKeys.build({}) and len(keys) == 2
    with pytest.raises(OptionsError, match="ollama_api_key: the same key as a"):
        ClientKeys.build(parse_keys({"alice": {"key_env": "ALICE_KEY"}}, environ=ENV), ENV["ALICE_KEY"])


def test_models_a_key_may_use() -> None:
    key = ClientKey(KeySpec("alice", "A", "k" * 20, ("gpt-4o*", "llama3.2", "qwen3:8b")))
    assert key.allows("gpt-4o-mini") and key.allows("gpt-4o-mini:latest")
    assert key.allows("llama3.2") and key.allows("llama3.2:latest")  # a tagless pattern names :latest too
    assert key.allows("qwen3:8b") and not key.allows("qwen3:14b") and not key.allows("qwen3")
    assert not key.allows("gpt-5") and not key.allows("llama3.2:1b")
    assert ClientKey(KeySpec("any", "A", "k" * 20)).allows("whatever")


def test_requests_per_minute() -> None:
    clock = Clock()
    key = ClientKey(KeySpec("bob", "B", "k" * 20, requests_per_minute=3), clock)
    assert [key.admit() for _ in range(3)] == [None, None, None]
    assert key.admit() == ("requests_per_minute", 20)  # one request comes back every 20 s
    clock.now += 19.5
    assert key.admit() == ("requests_per_minute", 1)
    clock.now += 0.5
    assert key.admit() is None and key.admit() is not None
    clock.now += 3600  # refilled to a minute's worth, no more
    assert [key.admit() for _ in range(4)] == [None, None, None, ("requests_per_minute", 20)]


def test_tokens_per_minute() -> None:
    clock = Clock()
    key = ClientKey(KeySpec("bob", "B", "k" * 20, tokens_per_minute=600), clock)
    assert key.admit() is None
    key.charge(1000)  # one answer may go over: the budget is 400 below zero
    assert key.admit() == ("tokens_per_minute", 41)  # 401 tokens at 10 per second
    clock.now += 41
    assert key.admit() is None
    key.charge(0)
    key.charge(-5)  # nothing
    assert key.tokens is not None and key.tokens.level == pytest.approx(10.0)


def test_limits_survive_a_reconfiguration() -> None:
    specs = parse_keys({"bob": {"key_env": "BOB_KEY", "requests_per_minute": 1}}, environ=ENV)
    first = ClientKeys.build(specs)
    assert first.by_name["bob"].admit() is None
    again = ClientKeys.build(specs, previous=first)
    assert again.by_name["bob"] is first.by_name["bob"] and again.by_name["bob"].admit() is not None
    changed = parse_keys({"bob": {"key_env": "BOB_KEY", "requests_per_minute": 2}}, environ=ENV)
    assert ClientKeys.build(changed, previous=first).by_name["bob"].admit() is None


def test_model_refusal_leaves_refusals_and_unnamed_local_answers() -> None:
    from addon.endpoints.base import OllamaEndpoint
    from addon.reply import Answer

    key = ClientKey(KeySpec("alice", "A", "k" * 20, ("gpt-4o*",)))
    endpoint = OllamaEndpoint()
    ok = Answer(200, b"{}", "application/json")
    bad = Answer(400, b"{}", "application/json", "bad")
    assert model_refusal(key, "gpt-4o", ok, endpoint) is ok
    assert model_refusal(key, "gpt-5", bad, endpoint) is bad
    assert model_refusal(key, None, ok, endpoint) is ok  # /api/version, /api/tags: no model
    refused = model_refusal(key, "gpt-5", ok, endpoint)
    assert isinstance(refused, Answer) and refused.status == 403


# -- through the addon's hooks ----------------------------------------------------------------------


@pytest.fixture
def keyed(monkeypatch: pytest.MonkeyPatch):
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    catalog = (
        '[models."fast"]\nupstream = "gpt-4o-mini"\n\n[models."llama3.2"]\n\n'
        '[keys.alice]\nkey_env = "ALICE_KEY"\nmodels = ["fast", "gpt-4o*"]\n\n'
        '[keys.bob]\nkey_env = "BOB_KEY"\nrequests_per_minute = 2\n'
    )
    with configured_proxy(catalog, openai_base_url="http://127.0.0.1:9/v1", openai_api_key="") as (proxy, _):
        yield proxy


def hooks(proxy: OllamaProxy, path: str, body: dict | None, key: str | None, header: str = "authorization"):
    headers = {} if key is None else {header: f"Bearer {key}" if header == "authorization" else key}
    flow = client_flow(path, body, method="POST" if body is not None else "GET", headers=headers)
    proxy.requestheaders(flow)
    return flow


async def run(proxy: OllamaProxy, flow) -> None:
    if flow.response is None:
        pending = proxy.request(flow)
        if pending is not None:
            await pending


CHAT = {"model": "gpt-5", "messages": [{"role": "user", "content": "hi"}]}


async def test_a_model_outside_the_key_is_403_in_the_family_shape(keyed: OllamaProxy) -> None:
    answers = {}
    for path, body in (
        ("/api/chat", CHAT),
        ("/v1/chat/completions", CHAT),
        ("/v1/messages", {**CHAT, "max_tokens": 10}),
        ("/v1/responses", {"model": "gpt-5", "input": "hi"}),
        ("/api/show", {"model": "gpt-5"}),
    ):
        flow = hooks(keyed, path, body, ENV["ALICE_KEY"], "x-api-key" if path == "/v1/messages" else "authorization")
        await run(keyed, flow)
        assert flow.response is not None and flow.response.status_code == 403, path
        assert ENV["ALICE_KEY"] not in str(flow.request.headers)
        answers[path] = json.loads(flow.response.content)
        keyed.response(flow)
        assert flow.metadata["ollama"]["key"] == "alice" and "key alice" in flow.comment
        assert ENV["ALICE_KEY"] not in flow.comment
    message = "forbidden: the key alice may not use the model gpt-5"
    assert answers["/api/chat"] == {"error": message}
    assert answers["/v1/chat/completions"]["error"]["message"] == message
    assert answers["/v1/messages"]["type"] == "error" and answers["/v1/messages"]["error"]["type"] == "permission_error"
    assert answers["/v1/responses"]["error"]["message"] == message


async def test_a_model_the_key_may_use_goes_upstream(keyed: OllamaProxy) -> None:
    for model in ("fast", "gpt-4o-mini", "gpt-4o:latest"):
        flow = hooks(keyed, "/api/chat", {**CHAT, "model": model}, ENV["ALICE_KEY"])
        await run(keyed, flow)
        assert flow.response is None and flow.request.path == "/v1/chat/completions", model
        keyed.exchanges.pop(flow.id)
    flow = hooks(keyed, "/api/chat", CHAT, ENV["BOB_KEY"])  # bob may use any model
    await run(keyed, flow)
    assert flow.response is None


async def test_no_key_or_a_wrong_one_is_401(keyed: OllamaProxy) -> None:
    for key in (None, "nope", ENV["ALICE_KEY"][:-1]):
        flow = hooks(keyed, "/api/chat", CHAT, key)
        assert flow.response is not None and flow.response.status_code == 401
        assert flow.response.headers["www-authenticate"] == 'Bearer realm="ollama"'


async def test_over_the_limit_is_429_with_retry_after(keyed: OllamaProxy) -> None:
    statuses = []
    for path in ("/api/chat", "/v1/chat/completions", "/v1/messages", "/v1/chat/completions"):
        flow = hooks(keyed, path, {**CHAT, "max_tokens": 5}, ENV["BOB_KEY"])
        await run(keyed, flow)
        statuses.append(flow.response.status_code if flow.response is not None else None)
        if flow.response is not None and flow.response.status_code == 429:
            assert flow.response.headers["retry-after"] == "30"
            body = json.loads(flow.response.content)
            if path == "/v1/messages":
                assert body["error"]["type"] == "rate_limit_error"
            else:
                assert body["error"]["message"].startswith("rate limited: key bob is over its requests_per_minute")
        keyed.exchanges.pop(flow.id, None)
    assert statuses == [None, None, 429, 429]


async def test_discovery_lists_only_the_key_models(keyed: OllamaProxy) -> None:
    names = {}
    for key in ("ALICE_KEY", "BOB_KEY"):
        flow = hooks(keyed, "/api/tags", None, ENV[key])
        await run(keyed, flow)
        names[key] = [m["name"] for m in json.loads(flow.response.content)["models"]]
        flow = hooks(keyed, "/v1/models", None, ENV[key])
        await run(keyed, flow)
        assert [m["id"] for m in json.loads(flow.response.content)["data"]] == names[key]
    assert names["ALICE_KEY"] == ["fast:latest"] and sorted(names["BOB_KEY"]) == ["fast:latest", "llama3.2:latest"]
