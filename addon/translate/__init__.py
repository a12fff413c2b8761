"""Translation between the Ollama and OpenAI APIs, as pure functions: requests (`request`), whole
answers and errors (`response`), and streams (`stream`)."""
