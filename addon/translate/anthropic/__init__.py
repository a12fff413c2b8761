"""The Anthropic Messages API over an OpenAI chat-completions upstream: plain data in, plain data out.

`POST /v1/messages` and `POST /v1/messages/count_tokens`, as real Ollama serves them (since 0.14,
for Claude Code), translated to `{base}/chat/completions`. Nothing here does I/O or knows mitmproxy:

- `messages_request(body, upstream_model)` checks an Anthropic request and builds the OpenAI chat
  body (`AnthropicError` 400 for what Anthropic itself would refuse);
- `messages_response(answer, client_model)` turns a whole chat.completion into an Anthropic Message;
- `MessagesStream` turns decoded OpenAI stream chunks into Anthropic SSE events, event by event;
- `error_body`, `upstream_error` give errors Anthropic's shape and types;
- `count_tokens(body)` estimates input tokens (the rule is in `estimate_input_tokens`).

What is translated and how (a request):
- `system` (a string or text blocks, joined with "\\n") → a first `system` message; `system` turns
  inside `messages` (Claude Code sends them) stay `system` messages in place (or become user
  messages with `system_turns="user"`, for chat templates that refuse a late system message).
- User blocks in order: `text` and `image` (base64 → a `data:` URL, `url` → the URL) become one
  user message per run; each `tool_result` becomes a `tool` message (text blocks joined; images in
  a result go in a user message right after the tool messages, as OpenAI tool messages carry
  text only; `is_error: true` prefixes the text with "Error: "); `document` blocks with a text
  source become text, base64 PDFs OpenAI's `file` part.
- Assistant blocks: `text` → content, `tool_use` → `tool_calls` (input as JSON text); `thinking`
  and `redacted_thinking` are dropped (OpenAI upstreams take no reasoning in history, and
  Anthropic itself ignores earlier turns' thinking), and so is `cache_control` everywhere.
- `tools` → function tools (`input_schema` → `parameters`, `strict` kept); built-in/server tools
  (any `type` other than `custom`) are dropped with a warning; `defer_loading` tools are sent only
  once a `tool_reference` in a tool result has loaded them, as Anthropic's tool search does.
- `tool_choice` auto/any/tool/none → auto/required/{function}/none; `disable_parallel_tool_use`
  → `parallel_tool_calls: false`.
- `max_tokens` (required) → `max_tokens`, `temperature`, `top_p` as they are, `top_k` only with
  pass-through on, `stop_sequences` → `stop`, `output_config.format` (JSON schema) →
  `response_format`, `stream` → `stream` + `stream_options.include_usage`; `metadata` ignored.
- `thinking` and `output_config.effort` → a neutral `think` value in Ollama's terms
  (True/False/"low"/"medium"/"high"/"max"/None) that the caller sends in its think style.

Answers: reasoning (`reasoning_content` or `reasoning`) → a `thinking` block (signature ""),
text or refusal → a `text` block, tool calls → `tool_use` blocks; finish reasons stop/length/
tool_calls/content_filter → end_turn/max_tokens/tool_use/refusal (`stop_sequence` when the
upstream names the matched stop string, as vLLM does in `stop_reason`).
"""

from addon.translate.anthropic.answer import messages_response, stop_reason, usage_of
from addon.translate.anthropic.errors import AnthropicError, error_body, error_type, new_id, upstream_error
from addon.translate.anthropic.request import count_tokens, messages_request
from addon.translate.anthropic.stream import MessagesStream, sse
from addon.translate.anthropic.tokens import IMAGE_TOKENS, MESSAGE_TOKENS, estimate_input_tokens

__all__ = [
    "IMAGE_TOKENS",
    "MESSAGE_TOKENS",
    "AnthropicError",
    "MessagesStream",
    "count_tokens",
    "error_body",
    "error_type",
    "estimate_input_tokens",
    "messages_request",
    "messages_response",
    "new_id",
    "sse",
    "stop_reason",
    "upstream_error",
    "usage_of",
]
