"""What a model is: names (`name:tag`, `:latest`), `ModelInfo`, and what is inferred from an upstream id
(capabilities, context length, output limit, the token-limit field).

Pure data, no I/O. Names: Ollama clients say `name:tag` and treat a missing tag as `:latest`. An
upstream id without a tag (`gpt-4o-mini`, `meta-llama/llama-3.1-8b`) is listed as `<id>:latest`, and
`<id>:latest` is sent upstream as `<id>`. An upstream id that already has a tag (`qwen3:8b`) is
listed as it is.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from addon.catalog import listed

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
    # the model's own stop sequences (a Modelfile's `PARAMETER stop`): sent when a request has none
    stop: tuple[str, ...] = ()


_EMBEDDING = re.compile(r"embed|^bge-|^e5-|^gte-|minilm", re.I)
_NOT_CHAT = re.compile(r"tts|whisper|dall-e|realtime|transcribe|moderation|image|sora|search-api", re.I)
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


def _guessed(base: str) -> tuple[str, ...]:
    """The capabilities a model's lower-case basename suggests."""
    if _EMBEDDING.search(base):
        return ("embedding",)
    if _NOT_CHAT.search(base):
        return ()
    if _LEGACY.search(base):
        return ("completion", "insert") if _INSERT.search(base) else ("completion",)
    found = ["completion", "tools"]
    if _VISION.search(base):
        found.append("vision")
    if _THINKING.search(base):
        found.append("thinking")
    if _INSERT.search(base):
        found.append("insert")
    return tuple(found)


def infer(upstream: str, entry: dict[str, Any] | None = None) -> ModelInfo:
    """Sensible defaults for an upstream model that has no catalog entry, from its id, corrected by
    what its server's list entry states (`addon.catalog.listed`: a stated fact wins over the name)."""
    entry = entry or {}
    base = basename(upstream).lower()
    guessed = _guessed(base)
    capabilities = listed.apply(guessed, listed.stated(entry), CAPABILITIES) if entry else guessed
    context = _context_from_listing(entry) or next(
        (length for pattern, length in _CONTEXT_LENGTHS if pattern.search(base)), DEFAULT_CONTEXT_LENGTH
    )
    created = entry.get("created")
    limit = listed.output_limit(entry) or next((n for pattern, n in _OUTPUT_LIMITS if pattern.search(base)), None)
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
