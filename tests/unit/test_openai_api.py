"""OpenAI request validation: every field's type error names the field and what it accepts (issue 12)."""

import pytest

from rayhet.serve import openai_api
from rayhet.serve.openai_api import APIError, ChatRequest, CompletionRequest, parse_request

BASE = {
    CompletionRequest: {"model": "m", "prompt": "hi"},
    ChatRequest: {"model": "m", "messages": [{"role": "user", "content": "hi"}]},
}
# one value of each JSON type; for every field, some of them are of a type it does not accept
WRONG = [{"an": "object"}, "a string", 1.5, 7, True, [{"an": "object"}]]


def test_string_for_a_number_names_what_is_accepted():
    with pytest.raises(APIError) as e:
        parse_request(CompletionRequest, {**BASE[CompletionRequest], "temperature": "hot"})
    assert e.value.status == 400 and e.value.param == "temperature"
    assert e.value.message == "Invalid type for 'temperature': expected a number, but got a string instead."
    assert "valid integer" not in e.value.message


@pytest.mark.parametrize("cls", [CompletionRequest, ChatRequest], ids=lambda c: c.__name__)
def test_every_field_names_its_accepted_type(cls):
    checked = []
    for name, field in cls.model_fields.items():
        for value in WRONG:
            try:
                parse_request(cls, {**BASE[cls], name: value})
            except APIError as e:
                if "Invalid type" not in e.message:
                    continue  # a range or value error (e.g. n=7): not what this test is about
                assert e.status == 400 and e.param == name, (name, value, e.message)
                assert f"expected {openai_api.accepted(field.annotation)}" in e.message, (name, e.message)
                assert "Input should be" not in e.message
                checked.append(name)
                break
    assert len(checked) == len(cls.model_fields), sorted(set(cls.model_fields) - set(checked))


@pytest.mark.parametrize("body, param, words", [
    ({"messages": [{"role": "user", "content": 5}]}, "messages.0.content", "a string, an array of objects or null"),
    ({"messages": [{"role": "bob", "content": "x"}]}, "messages.0.role", "one of 'system'"),
    ({"messages": [{"role": "user", "content": [{"type": "text", "text": 3}]}]}, "messages.0.content.0.text", "expected a string"),
    ({"messages": [{"role": "user", "content": [{"type": "image", "text": "x"}]}]}, "messages.0.content.0.type", "'text'"),
    ({"messages": "hi"}, "messages", "an array of objects"),
])
def test_nested_chat_fields_are_named(body, param, words):
    with pytest.raises(APIError) as e:
        parse_request(ChatRequest, {"model": "m", **body})
    assert e.value.param == param and words in e.value.message, e.value.message


def test_mixed_prompt_array():
    with pytest.raises(APIError) as e:
        parse_request(CompletionRequest, {"model": "m", "prompt": [1, "a"]})
    assert e.value.param == "prompt"
    assert "a string, an array of integers or an array of strings" in e.value.message


def test_range_errors_keep_their_message():
    with pytest.raises(APIError) as e:
        parse_request(CompletionRequest, {**BASE[CompletionRequest], "max_tokens": 0})
    assert e.value.param == "max_tokens" and "greater than or equal to 1" in e.value.message
