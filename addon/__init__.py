"""Ollama-OpenAI Proxy: a mitmproxy addon serving the Ollama API from an OpenAI-compatible upstream."""
