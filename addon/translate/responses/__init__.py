"""The OpenAI Responses API (`POST /v1/responses`) over an OpenAI chat-completions upstream.

Pure translations, free of mitmproxy, stateless as real Ollama's `/v1/responses` is
(openai/responses.go and middleware/openai.go in ollama/ollama). The request is read through the
strict models of `wire.responses`: a field of the wrong type is a 400, never an exception.

- `responses_request(body, upstream_model)` → a `Translation` (`translate.upstream`), or
  `ResponsesError` (400) for input that cannot be translated;
- `responses_answer(chat_completion, client_model, request_body)` → the Response object, or
  `ResponsesError` (502) when the upstream's answer is not a chat completion;
- `ResponsesStream(client_model, request_body)`: decoded chat.completion.chunk dicts in,
  Responses SSE events out (`event: <type>\\ndata: <json>\\n\\n`), one bytes object per event;
- `error_body(...)` and `upstream_error(...)`: errors in OpenAI's shape, statuses kept.

Choices where Ollama is silent or falls short (each is tested in tests/test_translate_responses.py):

- `previous_response_id`, `conversation`, `store: true`, `background: true`, `item_reference`
  items and stored `prompt`s are refused with a 400 naming the field: nothing is stored here.
  (Ollama parses none of them and silently answers without the earlier context; `store` it never
  reads and always answers `store: false`, so an absent or false `store`, which Codex sends, passes.)
- `reasoning` input items are dropped (with a warning): chat completions has no portable field
  for earlier reasoning, and some upstreams reject one (DeepSeek's `reasoning_content`).
  Ollama feeds `encrypted_content` back as thinking; its models see their own template's field.
- Reasoning output (upstream `reasoning_content` or `reasoning`) becomes a `reasoning` item with
  one `summary_text` part, streamed as `response.reasoning_summary_text.delta`, as Ollama does
  and Codex shows (`response.reasoning_text.*` is raw chain of thought, which Codex hides).
- `max_output_tokens` → `max_tokens`: the field every OpenAI-compatible server reads (Ollama's
  own /v1/chat/completions reads only `max_tokens`; llama.cpp, vLLM, LM Studio too), and the one
  the addon sends for Ollama's `num_predict`; lowered to the model's known limit, and sent as
  `max_completion_tokens` to the models that want it, as on every route (`endpoints.base.forward`).
- `developer` messages → `system` (what OpenAI does for models without a developer role, and
  the role every chat template knows); adjacent system messages (`instructions`, Codex's two
  developer messages) are joined into one, as many chat templates take only one. `tool_choice` is honoured (Ollama ignores it); text
  before tool calls is kept (Ollama drops it).
- Tools: function tools as they are (`strict` kept); `namespace` tools (Codex sends one) as their
  member functions named `<namespace>__<name>`, answered back as `name` + `namespace` as the
  Responses API has it (Ollama names them `<namespace>.<name>`, which OpenAI rejects);
  `web_search` (Codex declares it in every request; Ollama runs it on its cloud search) is dropped
  with a warning; every other built-in tool is refused with a 400 naming its type.
- Images returned by a `function_call_output` go in a user message after the tool results:
  chat-completions tool messages carry text only.
- A stream that fails after it started ends with `error` and `response.failed`; the `error`
  event carries its message and code also as an `error` object, on which the openai SDKs raise
  `APIError` (as they do for the chat-completions error events of `/v1/chat/completions`).
"""

from addon.translate.responses.answer import new_id, response_object, responses_answer
from addon.translate.responses.errors import ResponsesError, error_body, upstream_error
from addon.translate.responses.request import responses_request
from addon.translate.responses.stream import ResponsesStream, sse_event
from addon.translate.responses.tools import NAMESPACE_SEPARATOR, namespaced_names

__all__ = [
    "NAMESPACE_SEPARATOR",
    "ResponsesError",
    "ResponsesStream",
    "error_body",
    "namespaced_names",
    "new_id",
    "response_object",
    "responses_answer",
    "responses_request",
    "sse_event",
    "upstream_error",
]
