"""Ollama's capability rules: which requests a model refuses for what it cannot do, and in which words.

Pure functions over a `ModelInfo` (the catalog's entry, or the capabilities inferred from the
model's id and its server's list entry). Ollama checks a generation request against the model's
capabilities before it runs it, and answers 400 (server/routes.go, ChatHandler, GenerateHandler):

- `think` on (true, "low", "medium", "high", "max") for a model without `thinking`:
  `"NAME" does not support thinking` (checked first). The Anthropic route (/v1/messages) is exempt:
  Ollama relaxes the wish there, as the proxy does for every agent's standing wish.
- no `completion`: `"NAME" does not support chat` (chat routes) or `… does not support generate`
  (generate, /v1/completions).
- tools sent to a model without `tools`, a suffix to one without `insert`:
  `registry.ollama.ai/library/NAME:latest does not support tools` (the model's full name, as
  Ollama's scheduler words it).

NAME is the name the client sent, quoted as Go's `%q` quotes it. Embedding routes have no such
rule in Ollama (it embeds with any model), nor do images sent to a model without `vision`.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from addon.catalog.models import ModelInfo

Route = Literal["chat", "generate"]
THINKING_ON = (True, "low", "medium", "high", "max")
# Ollama's reasoning efforts (openai.thinkFromReasoningEffort) that turn thinking on.
EFFORTS_ON = ("minimal", "low", "medium", "high", "max", "xhigh", "ultra")


def go_quoted(name: str) -> str:
    """A name as Go's `%q` prints it (for printable names: in double quotes, `"` and `\\` escaped)."""
    return json.dumps(name, ensure_ascii=False)


def full_ollama_name(name: str) -> str:
    """The name as Ollama's scheduler says it (model.ParseName(...).String()): host, namespace and tag
    filled in with `registry.ollama.ai`, `library` and `latest`."""
    rest, tag = name, "latest"
    if rest.rfind(":") > rest.rfind("/"):
        rest, _, given = rest.rpartition(":")
        tag = given or tag
    parts = rest.split("/")
    model = parts[-1]
    namespace = parts[-2] if len(parts) >= 2 and parts[-2] else "library"
    host = "/".join(parts[:-2]) if len(parts) >= 3 and parts[0] else "registry.ollama.ai"
    return f"{host}/{namespace}/{model}:{tag}"


def refusal(
    model: ModelInfo,
    asked: str,
    route: Route,
    *,
    think: bool = False,
    tools: bool = False,
    insert: bool = False,
) -> str | None:
    """Ollama's 400 message for a request the model cannot serve, or None when it can.

    `think`: the request turns thinking on; `tools`: it sends tools; `insert`: it has a suffix."""
    capabilities = model.capabilities
    if think and "thinking" not in capabilities:
        return f"{go_quoted(asked)} does not support thinking"
    if "completion" not in capabilities:
        return f"{go_quoted(asked)} does not support {route}"
    missing = [name for name, wanted in (("tools", tools), ("insert", insert)) if wanted and name not in capabilities]
    if missing:
        return f"{full_ollama_name(asked)} does not support {chr(10).join(missing)}"
    return None
