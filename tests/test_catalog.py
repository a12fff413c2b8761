"""Model names, the TOML catalog and inferred defaults (the cached model lists: tests/test_upstreams_directory.py)."""

from __future__ import annotations

import pytest
from mitmproxy import exceptions

from addon.catalog.catalog import Catalog
from addon.catalog.models import basename, family_of, full_name, has_tag, infer, token_limit_field

CATALOG = {
    "models": {
        "llama3.2:latest": {
            "upstream": "gpt-4o-mini",
            "context_length": 128000,
            "capabilities": ["completion", "tools", "vision"],
        },
        "coder": {"upstream": "qwen2.5-coder-32b", "think_style": "none", "family": "qwen2"},
        "qwen3:8b": {},
    }
}


def test_names() -> None:
    assert full_name("llama3.2") == "llama3.2:latest" and full_name("qwen3:8b") == "qwen3:8b"
    assert full_name("meta-llama/llama-3.1-8b") == "meta-llama/llama-3.1-8b:latest"
    assert full_name("registry.local:5000/library/phi") == "registry.local:5000/library/phi:latest"
    assert has_tag("a/b:c") and not has_tag("host:5000/b")
    assert basename("meta-llama/llama-3.1-8b:latest") == "llama-3.1-8b"
    assert [family_of(i) for i in ("gpt-4o-mini", "meta-llama/llama-3.1-8b", "qwen3:8b", "o3", "123")] == [
        "gpt",
        "llama",
        "qwen",
        "o",
        "unknown",
    ]


def test_catalog_entries_and_defaults() -> None:
    catalog = Catalog.parse(CATALOG)
    llama = catalog.get("llama3.2")
    assert llama is catalog.get("llama3.2:latest")
    assert (llama.upstream, llama.context_length, llama.capabilities, llama.family) == (
        "gpt-4o-mini",
        128000,
        ("completion", "tools", "vision"),
        "gpt",
    )
    coder = catalog.get("coder:latest")
    assert (coder.upstream, coder.think_style, coder.family) == ("qwen2.5-coder-32b", "none", "qwen2")
    assert "insert" in coder.capabilities, "inferred from the upstream id when not given"
    assert catalog.get("qwen3:8b").upstream == "qwen3:8b", "without upstream, the name itself (minus :latest)"
    assert catalog.get("llama3.2:1b") is None


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"model": {}}, "unknown top-level keys"),
        ({"models": {"x": {"upstrem": "y"}}}, "unknown key 'upstrem'"),
        ({"models": {"x": {"capabilities": ["tools", "flying"]}}}, "unknown capabilities ['flying']"),
        ({"models": {"x": {"context_length": "big"}}}, "context_length must be an integer"),
        ({"models": {"x": {"context_length": 0}}}, "context_length must be positive"),
        ({"models": {"x": {"think_style": "loud"}}}, "think_style must be one of"),
        ({"models": {"x": {"max_output_tokens": -1}}}, "max_output_tokens must be positive"),
        ({"models": {"x": "gpt-4o"}}, "must be a table"),
        ({"models": {"x": {"stop": "\n"}}}, "stop must be a list"),
        ({"models": {"x": {"stop": ["a", ""]}}}, "stop must be a list of at most 4 non-empty strings"),
        ({"models": {"x": {"stop": ["a", "b", "c", "d", "e"]}}}, "at most 4"),
    ],
)
def test_catalog_errors_name_the_problem(data: dict, message: str) -> None:
    with pytest.raises(exceptions.OptionsError, match=message.replace("[", r"\[").replace("]", r"\]")):
        Catalog.parse(data)


def test_catalog_file(tmp_path) -> None:
    path = tmp_path / "models.toml"
    path.write_text('[models."llama3.2:latest"]\nupstream = "gpt-4o-mini"\ncontext_length = 128000\n')
    assert Catalog.load(str(path)).get("llama3.2").upstream == "gpt-4o-mini"
    assert Catalog.load("").models == {}
    path.write_text("[models\n")
    with pytest.raises(exceptions.OptionsError, match="not valid TOML"):
        Catalog.load(str(path))
    with pytest.raises(exceptions.OptionsError, match="cannot read"):
        Catalog.load(str(tmp_path / "missing.toml"))


@pytest.mark.parametrize(
    ("model_id", "capabilities", "context"),
    [
        ("gpt-4o-mini", ("completion", "tools", "vision"), 128000),
        ("gpt-5-nano", ("completion", "tools", "vision", "thinking"), 400000),
        ("o3-mini", ("completion", "tools", "vision", "thinking"), 200000),
        ("gpt-3.5-turbo", ("completion", "tools"), 16385),
        ("gpt-3.5-turbo-instruct", ("completion", "insert"), 4096),
        ("text-embedding-3-small", ("embedding",), 8191),
        ("tts-1-hd", (), 8192),
        ("deepseek/deepseek-r1", ("completion", "tools", "thinking"), 32768),
        ("Qwen/Qwen2.5-Coder-32B-Instruct", ("completion", "tools", "insert"), 32768),
        ("some-local-model", ("completion", "tools"), 8192),
    ],
)
def test_inferred_defaults(model_id: str, capabilities: tuple, context: int) -> None:
    model = infer(model_id)
    assert (model.capabilities, model.context_length, model.name) == (capabilities, context, full_name(model_id))


def test_context_length_from_the_listing() -> None:
    assert infer("m", {"context_length": 65536}).context_length == 65536  # OpenRouter
    assert infer("m", {"max_model_len": 4096}).context_length == 4096  # vLLM
    assert infer("m", {"meta": {"n_ctx_train": 131072}}).context_length == 131072  # llama.cpp
    assert infer("m", {"context_window": True}).context_length == 8192
    assert infer("m", {"created": 1700000000}).created == 1700000000


def test_output_limits_and_their_field() -> None:
    """What an agent's max_tokens is lowered to, and the field OpenAI's reasoning models take instead of max_tokens."""
    limits = {m: infer(m).max_output_tokens for m in ("gpt-4o-mini", "gpt-4.1", "gpt-5-nano", "o4-mini", "qwen3:8b")}
    assert limits == {"gpt-4o-mini": 16384, "gpt-4.1": 32768, "gpt-5-nano": 128000, "o4-mini": 100000, "qwen3:8b": None}
    assert infer("m", {"max_completion_tokens": 4096}).max_output_tokens == 4096  # OpenRouter's top_provider field
    entry = Catalog.parse({"models": {"a": {"upstream": "gpt-4o", "max_output_tokens": 1000}, "b": {}}})
    assert entry.get("a").max_output_tokens == 1000 and entry.get("b").max_output_tokens is None
    assert [token_limit_field(m) for m in ("o3", "o4-mini", "openai/gpt-5", "gpt-4o", "gpt-oss-20b", "o1x")] == [
        "max_completion_tokens",
        "max_completion_tokens",
        "max_completion_tokens",
        "max_tokens",
        "max_tokens",
        "max_tokens",
    ]
