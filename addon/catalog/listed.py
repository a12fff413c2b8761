"""What a server's `GET /models` entry states about a model: its capabilities, read field by field.

Pure data, no I/O. OpenAI's own entries carry only `id`, `object`, `created` and `owned_by`; other
OpenAI-compatible servers say more, each in its own words. `SHAPES` is the one table of what is
read, one row per server shape; each row names the fields it reads and what each value states:

- a flag: a boolean field (`supports_tools: true`, `capabilities.vision: false`) states one
  capability, present or absent (some flags only when true: `supports_chat: false` may be a base
  model that still completes prompts);
- a list: a list field states a capability when it holds one of some values, and (for most) its
  absence otherwise (`architecture.input_modalities` without `"image"`: no vision);
- a kind: a string field whose value states several capabilities at once (`type: "embedding"`).

A fact the entry states wins over the guess from the model's name (`addon.catalog.models.infer`);
where the entry says nothing about a capability, the name decides. The catalog wins over both.
Fields of another type than the one expected are ignored, as are values a row does not know.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

Facts = dict[str, bool]  # capability (addon.catalog.models.CAPABILITIES) → stated present (True) or absent

# What a kind states: the capabilities it has, and the ones it lacks.
_NEITHER = dict.fromkeys(("completion", "tools", "vision", "thinking", "embedding", "insert"), False)
_CHAT = {"completion": True, "embedding": False}
_EMBEDDING = {**_NEITHER, "embedding": True}


@dataclass(frozen=True, slots=True)
class Flag:
    """A boolean field that states one capability (`only_true`: its false says nothing)."""

    path: tuple[str, ...]
    capability: str
    only_true: bool = False


@dataclass(frozen=True, slots=True)
class Listed:
    """A list field that states a capability when it holds one of `values`, and (unless `only_true`)
    its absence otherwise."""

    path: tuple[str, ...]
    capability: str
    values: frozenset[str]
    only_true: bool = False


@dataclass(frozen=True, slots=True)
class Kind:
    """A string field whose known values each state several capabilities."""

    path: tuple[str, ...]
    states: Mapping[str, Mapping[str, bool]]


@dataclass(frozen=True, slots=True)
class Shape:
    """One server shape: where its fields are documented, and what is read of them."""

    server: str
    source: str
    readers: tuple[Flag | Listed | Kind, ...]


SHAPES: tuple[Shape, ...] = (
    Shape(
        "OpenRouter; llama.cpp's llama-server (its `architecture`)",
        "openrouter.ai/docs/models (Model Object Schema); llama-server's GET /v1/models",
        (
            Listed(("architecture", "output_modalities"), "completion", frozenset({"text"})),
            # llama-server says ["text"] of a model it also embeds with: no "embeddings" states nothing
            Listed(("architecture", "output_modalities"), "embedding", frozenset({"embeddings"}), only_true=True),
            Listed(("architecture", "input_modalities"), "vision", frozenset({"image"})),
            Listed(("supported_parameters",), "tools", frozenset({"tools"})),
            Listed(("supported_parameters",), "thinking", frozenset({"reasoning", "include_reasoning"})),
        ),
    ),
    Shape(
        "Mistral (La Plateforme)",
        "Mistral's API specification: ModelCapabilities in GET /v1/models",
        (
            Flag(("capabilities", "completion_chat"), "completion"),
            Flag(("capabilities", "function_calling"), "tools"),
            Flag(("capabilities", "vision"), "vision"),
            Flag(("capabilities", "completion_fim"), "insert"),
        ),
    ),
    Shape(
        "Fireworks AI",
        "docs.fireworks.ai: the model's supports_chat, supports_tools, supports_image_input (camelCase in its REST API)",
        (
            Flag(("supports_chat",), "completion", only_true=True),
            Flag(("supportsChat",), "completion", only_true=True),
            Flag(("supports_tools",), "tools"),
            Flag(("supportsTools",), "tools"),
            Flag(("supports_image_input",), "vision"),
            Flag(("supportsImageInput",), "vision"),
        ),
    ),
    Shape(
        "Together AI; LM Studio's /api/v0/models (`type`)",
        "together's ModelObject.type (ModelType); lmstudio.ai/docs/developer/rest/endpoints",
        (
            Kind(
                ("type",),
                {
                    # Together AI
                    "chat": _CHAT,
                    "language": _CHAT,
                    "code": _CHAT,
                    "embedding": _EMBEDDING,
                    "image": _NEITHER,
                    "moderation": _NEITHER,
                    "rerank": _NEITHER,
                    "audio": _NEITHER,
                    "transcribe": _NEITHER,
                    # LM Studio
                    "llm": {**_CHAT, "vision": False},
                    "vlm": {**_CHAT, "vision": True},
                    "embeddings": _EMBEDDING,
                },
            ),
        ),
    ),
)


def _at(entry: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    value: Any = entry
    for key in path:
        if not isinstance(value, Mapping):
            return None
        value = value.get(key)
    return value


def _read(reader: Flag | Listed | Kind, entry: Mapping[str, Any]) -> Mapping[str, bool]:
    value = _at(entry, reader.path)
    if isinstance(reader, Kind):
        return reader.states.get(value, {}) if isinstance(value, str) else {}
    if isinstance(reader, Flag):
        present = value if isinstance(value, bool) else None
    else:
        present = any(isinstance(v, str) and v in reader.values for v in value) if isinstance(value, list) else None
    if present is None or (reader.only_true and not present):
        return {}
    return {reader.capability: present}


def stated(entry: Mapping[str, Any]) -> Facts:
    """The capabilities an entry states, present or absent (the first reader to state one wins)."""
    facts: Facts = {}
    for shape in SHAPES:
        for reader in shape.readers:
            for capability, present in _read(reader, entry).items():
                facts.setdefault(capability, present)
    return facts


def apply(guessed: tuple[str, ...], facts: Facts, order: tuple[str, ...]) -> tuple[str, ...]:
    """The name's guess corrected by what the entry states, in `order`. A model that cannot complete
    keeps only what the entry states it has (Ollama lists an embedding model as `embedding` alone)."""
    have = {c for c in guessed if facts.get(c, True)} | {c for c, present in facts.items() if present}
    if "completion" not in have:
        have = {c for c in have if c == "embedding" or facts.get(c)}
    return tuple(c for c in order if c in have)


def output_limit(entry: Mapping[str, Any]) -> int | None:
    """The most tokens one answer may have, where the entry says it (top level, or OpenRouter's `top_provider`)."""
    for path in (("max_output_tokens",), ("max_completion_tokens",), ("top_provider", "max_completion_tokens")):
        value = _at(entry, path)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None
