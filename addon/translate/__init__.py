"""Translation between the Ollama and OpenAI APIs, as pure functions: requests (`request`), whole
answers and errors (`response`), and streams (`stream`); the agents' APIs over OpenAI chat
completions: the Anthropic Messages API (`anthropic`, Claude Code) and the OpenAI Responses API
(`responses`, Codex CLI)."""
