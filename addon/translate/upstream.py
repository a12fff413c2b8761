"""The one result of every request translation (`Translation`), and how a thinking wish goes upstream.

Every family's request translator (`translate.request` for Ollama, `translate.anthropic`,
`translate.responses`) returns a `Translation`: the upstream route, the body with OpenAI's own
fields, the fields OpenAI does not define (`extra`, sent last), what could not be mapped
(`warnings`), and the client's thinking wish in Ollama's terms (`think`). What the model can take
of that wish and of the answer's length limit is applied after translation, in one place for
every route (`endpoints.base.forward`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

from addon.wire.ollama import Think

if TYPE_CHECKING:
    from openai.types.shared_params import ReasoningEffort

    from addon.wire.openai import ChatCompletionRequest, CompletionRequest

__all__ = ["Think", "Translation", "think_fields"]


@dataclass(slots=True)
class Translation:
    """An upstream request: the OpenAI route and body, fields OpenAI does not define, what could not be
    mapped, and the client's thinking wish.

    `think`: True/False, a level ("low", "medium", "high", "max"), or None (nothing asked).
    `think_soft`: the wish is one an agent sends with every request (Claude Code's adaptive
    thinking, Codex's reasoning effort): it goes only to a model that can think, as Ollama relaxes
    it, since a non-reasoning upstream refuses the request.
    """

    route: str
    body: ChatCompletionRequest | CompletionRequest
    extra: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    think: Think = None
    think_soft: bool = False
    stream: bool = False

    def wire_body(self) -> dict[str, Any]:
        """The JSON object sent upstream: the OpenAI fields, then the extra ones."""
        return {**self.body, **self.extra} if self.extra else cast("dict[str, Any]", self.body)


_REASONING_EFFORT: dict[bool | str, ReasoningEffort] = {
    True: "medium",
    "low": "low",
    "medium": "medium",
    "high": "high",
    "max": "high",
}


def think_fields(think: Think, style: str) -> tuple[ReasoningEffort | None, dict[str, Any]]:
    """How Ollama's `think` goes upstream: (OpenAI's `reasoning_effort`, extra body fields).

    reasoning_effort: `true` → medium, a level → that level (`max` → high), `false` → nothing.
    chat_template_kwargs (llama.cpp, vLLM): `{"enable_thinking": bool}`, true for true and every
    level, false for false. none: nothing. An absent `think` sends nothing in every style.
    """
    if think is None or style == "none":
        return None, {}
    if style == "chat_template_kwargs":
        return None, {"chat_template_kwargs": {"enable_thinking": think is not False}}
    return (_REASONING_EFFORT.get(think) if think is not False else None), {}
