"""Tool calls in the model's own format (issue 17): a pool whose engine has a tool-call parser gets the prompt
its template makes with the tools and answers with the parser's reading; other pools, and tool_choice
"required" or a named function on any pool, take the structured path. Driven without Ray: the ingress's FastAPI
app in process, over TEST DOUBLE handles around real PoolServers on the fake engine, whose `test_hermes` parser
stands for vLLM's hermes parser. The vLLM side's translations are tested here with stand-in objects."""

from __future__ import annotations

import json
from types import SimpleNamespace

import httpx
import pytest

from rayhet.engines.base import GenerationRequest, InvalidRequestError, ParsedReply, ToolCall
from rayhet.engines.text import ByteTokenizer
from rayhet.plan import Plan
from rayhet.serve.ingress import Ingress, make_app
from rayhet.serve.native_tools import reply_of, template_messages, template_tools
from rayhet.serve.openai_api import ChatRequest
from rayhet.serve.parsing import parse_request
from rayhet.serve.tools import system_message
from rayhet.testing.handles import FakeHandle, fake_pool_server
from rayhet.testing.tool_parser import parse_hermes_for_tests

CALL = '<tool_call>{"name": "get_weather", "arguments": {"city": "Oslo"}}</tool_call>'
WEATHER = {"type": "function", "function": {"name": "get_weather", "description": "Weather in a city",
                                            "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                                                           "required": ["city"]}}}
ASK = [{"role": "user", "content": "Weather in Oslo?"}]


async def make_ingress(script_a: list[str] | None = None) -> tuple[Ingress, dict[str, FakeHandle]]:
    """Pool `a` parses tool calls (the plan's choice); pool `b`, dearer, does not. Both write CALL."""
    config = {"model": {"id": "m"}, "server": {"max_wait_s": 5.0},
              "pools": [{"name": n, "engine": "fake", "price_per_hour": p, "queue_per_replica": 0}
                        for n, p in (("a", 1.0), ("b", 2.0))]}
    handles = {"a": FakeHandle(await fake_pool_server("a", output_text=CALL, tool_call_parser="test_hermes"), script_a),
               "b": FakeHandle(await fake_pool_server("b", output_text=CALL))}
    facts = [{"name": "a", "max_context": 4096, "price_per_hour": 1.0, "slots": 8, "tool_call_parser": "test_hermes"},
             {"name": "b", "max_context": 4096, "price_per_hour": 2.0, "slots": 8}]
    plan = Plan(replicas={"a": 1, "b": 1}, routing={(0, 0): {"a": 1.0}}, input_edges=[4096], output_edges=[4096],
                cost_per_hour=1.0, rate=1.0).to_dict()
    return Ingress(config, plan, handles, facts), handles


def client(ingress: Ingress) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=make_app(ingress)), base_url="http://test", timeout=30)


def chat(**kw) -> dict:
    return {"model": "m", "messages": ASK, "tools": [WEATHER], "max_tokens": 200, **kw}


def native_prompt_tokens(messages=ASK) -> int:
    return len(ByteTokenizer().encode(ByteTokenizer().render_chat(messages, [WEATHER])))


def structured_prompt_tokens(choice) -> int:
    fns = [WEATHER["function"]]
    return len(ByteTokenizer().encode(ByteTokenizer().render_chat([system_message(fns, choice), *ASK])))


# -- through the ingress ---------------------------------------------------------------------------
async def test_a_pool_with_a_parser_answers_in_openais_tool_calls_shape():
    ingress, _ = await make_ingress()
    async with client(ingress) as c:
        r = await c.post("/v1/chat/completions", json=chat())
    assert r.status_code == 200 and r.headers["x-rayhet-pool"] == "a", r.text
    choice = r.json()["choices"][0]
    assert choice["finish_reason"] == "tool_calls" and choice["message"]["content"] is None
    (call,) = choice["message"]["tool_calls"]
    assert call["type"] == "function" and call["id"] == "call_test_0"
    assert call["function"]["name"] == "get_weather" and json.loads(call["function"]["arguments"]) == {"city": "Oslo"}
    # the prompt was the template's with the tools (not rayhet's system message), usage counted as before
    assert r.json()["usage"] == {"prompt_tokens": native_prompt_tokens(), "completion_tokens": len(CALL),
                                 "total_tokens": native_prompt_tokens() + len(CALL)}


async def test_streamed_the_calls_come_as_delta_tool_calls_with_their_index():
    ingress, _ = await make_ingress()
    async with client(ingress) as c:
        r = await c.post("/v1/chat/completions", json=chat(stream=True, stream_options={"include_usage": True}))
    chunks = [json.loads(line[6:]) for line in r.text.splitlines() if line.startswith("data: {")]
    calls = [tc for ch in chunks for c in ch["choices"] for tc in c["delta"].get("tool_calls") or []]
    assert calls == [{"index": 0, "id": "call_test_0", "type": "function",
                      "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'}}]
    assert [c["finish_reason"] for ch in chunks for c in ch["choices"] if c["finish_reason"]] == ["tool_calls"]
    assert chunks[-1]["usage"]["prompt_tokens"] == native_prompt_tokens()
    assert r.text.rstrip().endswith("data: [DONE]")


@pytest.mark.parametrize("choice", ["required", {"type": "function", "function": {"name": "get_weather"}}, "one"])
async def test_a_choice_a_parser_cannot_enforce_takes_the_structured_path_on_that_pool(choice):
    """A parser reads what the model chose to write: "required", a named function and at most one call are held
    to their calls by structured output instead (the fake engine ignores the schema, so its hermes text comes
    back as content)."""
    ingress, _ = await make_ingress()
    kw = {"parallel_tool_calls": False} if choice == "one" else {"tool_choice": choice}
    async with client(ingress) as c:
        r = await c.post("/v1/chat/completions", json=chat(**kw))
    assert r.status_code == 200 and r.headers["x-rayhet-pool"] == "a", r.text
    named = {"one": "auto"}.get(choice, choice) if isinstance(choice, str) else "get_weather"
    assert r.json()["usage"]["prompt_tokens"] == structured_prompt_tokens(named)
    assert r.json()["choices"][0]["message"]["content"] == CALL  # not JSON: the structured path's plain answer


async def test_a_spilled_request_takes_the_structured_path_on_a_pool_without_a_parser():
    ingress, handles = await make_ingress(script_a=["busy"])
    async with client(ingress) as c:
        r = await c.post("/v1/chat/completions", json=chat())
    assert r.status_code == 200 and r.headers["x-rayhet-pool"] == "b", r.text
    assert handles["a"].calls == 1 and r.json()["usage"]["prompt_tokens"] == structured_prompt_tokens("auto")
    assert r.json()["choices"][0]["message"].get("tool_calls") is None


async def test_history_calls_and_results_reach_the_template_as_they_are_and_n_choices_each_parse():
    ingress, _ = await make_ingress()
    earlier = {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Rome"}'}}
    history = [*ASK, {"role": "assistant", "content": None, "tool_calls": [earlier]},
               {"role": "tool", "tool_call_id": "call_1", "content": "21 C"}]
    async with client(ingress) as c:
        r = await c.post("/v1/chat/completions", json=chat(messages=history, n=2))
    assert r.status_code == 200, r.text
    assert [c["finish_reason"] for c in r.json()["choices"]] == ["tool_calls", "tool_calls"]
    expected = template_messages(parse_request(ChatRequest, chat(messages=history)).messages)
    assert r.json()["usage"]["prompt_tokens"] == native_prompt_tokens(expected)


async def test_a_pool_without_a_parser_refuses_a_native_request():
    server = await fake_pool_server("b", output_text=CALL)
    with pytest.raises(InvalidRequestError) as e:
        await server.complete(GenerationRequest("r", prompt="x", tools=[WEATHER["function"]]))
    assert e.value.param == "tools"


# -- pure parts ----------------------------------------------------------------------------------
def test_template_messages_keep_calls_as_objects_and_results_with_their_ids():
    req = parse_request(ChatRequest, chat(messages=[
        {"role": "developer", "content": "be brief"}, *ASK,
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Rome"}'}},
            {"id": "c2", "type": "function", "function": {"name": "get_weather", "arguments": "{not json"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": [{"type": "text", "text": "21 C"}]}]))
    out = template_messages(req.messages)
    assert out[0] == {"role": "system", "content": "be brief"}
    assert out[2]["content"] == "" and [c["function"]["arguments"] for c in out[2]["tool_calls"]] == [
        {"city": "Rome"}, "{not json"]
    assert out[3] == {"role": "tool", "content": "21 C", "tool_call_id": "c1"}
    assert template_tools([{"name": "f", "description": None, "parameters": None}]) == [
        {"type": "function", "function": {"name": "f"}}]


def test_a_parsed_reply_in_openais_shape():
    assert reply_of(ParsedReply(content="just text")) == ("just text", None)
    content, calls = reply_of(ParsedReply(content=None, tool_calls=[ToolCall("id1", "f", '{"a": 1}')]))
    assert content is None and calls == [{"id": "id1", "type": "function",
                                          "function": {"name": "f", "arguments": '{"a": 1}'}}]


def test_the_test_parser_reads_hermes_blocks_as_vllms_does():
    assert parse_hermes_for_tests("no call") == ParsedReply(content="no call")
    two = parse_hermes_for_tests("Let me see. " + CALL + CALL.replace("Oslo", "Rome"))
    assert two.content == "Let me see. " and [json.loads(c.arguments)["city"] for c in two.tool_calls] == ["Oslo", "Rome"]
    assert parse_hermes_for_tests("<tool_call>{broken</tool_call>").tool_calls == []


def test_tokenizers_say_whether_the_template_writes_tools():
    from rayhet.engines.chat import ChatTemplate
    from rayhet.serve.tokens import renders_tools

    plain = ChatTemplate("{% for m in messages %}{{ m['content'] }}{% endfor %}")
    hermes = ChatTemplate("{% if tools %}<tools>{{ tools | tojson }}</tools>{% endif %}"
                          "{% for m in messages %}{{ m['content'] }}{% endfor %}")
    assert not renders_tools(lambda tools: plain.render([{"role": "user", "content": "x"}], tools=tools))
    assert renders_tools(lambda tools: hermes.render([{"role": "user", "content": "x"}], tools=tools))


async def test_an_ingress_whose_template_ignores_tools_sends_every_tool_request_structured():
    ingress, _ = await make_ingress()
    ingress.tokenizer.renders_tools = lambda: False  # as the tiny model's ChatML template
    assert ingress._parsing_pools([SimpleNamespace(name="a", tool_call_parser="hermes")]) == []


# -- the vLLM side's translations (no vLLM) ----------------------------------------------------------
def test_vllm_tool_parser_readings_become_ours():
    from rayhet.engines.vllm_convert import parsed_reply, tool_parser_request, unknown_tool_parser

    fn = lambda name, args: SimpleNamespace(name=name, arguments=args)  # noqa: E731
    called = SimpleNamespace(tools_called=True, content="", tool_calls=[
        SimpleNamespace(id="chatcmpl-tool-1", type="function", function=fn("f", '{"x": 1}')),
        SimpleNamespace(id=None, type="function", function=fn("g", "{}"))])
    got = parsed_reply(called, "<tool_call>...</tool_call>")
    assert got.content is None and [(c.name, c.arguments) for c in got.tool_calls] == [("f", '{"x": 1}'), ("g", "{}")]
    assert got.tool_calls[0].id == "chatcmpl-tool-1" and got.tool_calls[1].id.startswith("call_")
    assert parsed_reply(SimpleNamespace(tools_called=False, tool_calls=[], content="hi"), "hi") == ParsedReply("hi")
    assert parsed_reply(SimpleNamespace(tools_called=False, tool_calls=[], content=None), "raw") == ParsedReply("raw")
    assert tool_parser_request([{"name": "f"}]) == {"messages": [], "tool_choice": "auto",
                                                    "tools": [{"type": "function", "function": {"name": "f"}}]}
    err = str(unknown_tool_parser("hermz", ["hermes", "llama3_json"]))
    assert "engine_settings.tool_call_parser" in err and "'hermz'" in err and "hermes, llama3_json" in err


def test_vllm_settings_name_a_parser_but_do_not_pass_it_to_the_engine_args():
    from pydantic import ValidationError

    from rayhet.engines.vllm import VllmSettings, engine_args_dict

    s = VllmSettings(model="/m", tool_call_parser="llama3_json")
    assert "tool_call_parser" not in engine_args_dict(s)
    for bad in ("", "hermes; rm", "../x", "a" * 65):
        with pytest.raises(ValidationError, match="tool_call_parser"):
            VllmSettings(model="/m", tool_call_parser=bad)
