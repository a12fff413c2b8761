"""The embedding routes (addon/endpoints/ollama_embed.py): the upstream's vectors converted to Ollama's answers."""

from __future__ import annotations

import math
import time

import pytest

from addon.endpoints import ollama_embed as embeddings
from addon.translate.response import Clock
from harness.upstream import recording


def test_embeddings_conversion() -> None:
    parsed = {
        "data": [{"index": 1, "embedding": [0.0, 2.0]}, {"index": 0, "embedding": [3.0, 4.0, 12.0]}],
        "usage": {"prompt_tokens": 9},
    }
    clock = Clock(time.time_ns())
    answer = embeddings.embed_answer(parsed, "e", 2, clock)
    assert answer["embeddings"] == [pytest.approx([0.6, 0.8]), [0.0, 1.0]]
    assert answer["prompt_eval_count"] == 9 and answer["model"] == "e" and answer["load_duration"] == 0
    assert embeddings.vectors_of(parsed)[0] == [3.0, 4.0, 12.0], "the legacy route's vector, as sent"


def test_base64_embeddings_are_decoded() -> None:
    exchange = recording("embeddings/single-input-base64")["response"]["body"]
    values = embeddings.vector(exchange["data"][0]["embedding"])
    assert len(values) == 1536 and math.isclose(math.fsum(v * v for v in values), 1.0, rel_tol=1e-4)
    assert embeddings.normalized([0.0, 0.0], None) == [0.0, 0.0]
