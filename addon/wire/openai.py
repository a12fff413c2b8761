"""The OpenAI API's wire shapes, as this proxy sends and reads them, and the one reader of `usage`.

Requests: `ChatCompletionRequest`, `CompletionRequest` and `EmbeddingRequest` list the fields of
openai's `CompletionCreateParams` (and friends) the proxy sends, with the openai package's own
types for their parts (messages, tools, response formats, stream options, reasoning effort).
Fields OpenAI does not define (`chat_template_kwargs`, `top_k` …) are never in these: they travel
in a translation's `extra` body, merged last (`translate.request.Translation.wire_body`).

Answers: the openai package describes them with pydantic models, which would cost a validation
per chunk; here they are `TypedDict`s of the same fields (`total=False`: upstreams leave fields
out), and the parsed JSON is `cast` to them. Readers still check the types of what they use: a
`cast` is a promise to the reader, not a proof.

The openai package is imported for type checking only: at run time these are plain dicts and the
package is not needed (it is in the `dev` and `test` extras).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Literal, NamedTuple, Required, TypedDict

if TYPE_CHECKING:
    from openai.types.chat import (
        ChatCompletionMessageParam,
        ChatCompletionStreamOptionsParam,
        ChatCompletionToolChoiceOptionParam,
        ChatCompletionToolParam,
    )
    from openai.types.chat.completion_create_params import ResponseFormat
    from openai.types.shared_params import ReasoningEffort

# ---------------------------------------------------------------------------------------------
# Requests


class ChatCompletionRequest(TypedDict, total=False):
    """POST {base}/chat/completions, in the key order the proxy writes them."""

    model: Required[str]
    max_tokens: int
    max_completion_tokens: int  # OpenAI's reasoning models take only this one
    temperature: float
    top_p: float
    seed: int
    stop: list[str]
    frequency_penalty: float
    presence_penalty: float
    response_format: ResponseFormat
    reasoning_effort: ReasoningEffort
    logprobs: bool
    top_logprobs: int
    stream: bool
    stream_options: ChatCompletionStreamOptionsParam
    messages: list[ChatCompletionMessageParam]
    tools: list[ChatCompletionToolParam]
    tool_choice: ChatCompletionToolChoiceOptionParam
    parallel_tool_calls: bool


class CompletionRequest(ChatCompletionRequest, total=False):
    """POST {base}/completions (raw prompts, fill-in-the-middle): the chat fields but `prompt` for `messages`."""

    prompt: str
    suffix: str


class EmbeddingRequest(TypedDict, total=False):
    """POST {base}/embeddings."""

    model: Required[str]
    input: Required[list[str]]
    encoding_format: Literal["float", "base64"]
    dimensions: int


# Ollama's `error.type` for a status (openai/openai.go NewError): the one table of the OpenAI family.
_ERROR_TYPES = {400: "invalid_request_error", 404: "not_found_error"}


def error_type(status: int) -> str:
    """OpenAI's `error.type` for an error the proxy makes, as Ollama names it: else `api_error`."""
    return _ERROR_TYPES.get(status, "api_error")


class ErrorObject(TypedDict):
    message: str
    type: str
    param: str | None
    code: str | None


class ErrorBody(TypedDict):
    """`{"error": {"message", "type", "param", "code"}}`: an error of the OpenAI family."""

    error: ErrorObject


# ---------------------------------------------------------------------------------------------
# Answers


class FunctionDelta(TypedDict, total=False):
    name: str
    arguments: str


class ToolCallDelta(TypedDict, total=False):
    """A tool call of a message, or one fragment of it in a stream (`index` says which call)."""

    index: int
    id: str
    type: str
    function: FunctionDelta


class Delta(TypedDict, total=False):
    """A message (`choices[].message`) or the part of it a chunk adds (`choices[].delta`)."""

    role: str
    content: str | None
    refusal: str | None
    reasoning_content: str | None  # DeepSeek, vLLM, llama.cpp
    reasoning: str | None  # OpenRouter, Groq
    tool_calls: list[ToolCallDelta]


class TopLogprob(TypedDict, total=False):
    token: str
    logprob: float
    bytes: list[int] | None


class TokenLogprob(TopLogprob, total=False):
    top_logprobs: list[TopLogprob]


class Logprobs(TypedDict, total=False):
    content: list[TokenLogprob] | None


class Choice(TypedDict, total=False):
    index: int
    message: Delta  # whole answers
    delta: Delta  # stream chunks
    text: str  # /completions
    finish_reason: str | None
    logprobs: Logprobs | None


class Timings(TypedDict, total=False):
    """llama.cpp's own measurements."""

    prompt_ms: float
    predicted_ms: float


class ChatCompletion(TypedDict, total=False):
    """A whole answer (`chat.completion` or `text_completion`), or one stream chunk of either."""

    id: str
    object: str
    created: int
    model: str
    choices: list[Choice]
    usage: dict[str, Any] | None
    timings: Timings
    error: Any  # an error event in a stream


class EmbeddingItem(TypedDict, total=False):
    index: int
    embedding: list[float] | str  # str: base64 little-endian float32 (encoding_format base64)


class EmbeddingList(TypedDict, total=False):
    data: list[EmbeddingItem]
    model: str
    usage: dict[str, Any]


def _no_constant(name: str) -> Any:
    """NaN, Infinity and -Infinity are not JSON: Python reads them, no strict client would."""
    raise ValueError(f"{name} is not a JSON number")


def finite(text: str) -> float:
    """A JSON number as a float, refused when it overflows a double (1e400 would be read as inf)."""
    value = float(text)
    if value - value != 0.0:  # inf - inf is nan
        raise ValueError(f"the number {text[:40]} overflows a double")
    return value


_decode_json = json.JSONDecoder(parse_constant=_no_constant, parse_float=finite).decode


def loads(data: bytes | str) -> Any:
    """One JSON value from UTF-8 bytes, strictly: no NaN, no Infinity, no number that overflows a double
    (a client's decoder, Go's or JavaScript's, would refuse them, or read them as something else).
    Without `json.loads`' encoding sniffing: SSE data and the upstream's answers are UTF-8.

    Raises ValueError (UnicodeDecodeError and JSONDecodeError are ValueErrors), as `json.loads` does.
    """
    return _decode_json(data if isinstance(data, str) else data.decode("utf-8", "surrogatepass"))


# ---------------------------------------------------------------------------------------------
# Token counts: read here and nowhere else


class Usage(NamedTuple):
    """Token counts of one exchange."""

    prompt_tokens: int
    completion_tokens: int

    def record(self) -> dict[str, int]:
        """The form saved in flow metadata."""
        return {"prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens}


def token_count(value: Any) -> int:
    """A token count as an integer; anything that is not a finite number counts 0."""
    if isinstance(value, bool) or not isinstance(value, int | float) or value != value or value in (_INF, -_INF):
        return 0
    return int(value)


_INF = float("inf")


def usage_of(value: Any) -> Usage | None:
    """The counts of an answer's `usage` object (None when there is none), leniently (a count that is
    no number counts 0): chat completions' `prompt_tokens`/`completion_tokens`, or the Responses and
    Anthropic APIs' `input_tokens`/`output_tokens`. What the proxy logs of an answer it passes on."""
    if not isinstance(value, dict):
        return None
    if "prompt_tokens" not in value and "input_tokens" in value:
        return Usage(token_count(value.get("input_tokens")), token_count(value.get("output_tokens")))
    return Usage(token_count(value.get("prompt_tokens")), token_count(value.get("completion_tokens")))


class InvalidUsage(ValueError):
    """A usage count that is no integer in [0, 2^63): the upstream's fault (a 502 on Ollama routes)."""


INT64_MAX = 2**63 - 1
_COUNTS = ("prompt_tokens", "completion_tokens", "total_tokens")


def checked_usage(value: Any) -> Usage | None:
    """The counts of an answer's `usage`, which Ollama's answers carry as Go ints: each must be absent,
    null, or an integer in [0, 2^63). Raises `InvalidUsage` naming the first that is not."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise InvalidUsage(f"the upstream sent invalid usage: {json.dumps(value)[:100]}")
    for name in _COUNTS:
        count = value.get(name)
        if count is not None and (isinstance(count, bool) or not isinstance(count, int) or not 0 <= count <= INT64_MAX):
            raise InvalidUsage(f"the upstream sent an invalid usage count: {name} = {str(count)[:60]}")
    return Usage(value.get("prompt_tokens") or 0, value.get("completion_tokens") or 0)


def invalid_json(data: bytes | str, error: ValueError) -> str:
    """Why an upstream's JSON that `loads` refused is invalid, for its error message: not JSON at all, an
    invalid usage count (Ollama's answers carry usage as Go ints), or numbers no client can read."""
    try:
        lenient = json.loads(data)
    except (ValueError, RecursionError):
        text = (data if isinstance(data, str) else data[:200].decode("utf-8", "replace"))[:200]
        return f"the upstream sent an answer that is not JSON ({error}): {text!r}"
    if isinstance(lenient, dict):
        try:
            checked_usage(lenient.get("usage"))
        except InvalidUsage as e:
            return str(e)
    return f"the upstream sent invalid JSON numbers ({error})"


def answerless(answer: dict[str, Any], member: str) -> str | None:
    """Why a 200 answer is no answer (None: it is one): an `error` in it (a quota, a gateway's failure),
    or no `member` list (`choices`, embeddings' `data`). The message carries the upstream's own words."""
    if "error" in answer:
        error = answer["error"]
        message = error.get("message") if isinstance(error, dict) else error
        return f"upstream error: {str(message or json.dumps(error))[:500]}"
    if not isinstance(answer.get(member), list):
        return f"the upstream answered 200 without an answer (no {member!r}): {json.dumps(answer)[:200]}"
    return None
