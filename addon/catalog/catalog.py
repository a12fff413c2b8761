"""Model names and descriptions: the optional TOML model catalog, and defaults inferred from upstream ids.

Pure data, no I/O except reading the catalog file once when the options change.

Names: Ollama clients say `name:tag` and treat a missing tag as `:latest`. An upstream id without
a tag (`gpt-4o-mini`, `meta-llama/llama-3.1-8b`) is listed as `<id>:latest`, and `<id>:latest` is
sent upstream as `<id>`. An upstream id that already has a tag (`qwen3:8b`) is listed as it is.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mitmproxy import exceptions

if TYPE_CHECKING:
    from addon.guard.keys import KeySpec
    from addon.upstreams.servers import ServerSpec

CAPABILITIES = ("completion", "tools", "vision", "thinking", "embedding", "insert")
THINK_STYLES = ("reasoning_effort", "chat_template_kwargs", "none")
DEFAULT_CONTEXT_LENGTH = 8192
LATEST = ":latest"


# ---------------------------------------------------------------------------------------------
# Names


def has_tag(name: str) -> bool:
    """`x:tag` has a tag; in `host:port/x` the colon belongs to the host."""
    return ":" in name.rsplit("/", 1)[-1]


def full_name(name: str) -> str:
    """The `name:tag` form Ollama lists: a missing tag is `latest`."""
    return name if has_tag(name) else name + LATEST


def basename(name: str) -> str:
    """`meta-llama/llama-3.1-8b:latest` → `llama-3.1-8b`."""
    return name.rsplit("/", 1)[-1].split(":", 1)[0]


# ---------------------------------------------------------------------------------------------
# Model descriptions


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """What the proxy tells Ollama clients about one model."""

    name: str  # the client-side name, always name:tag
    upstream: str  # the model id sent upstream
    context_length: int
    capabilities: tuple[str, ...]
    family: str
    parameter_size: str = ""
    quantization_level: str = ""
    embedding_length: int | None = None
    description: str = ""
    think_style: str | None = None  # None: the think_style option
    created: int | None = None  # unix seconds, from the upstream list
    in_catalog: bool = False
    max_output_tokens: int | None = None  # the most tokens one answer may have (None: not known)
    server: str | None = None  # the catalog entry's `server` (addon.upstreams.servers); None: routed by the rules


_EMBEDDING = re.compile(r"embed|^bge-|^e5-|^gte-|minilm", re.I)
_NOT_CHAT = re.compile(r"tts|whisper|dall-e|realtime|transcribe|moderation|image|audio|sora|search-api", re.I)
_LEGACY = re.compile(r"^(davinci|babbage)|^gpt-3\.5-turbo-instruct", re.I)  # OpenAI's text-completion-only models
_VISION = re.compile(
    r"gpt-4o|gpt-4\.1|gpt-4-turbo|gpt-5|^o[134]\b|^o[34]-|vision|-vl\b|vl-|llava|pixtral|gemma-?3|claude|gemini|llama-?4|minicpm-v|qwen2\.5-omni",
    re.I,
)
_THINKING = re.compile(
    r"^o[134]\b|^o[134]-|gpt-5|gpt-oss|reason|think|deepseek-r1|r1-distill|qwq|qwen3|magistral", re.I
)
_INSERT = re.compile(r"codestral|coder|starcoder|codellama|gpt-3\.5-turbo-instruct", re.I)
# First match wins; searched in the lower-case basename.
_CONTEXT_LENGTHS: tuple[tuple[re.Pattern[str], int], ...] = tuple(
    (re.compile(pattern), length)
    for pattern, length in (
        (r"gpt-4\.1", 1047576),
        (r"gpt-5", 400000),
        (r"gpt-4o|gpt-4-turbo|o1-mini", 128000),
        (r"^o[134]", 200000),
        (r"gpt-4-32k", 32768),
        (r"gpt-3\.5-turbo-instruct", 4096),
        (r"gpt-4", 8192),
        (r"gpt-3\.5", 16385),
        (r"claude", 200000),
        (r"gemini", 1048576),
        (r"llama-?3\.[1-3]|llama-?4|gpt-oss", 131072),
        (r"qwen|mistral|mixtral|deepseek", 32768),
        (r"text-embedding|embed", 8191),
    )
)
# The output limits of OpenAI's models (searched in the lower-case basename, first match wins):
# an agent's `max_tokens` above it is lowered, as OpenAI refuses the request otherwise.
_OUTPUT_LIMITS: tuple[tuple[re.Pattern[str], int], ...] = tuple(
    (re.compile(pattern), limit)
    for pattern, limit in (
        (r"^gpt-4o|^chatgpt-4o", 16384),
        (r"^gpt-4\.1", 32768),
        (r"^gpt-5", 128000),
        (r"^o1-mini", 65536),
        (r"^o[134]", 100000),
        (r"^gpt-4-turbo|^gpt-3\.5", 4096),
        (r"^gpt-4\b", 8192),
    )
)
# OpenAI's reasoning models take `max_completion_tokens` and refuse `max_tokens`.
_COMPLETION_TOKENS_MODELS = re.compile(r"^o[134]\b|^o[134]-|^gpt-5", re.I)
_EMBEDDING_LENGTHS = {"text-embedding-3-small": 1536, "text-embedding-3-large": 3072, "text-embedding-ada-002": 1536}


def family_of(upstream: str) -> str:
    """The model family / architecture: the leading letters of the basename (`gpt`, `llama`, `qwen`)."""
    match = re.match(r"[a-z]+", basename(upstream).lower())
    return match.group(0) if match else "unknown"


def token_limit_field(upstream: str) -> str:
    """The chat-completions field that limits an answer's length for this upstream model."""
    return "max_completion_tokens" if _COMPLETION_TOKENS_MODELS.search(basename(upstream)) else "max_tokens"


def _context_from_listing(entry: dict[str, Any]) -> int | None:
    """Context sizes some upstreams put in their /models entries (OpenRouter, Groq, vLLM, llama.cpp)."""
    meta = entry.get("meta")
    if not isinstance(meta, dict):
        meta = {}
    for value in (
        entry.get("context_length"),
        entry.get("context_window"),
        entry.get("max_model_len"),
        entry.get("max_context_length"),
        meta.get("n_ctx"),
        meta.get("n_ctx_train"),
    ):
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def infer(upstream: str, entry: dict[str, Any] | None = None) -> ModelInfo:
    """Sensible defaults for an upstream model that has no catalog entry, from its id (and listing)."""
    entry = entry or {}
    base = basename(upstream).lower()
    if _EMBEDDING.search(base):
        capabilities: tuple[str, ...] = ("embedding",)
    elif _NOT_CHAT.search(base):
        capabilities = ()
    elif _LEGACY.search(base):
        capabilities = ("completion", "insert") if _INSERT.search(base) else ("completion",)
    else:
        found = ["completion", "tools"]
        if _VISION.search(base):
            found.append("vision")
        if _THINKING.search(base):
            found.append("thinking")
        if _INSERT.search(base):
            found.append("insert")
        capabilities = tuple(found)
    context = _context_from_listing(entry) or next(
        (length for pattern, length in _CONTEXT_LENGTHS if pattern.search(base)), DEFAULT_CONTEXT_LENGTH
    )
    created = entry.get("created")
    limit = entry.get("max_output_tokens", entry.get("max_completion_tokens"))
    if not isinstance(limit, int) or isinstance(limit, bool) or limit <= 0:
        limit = next((n for pattern, n in _OUTPUT_LIMITS if pattern.search(base)), None)
    return ModelInfo(
        name=full_name(upstream),
        upstream=upstream,
        context_length=context,
        capabilities=capabilities,
        family=family_of(upstream),
        embedding_length=_EMBEDDING_LENGTHS.get(base),
        created=created if isinstance(created, int) and not isinstance(created, bool) else None,
        max_output_tokens=limit,
    )


# ---------------------------------------------------------------------------------------------
# The catalog file

_ENTRY_KEYS: dict[str, type | tuple[type, ...]] = {
    "upstream": str,
    "context_length": int,
    "capabilities": list,
    "family": str,
    "parameter_size": str,
    "quantization_level": str,
    "embedding_length": int,
    "description": str,
    "think_style": str,
    "max_output_tokens": int,
    "server": str,
}


@dataclass(frozen=True, slots=True)
class Catalog:
    """The models of the `model_catalog` file, by full client name."""

    models: dict[str, ModelInfo] = field(default_factory=dict)
    servers: dict[str, ServerSpec] = field(default_factory=dict)  # the [servers.NAME] tables (addon.upstreams.servers)
    keys: dict[str, KeySpec] = field(default_factory=dict)  # the [keys.NAME] tables (addon.guard.keys)

    def get(self, name: str) -> ModelInfo | None:
        return self.models.get(full_name(name))

    @classmethod
    def load(cls, path: str, environ: Mapping[str, str] | None = None) -> Catalog:
        """Read and check the TOML file; every problem is an OptionsError naming the file and key."""
        if not path.strip():
            return cls()
        try:
            with open(path.strip(), "rb") as f:
                data = tomllib.load(f)
        except OSError as e:
            raise exceptions.OptionsError(f"model_catalog: cannot read {path!r}: {e.strerror or e}") from None
        except tomllib.TOMLDecodeError as e:
            raise exceptions.OptionsError(f"model_catalog: {path!r} is not valid TOML: {e}") from None
        return cls.parse(data, path, environ)

    @classmethod
    def parse(
        cls, data: dict[str, Any], where: str = "model_catalog", environ: Mapping[str, str] | None = None
    ) -> Catalog:
        unknown = set(data) - {"models", "servers", "keys"}
        if unknown:
            raise exceptions.OptionsError(
                f"{where}: unknown top-level keys {sorted(unknown)} "
                '(expected [models."name"], [servers.NAME] and [keys.NAME] tables)'
            )
        tables = data.get("models", {})
        if not isinstance(tables, dict):
            raise exceptions.OptionsError(f"{where}: 'models' must be a table of [models.\"name\"] tables")
        models: dict[str, ModelInfo] = {}
        for name, table in tables.items():
            models[full_name(name)] = _entry(name, table, f'{where}: [models."{name}"]')
        # Several upstreams (addon.upstreams.servers): imported here, the servers module needs this one's names.
        from addon.guard.keys import parse_keys
        from addon.upstreams.servers import check_model_servers, parse_servers

        servers = parse_servers(data.get("servers", {}), where, environ)
        check_model_servers({name: table.get("server") for name, table in tables.items()}, servers, where)
        return cls(models, servers, parse_keys(data.get("keys", {}), where, environ))


def _entry(name: str, table: Any, where: str) -> ModelInfo:
    if not isinstance(table, dict):
        raise exceptions.OptionsError(f"{where} must be a table")
    if not name or name != name.strip():
        raise exceptions.OptionsError(f"{where}: invalid model name")
    for key, value in table.items():
        wanted = _ENTRY_KEYS.get(key)
        if wanted is None:
            raise exceptions.OptionsError(f"{where}: unknown key {key!r} (known: {', '.join(_ENTRY_KEYS)})")
        if not isinstance(value, wanted) or isinstance(value, bool):
            raise exceptions.OptionsError(
                f"{where}: {key} must be {'a string' if wanted is str else 'an integer' if wanted is int else 'a list'}"
            )
    upstream = table.get("upstream") or (name[: -len(LATEST)] if name.endswith(LATEST) else name)
    inferred = infer(upstream)
    capabilities = table.get("capabilities")
    if capabilities is not None:
        bad = [c for c in capabilities if c not in CAPABILITIES]
        if bad:
            raise exceptions.OptionsError(f"{where}: unknown capabilities {bad} (known: {', '.join(CAPABILITIES)})")
    think_style = table.get("think_style")
    if think_style is not None and think_style not in THINK_STYLES:
        raise exceptions.OptionsError(f"{where}: think_style must be one of {', '.join(THINK_STYLES)}")
    context = table.get("context_length", inferred.context_length)
    if context <= 0:
        raise exceptions.OptionsError(f"{where}: context_length must be positive")
    limit = table.get("max_output_tokens", inferred.max_output_tokens)
    if limit is not None and limit <= 0:
        raise exceptions.OptionsError(f"{where}: max_output_tokens must be positive")
    return ModelInfo(
        name=full_name(name),
        upstream=upstream,
        context_length=context,
        capabilities=tuple(capabilities) if capabilities is not None else inferred.capabilities,
        family=table.get("family", inferred.family),
        parameter_size=table.get("parameter_size", ""),
        quantization_level=table.get("quantization_level", ""),
        embedding_length=table.get("embedding_length", inferred.embedding_length),
        description=table.get("description", ""),
        think_style=think_style,
        in_catalog=True,
        max_output_tokens=limit,
        server=table.get("server"),
    )
