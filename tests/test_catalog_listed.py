"""What a server's GET /models entry states about a model's capabilities (addon/catalog/listed.py),
read through `infer`: one test per server shape, each entry copied from the server's documentation
or recorded from the server (the comment says where). A stated fact wins over the name's guess;
where the entry says nothing, the name decides."""

from __future__ import annotations

import json
from pathlib import Path

from addon.catalog.listed import stated
from addon.catalog.models import infer

FIXTURES = Path(__file__).parent / "fixtures"


def test_openrouter() -> None:
    # openrouter.ai/docs/models, "Model Object Schema" (its fields and their documented values;
    # embeddings models are listed with output_modalities ["embeddings"], `?output_modalities=embeddings`).
    chat = {
        "id": "google/gemini-2.5-pro-preview",
        "canonical_slug": "google/gemini-2.5-pro-preview",
        "name": "Google: Gemini 2.5 Pro Preview",
        "created": 1747761924,
        "description": "Gemini 2.5 Pro is Google's state-of-the-art AI model ...",
        "context_length": 1048576,
        "architecture": {
            "modality": "text+image->text",
            "input_modalities": ["text", "image", "file"],
            "output_modalities": ["text"],
            "tokenizer": "Gemini",
            "instruct_type": None,
        },
        "pricing": {"prompt": "0.00000125", "completion": "0.00001"},
        "top_provider": {"context_length": 1048576, "max_completion_tokens": 65536, "is_moderated": False},
        "per_request_limits": None,
        "supported_parameters": ["tools", "tool_choice", "max_tokens", "temperature", "reasoning", "include_reasoning"],
    }
    model = infer(chat["id"], chat)
    assert model.capabilities == ("completion", "tools", "vision", "thinking")
    assert (model.context_length, model.max_output_tokens, model.created) == (1048576, 65536, 1747761924)
    # A chat model whose parameters have no tools and no reasoning, and that takes text only.
    plain = {**chat, "id": "acme/gemini-lookalike", "supported_parameters": ["max_tokens", "temperature"]}
    plain["architecture"] = {**chat["architecture"], "input_modalities": ["text"]}
    assert infer(plain["id"], plain).capabilities == ("completion",)  # the name alone would add vision
    # An embeddings model by a name that does not say so.
    embeddings = {
        **chat,
        "id": "qwen/qwen3-8b-retrieval",
        "architecture": {
            "modality": "text->embeddings",
            "input_modalities": ["text"],
            "output_modalities": ["embeddings"],
        },
        "supported_parameters": [],
    }
    assert infer("qwen/qwen3-8b-retrieval").capabilities == ("completion", "tools", "thinking")  # the name's guess
    assert infer(embeddings["id"], embeddings).capabilities == ("embedding",)


def test_mistral() -> None:
    # Mistral's API specification, GET /v1/models: ModelCapabilities (completion_chat, completion_fim,
    # function_calling, fine_tuning, vision, ...), max_context_length, type "base".
    ocr = {
        "id": "mistral-ocr-2505",
        "object": "model",
        "created": 1748000000,
        "owned_by": "mistralai",
        "capabilities": {
            "completion_chat": False,
            "completion_fim": False,
            "function_calling": False,
            "fine_tuning": False,
            "vision": False,
            "classification": False,
        },
        "name": "mistral-ocr-2505",
        "description": "Official mistral-ocr-2505 Mistral AI model",
        "max_context_length": 32768,
        "aliases": [],
        "deprecation": None,
        "default_model_temperature": None,
        "type": "base",
    }
    assert infer(ocr["id"]).capabilities == ("completion", "tools")  # the name's guess
    assert infer(ocr["id"], ocr).capabilities == ()
    codestral = {
        **ocr,
        "id": "codestral-2501",
        "capabilities": {
            **ocr["capabilities"],
            "completion_chat": True,
            "completion_fim": True,
            "function_calling": True,
        },
        "max_context_length": 262144,
    }
    model = infer(codestral["id"], codestral)
    assert (model.capabilities, model.context_length) == (("completion", "tools", "insert"), 262144)
    pixtral = {**codestral, "id": "pixtral-large-2411", "capabilities": {**codestral["capabilities"], "vision": True}}
    pixtral["capabilities"]["completion_fim"] = False
    assert infer(pixtral["id"], pixtral).capabilities == ("completion", "tools", "vision")


def test_together() -> None:
    # Together AI's GET /v1/models answers a plain list of ModelObject (together-python's
    # together/types/models.py: type is chat, language, code, image, embedding, moderation, rerank).
    listing = [
        {
            "id": "togethercomputer/m2-bert-80M-8k-retrieval",
            "object": "model",
            "created": 0,
            "type": "embedding",
            "display_name": "M2-BERT-Retrieval-8k",
            "organization": "Together",
            "link": "https://huggingface.co/togethercomputer/m2-bert-80M-8k-retrieval",
            "license": "apache-2.0",
            "context_length": 8192,
            "pricing": {"hourly": 0, "input": 0.008, "output": 0, "base": 0, "finetune": 0},
        },
        {
            "id": "Salesforce/Llama-Rank-V1",
            "object": "model",
            "created": 0,
            "type": "rerank",
            "context_length": 8192,
        },
        {
            "id": "meta-llama/Llama-3.3-70B-Instruct-Turbo",
            "object": "model",
            "created": 1733443200,
            "type": "chat",
            "context_length": 131072,
        },
    ]
    assert [infer(e["id"], e).capabilities for e in listing] == [("embedding",), (), ("completion", "tools")]
    assert infer(listing[0]["id"]).capabilities == ("completion", "tools")  # the name's guess


def test_fireworks() -> None:
    # Fireworks AI's model entries: supports_chat, supports_tools, supports_image_input, context_length,
    # kind (its REST API spells them supportsTools, supportsImageInput, contextLength: docs.fireworks.ai,
    # "Get Model").
    entry = {
        "id": "accounts/fireworks/models/deepseek-v3",
        "object": "model",
        "owned_by": "fireworks",
        "created": 1735084800,
        "kind": "HF_BASE_MODEL",
        "supports_chat": True,
        "supports_image_input": False,
        "supports_tools": False,
        "context_length": 131072,
    }
    model = infer(entry["id"], entry)
    assert (model.capabilities, model.context_length) == (("completion",), 131072)
    vision = {**entry, "id": "accounts/fireworks/models/acme-13b", "supports_image_input": True, "supports_tools": True}
    assert infer(vision["id"], vision).capabilities == ("completion", "tools", "vision")
    # supports_chat false: a base model may still complete prompts; it states nothing.
    assert infer("accounts/fireworks/models/acme-base", {"supports_chat": False}).capabilities == (
        "completion",
        "tools",
    )
    assert infer("accounts/fireworks/models/acme-13b", {"supportsImageInput": True}).capabilities == (
        "completion",
        "tools",
        "vision",
    )


def test_lm_studio() -> None:
    # lmstudio.ai/docs/developer/rest/endpoints, GET /api/v0/models, "Response format" (LM Studio's
    # OpenAI-compatible /v1/models carries only id, object and owned_by: nothing to read there).
    listing = [
        {
            "id": "qwen2-vl-7b-instruct",
            "object": "model",
            "type": "vlm",
            "publisher": "mlx-community",
            "arch": "qwen2_vl",
            "compatibility_type": "mlx",
            "quantization": "4bit",
            "state": "not-loaded",
            "max_context_length": 32768,
        },
        {
            "id": "meta-llama-3.1-8b-instruct",
            "object": "model",
            "type": "llm",
            "publisher": "lmstudio-community",
            "arch": "llama",
            "compatibility_type": "gguf",
            "quantization": "Q4_K_M",
            "state": "not-loaded",
            "max_context_length": 131072,
        },
        {
            "id": "text-embedding-nomic-embed-text-v1.5",
            "object": "model",
            "type": "embeddings",
            "publisher": "nomic-ai",
            "arch": "nomic-bert",
            "compatibility_type": "gguf",
            "quantization": "Q4_0",
            "state": "not-loaded",
            "max_context_length": 2048,
        },
    ]
    models = [infer(e["id"], e) for e in listing]
    assert [m.capabilities for m in models] == [
        ("completion", "tools", "vision"),
        ("completion", "tools"),
        ("embedding",),
    ]
    assert [m.context_length for m in models] == [32768, 131072, 2048]
    # A vision model by a name that does not say so, and a text-only one by a name that does.
    assert infer("acme-7b", {"type": "vlm"}).capabilities == ("completion", "tools", "vision")
    assert infer("llava-lookalike", {"type": "llm"}).capabilities == ("completion", "tools")


def test_llama_server() -> None:
    # Recorded from llama.cpp's llama-server in router mode (tests/fixtures/llama-server/models.json):
    # `architecture` says what the model takes and gives; Gemma 3 270M takes text only (no mmproj).
    # It says ["text"] of the preset it embeds with too: that states no "embedding" absence.
    recorded = json.loads((FIXTURES / "llama-server" / "models.json").read_text())["response"]["body"]["data"]
    entries = {e["id"]: e for e in recorded}
    chat, embed = infer("gemma3", entries["gemma3"]), infer("gemma3-embed", entries["gemma3-embed"])
    assert infer("gemma3").capabilities == ("completion", "tools", "vision")  # the name's guess
    assert (chat.capabilities, chat.context_length) == (("completion", "tools"), entries["gemma3"]["meta"]["n_ctx"])
    assert embed.capabilities == ("completion", "embedding")


def test_entries_that_state_nothing_keep_the_names_guess() -> None:
    # OpenAI, vLLM (max_model_len), Groq (context_window), LiteLLM and Ollama's own /v1/models: id,
    # object, created, owned_by (and a context length) only.
    for entry in (
        {"id": "gpt-4o-mini", "object": "model", "created": 1721172741, "owned_by": "system"},
        {"id": "gpt-4o-mini", "object": "model", "owned_by": "vllm", "root": "gpt-4o-mini", "max_model_len": 4096},
        {"id": "gpt-4o-mini", "object": "model", "owned_by": "openai", "active": True, "context_window": 131072},
        {"id": "gpt-4o-mini", "object": "model", "created": 1677610602, "owned_by": "openai"},
    ):
        assert stated(entry) == {}
        assert infer("gpt-4o-mini", entry).capabilities == ("completion", "tools", "vision")
    # Values of another type, or unknown, are ignored.
    odd = {
        "type": "base",
        "kind": 3,
        "capabilities": ["completion"],
        "supports_tools": "yes",
        "architecture": {"input_modalities": "image"},
        "supported_parameters": None,
    }
    assert stated(odd) == {}
    assert stated({"architecture": "text"}) == {}
