"""API families of coding agents: pure translations to and from OpenAI chat completions."""
