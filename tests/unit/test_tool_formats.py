"""rayhet's tool-call parsers for llama.cpp pools (rayhet.engines.tool_formats), on outputs as each model family
writes them, and the llama.cpp engine reading its whole output with the pool's parser."""

from __future__ import annotations

import json

import pytest

from rayhet.engines.base import GenerationRequest, InvalidRequestError, SamplingParams
from rayhet.engines.tool_formats import PARSERS, parse_hermes, parse_llama3_json, parse_mistral


def calls(reply):
    return [(c.name, json.loads(c.arguments)) for c in reply.tool_calls]


def test_hermes_reads_every_call_and_keeps_the_text_before_them():
    text = ('Let me look.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n</tool_call>\n'
            '<tool_call>{"name": "get_time", "arguments": {"tz": "CET; summer"}}</tool_call>')
    r = parse_hermes(text)
    assert calls(r) == [("get_weather", {"city": "Oslo"}), ("get_time", {"tz": "CET; summer"})]
    assert r.content == "Let me look."
    assert len({c.id for c in r.tool_calls}) == 2 and all(c.id.startswith("call_") for c in r.tool_calls)


@pytest.mark.parametrize("text", ["plain answer", "<tool_call>{not json}</tool_call>",
                                  '<tool_call>{"arguments": {}}</tool_call>', "<tool_call> unclosed"])
def test_an_output_without_a_readable_call_is_the_answer(text):
    for parse in PARSERS.values():
        r = parse(text)
        assert r.tool_calls == [] and r.content == text


def test_llama3_json_reads_one_or_several_calls_with_parameters():
    r = parse_llama3_json('<|python_tag|>{"name": "a", "parameters": {"x": "1;2"}}; {"name": "b", "parameters": {}}')
    assert calls(r) == [("a", {"x": "1;2"}), ("b", {})] and r.content is None
    assert calls(parse_llama3_json('{"name": "a", "arguments": {"q": "\\"quoted;\\""}}')) == [("a", {"q": '"quoted;"'})]


def test_mistral_reads_the_array_after_its_marker():
    r = parse_mistral('Sure. [TOOL_CALLS] [{"name": "f", "arguments": {"n": 2}}, {"name": "g", "arguments": {}}]')
    assert calls(r) == [("f", {"n": 2}), ("g", {})] and r.content == "Sure."


def test_the_setting_names_only_the_parsers_there_are(tiny_gguf):
    from pydantic import ValidationError

    from rayhet.engines.llama_cpp import LlamaCppSettings

    assert LlamaCppSettings(model_path=str(tiny_gguf), tool_call_parser="hermes").tool_call_parser == "hermes"
    with pytest.raises(ValidationError, match="tool_call_parser"):
        LlamaCppSettings(model_path=str(tiny_gguf), tool_call_parser="hermz")


CALL = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n</tool_call>'
WEATHER = {"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}


def _tool_request(rid: str, **sampling) -> GenerationRequest:
    return GenerationRequest(request_id=rid, prompt="weather in Oslo?", tools=[WEATHER],
                             sampling=SamplingParams(**{"temperature": 0.0, "max_tokens": 80, **sampling}))


async def test_a_llama_cpp_pool_with_a_parser_reads_its_whole_output_into_calls(engine_factory):
    """The random model is held to the text of a call by a grammar (as a trained model would write it): the last
    delta carries the parsed call; streamed deltas carry the text as generated."""
    engine = await engine_factory(tool_call_parser="hermes")
    engine._grammar = lambda sp: "root ::= " + json.dumps(CALL)
    deltas = [d async for d in engine.generate(_tool_request("t"))]
    assert "".join(d.text for d in deltas) == CALL and deltas[-1].finish_reason == "stop"
    assert all(d.parsed is None for d in deltas[:-1])
    assert calls(deltas[-1].parsed) == [("get_weather", {"city": "Oslo"})] and deltas[-1].parsed.content is None


async def test_free_text_is_the_answer_and_a_pool_without_a_parser_refuses_tools(engine_factory):
    engine = await engine_factory(tool_call_parser="hermes")
    deltas = [d async for d in engine.generate(_tool_request("free", max_tokens=8))]
    text = "".join(d.text for d in deltas)
    if "<tool_call>" not in text:  # (a random model writing a whole call by chance: not this seed)
        assert deltas[-1].parsed.tool_calls == [] and deltas[-1].parsed.content == text
    plain = await engine_factory()
    with pytest.raises(InvalidRequestError) as e:
        [d async for d in plain.generate(_tool_request("no-parser"))]
    assert e.value.param == "tools"


def test_the_test_models_template_writes_tools_hermes_style(tiny_gguf):
    """Format 2 of the test models: a chat template with tool support, so the ingress (renders_tools) sends
    tool_choice auto to a pool with the hermes parser in the model's own format."""
    from rayhet.serve.tokens import GGUFTokenizer

    assert GGUFTokenizer(str(tiny_gguf)).renders_tools() is True
