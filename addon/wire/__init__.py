"""The wire formats: Ollama's shapes (`ollama`), OpenAI's (`openai`), and the one SSE decoder (`sse`)."""
