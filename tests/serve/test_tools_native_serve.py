"""Tool calls parsed by a pool's own tool-call parser (issue 17), through Serve and the official client: a pool
named with a `tool_call_parser` (the fake engine's `test_hermes`, a TEST DOUBLE of vLLM's hermes parser, writing a
hermes `<tool_call>` block) answers in OpenAI's tool_calls shape, streamed and not; tool_choice "required" on the
same pool takes the structured path. What the builder tells the ingress (PoolFacts) and what the pool returns
(Completion.parsed) cross Ray here, as in production."""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.serve

APP = "native-tools"
PREFIX = "/native-tools"
CALL = '<tool_call>{"name": "get_weather", "arguments": {"city": "Oslo"}}</tool_call>'
CONFIG = {
    "model": {"id": "fake"},
    "pools": [{"name": "parsing", "engine": "fake", "num_cpus": 0,
               "engine_settings": {"output_text": CALL, "tool_call_parser": "test_hermes"}}],
    "server": {"ingress_num_cpus": 0},
}
TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Weather in a city",
                                            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]
MESSAGES = [{"role": "user", "content": "Weather in Oslo?"}]


def test_a_pool_with_a_tool_call_parser_answers_with_tool_calls(serve_url):
    from openai import OpenAI

    from rayhet.testing.driver import deployed

    client = OpenAI(base_url=f"{serve_url}{PREFIX}/v1", api_key="unused", max_retries=0)
    with deployed(CONFIG, APP, PREFIX):
        r = client.chat.completions.create(model="fake", messages=MESSAGES, tools=TOOLS, max_tokens=200)
        (call,) = r.choices[0].message.tool_calls
        assert r.choices[0].finish_reason == "tool_calls" and r.choices[0].message.content is None
        assert call.function.name == "get_weather" and json.loads(call.function.arguments) == {"city": "Oslo"}
        assert r.usage.completion_tokens == len(CALL)

        chunks = list(client.chat.completions.create(model="fake", messages=MESSAGES, tools=TOOLS, max_tokens=200,
                                                     stream=True, stream_options={"include_usage": True}))
        deltas = [tc for c in chunks if c.choices for tc in c.choices[0].delta.tool_calls or []]
        assert [(d.index, d.id, d.function.name, d.function.arguments) for d in deltas] == [
            (0, call.id, "get_weather", '{"city": "Oslo"}')]
        assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["tool_calls"]
        assert chunks[-1].usage.completion_tokens == len(CALL)
        assert chunks[-1].usage.prompt_tokens == r.usage.prompt_tokens

        # "required": structured output on the same pool (the fake ignores the schema: its text is the answer),
        # with rayhet's tool system message as the prompt, not the template's tools block
        forced = client.chat.completions.create(model="fake", messages=MESSAGES, tools=TOOLS, max_tokens=200,
                                                tool_choice="required")
        assert forced.choices[0].message.tool_calls is None and forced.choices[0].message.content == CALL
        assert forced.usage.prompt_tokens != r.usage.prompt_tokens


LLAMA_APP, LLAMA_PREFIX = "native-tools-llama", "/native-tools-llama"
LLAMA_CONFIG = {
    "model": {"id": "rayhet-tiny", "gguf": "embedded:tiny"},
    "pools": [{"name": "cpu", "engine": "llama_cpp", "num_cpus": 0,
               "engine_settings": {"n_threads": 1, "n_ctx": 1024, "n_slots": 2, "tool_call_parser": "hermes"}}],
    "server": {"ingress_num_cpus": 0},
}


def test_a_llama_cpp_pool_with_the_hermes_parser_gets_the_models_own_tool_prompt(serve_url):
    """The test model's template writes tools Hermes-style: with `tool_call_parser: hermes` a tool_choice auto
    request reaches the llama.cpp pool as that template renders it (its prompt tokens say so), and "required"
    as rayhet's structured prompt. The random model writes no call: its text is the answer."""
    from openai import OpenAI

    from rayhet.models import default_model_path
    from rayhet.serve.native_tools import template_tools
    from rayhet.serve.tokens import GGUFTokenizer
    from rayhet.testing.driver import deployed

    native = GGUFTokenizer(str(default_model_path())).chat_ids(MESSAGES, tools=template_tools([t["function"] for t in TOOLS]))
    client = OpenAI(base_url=f"{serve_url}{LLAMA_PREFIX}/v1", api_key="unused", max_retries=0, timeout=120)
    with deployed(LLAMA_CONFIG, LLAMA_APP, LLAMA_PREFIX):
        r = client.chat.completions.create(model="rayhet-tiny", messages=MESSAGES, tools=TOOLS, max_tokens=8,
                                           temperature=0)
        assert r.usage.prompt_tokens == len(native)
        assert r.choices[0].message.tool_calls is None and isinstance(r.choices[0].message.content, str)
        forced = client.chat.completions.create(model="rayhet-tiny", messages=MESSAGES, tools=TOOLS, max_tokens=8,
                                                tool_choice="required")
        assert forced.usage.prompt_tokens != len(native)
