"""Request validation: what is accepted, and the sentence a client gets for what is not."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from addon.wire.ollama import ChatRequest, GenerateRequest, describe


def error_of(model: type, data: dict) -> str:
    with pytest.raises(ValidationError) as error:
        model.model_validate(data)
    return describe(error.value)


def test_defaults() -> None:
    chat = ChatRequest.model_validate({"model": "m"})
    assert chat.stream is True and chat.messages == []
    assert GenerateRequest.model_validate({"model": "m"}).stream is True


def test_roles_are_case_insensitive_but_known() -> None:
    chat = ChatRequest.model_validate({"model": "m", "messages": [{"role": "USER", "content": "x"}]})
    assert chat.messages[0].role == "user"
    assert "invalid role" in error_of(ChatRequest, {"model": "m", "messages": [{"role": "wizard"}]})


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({}, "model is required"),
        ({"model": 1}, "model must be a string"),
        ({"model": "m", "stream": "true"}, "stream must be a boolean"),
        ({"model": "m", "options": {"temperature": "hot"}}, "options.temperature must be"),
        ({"model": "m", "think": "extreme"}, "invalid think value"),
        ({"model": "m", "top_logprobs": 99}, "top_logprobs"),
        ({"model": "m", "messages": [{"role": "user", "content": 5}]}, "messages.0.content must be a string"),
    ],
)
def test_errors_name_the_field(data: dict, expected: str) -> None:
    assert expected in error_of(ChatRequest, data)


def test_unknown_fields_are_kept_for_reporting() -> None:
    chat = ChatRequest.model_validate(
        {"model": "m", "frobnicate": 1, "messages": [{"role": "user", "content": "", "x": 2}]}
    )
    assert chat.unknown_fields() == ["frobnicate"] and chat.messages[0].unknown_fields() == ["x"]
