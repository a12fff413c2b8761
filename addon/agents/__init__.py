"""The agents' APIs (Anthropic Messages, OpenAI Responses) as pure translations to and from OpenAI chat completions."""
