"""OpenAI request validation: every field's type error names the field and what it accepts (issue 12)."""

import json

import pytest

from rayhet.serve import parameters, parsing, replies
from rayhet.serve.openai_api import APIError, ChatMessage, ChatRequest, CompletionRequest
from rayhet.serve.parsing import parse_request

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
    refused = {n for n in cls.model_fields if parameters.PARAMETERS[cls.endpoint].get(n) == parameters.REFUSED}
    for name, field in cls.model_fields.items():
        if name in refused:
            continue  # any value but its no-op is refused as unsupported first (test below)
        for value in WRONG:
            try:
                parse_request(cls, {**BASE[cls], name: value})
            except APIError as e:
                if "Invalid type" not in e.message:
                    continue  # a range or value error (e.g. n=7): not what this test is about
                assert e.status == 400 and e.param == name, (name, value, e.message)
                assert f"expected {parsing.accepted(field.annotation)}" in e.message, (name, e.message)
                assert "Input should be" not in e.message
                checked.append(name)
                break
    assert len(checked) == len(cls.model_fields) - len(refused), sorted(set(cls.model_fields) - set(checked) - refused)


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


def test_max_tokens_0_only_with_echo():
    """OpenAI's prompt scoring: echo with max_tokens 0 answers the prompt alone; without echo 0 stays a 400."""
    assert parse_request(CompletionRequest, {**BASE[CompletionRequest], "max_tokens": 0, "echo": True}).max_tokens == 0
    for body in ({"max_tokens": 0, "echo": False}, {"max_tokens": -1, "echo": True}, {"max_tokens": -1}):
        with pytest.raises(APIError) as e:
            parse_request(CompletionRequest, {**BASE[CompletionRequest], **body})
        assert e.value.status == 400 and e.value.param == "max_tokens", body


# -- never silent (issue 17): every OpenAI parameter is honoured, has no effect on the output, or is refused ---
@pytest.mark.parametrize("cls, key, value", [
    (ChatRequest, "logit_bias", {"50256": -100}),
    (ChatRequest, "store", True),
    (ChatRequest, "reasoning_effort", "low"),
    (ChatRequest, "audio", {"voice": "alloy", "format": "wav"}),
    (ChatRequest, "modalities", ["text", "audio"]),
    (ChatRequest, "prediction", {"type": "content", "content": "x"}),
    (ChatRequest, "functions", [{"name": "f"}]),
    (CompletionRequest, "suffix", "end"),
    (CompletionRequest, "best_of", 3),
    (CompletionRequest, "logit_bias", {"1": 5}),
])
def test_a_parameter_rayhet_does_not_honour_is_refused_naming_it(cls, key, value):
    with pytest.raises(APIError) as e:
        parse_request(cls, {**BASE[cls], key: value})
    assert e.value.status == 400 and e.value.param == key and e.value.code == "unsupported_parameter"
    assert f"'{key}' is not supported" in e.value.message


@pytest.mark.parametrize("cls, key, value", [
    (ChatRequest, "tools", []), (ChatRequest, "tool_choice", "none"), (ChatRequest, "logprobs", False), (ChatRequest, "top_logprobs", 0),
    (ChatRequest, "logprobs", True),
    (ChatRequest, "store", False), (ChatRequest, "modalities", ["text"]), (ChatRequest, "parallel_tool_calls", False),
    (ChatRequest, "logit_bias", {}), (ChatRequest, "metadata", {"team": "a"}), (ChatRequest, "user", "u1"),
    (ChatRequest, "service_tier", "auto"), (ChatRequest, "reasoning_effort", None),
    (CompletionRequest, "echo", False), (CompletionRequest, "best_of", 1), (CompletionRequest, "suffix", ""),
    (CompletionRequest, "logprobs", None),
])
def test_no_op_values_and_identifiers_are_accepted(cls, key, value):
    parse_request(cls, {**BASE[cls], key: value})


def test_penalties_are_honoured_and_range_checked():
    from rayhet.engines.base import InvalidRequestError, SamplingParams

    req = parse_request(ChatRequest, {**BASE[ChatRequest], "presence_penalty": 1.5, "frequency_penalty": -0.5})
    assert (req.presence_penalty, req.frequency_penalty) == (1.5, -0.5)
    assert parse_request(CompletionRequest, {**BASE[CompletionRequest], "presence_penalty": None}).presence_penalty == 0
    with pytest.raises(InvalidRequestError) as e:
        SamplingParams(frequency_penalty=2.5).validate()
    assert e.value.param == "frequency_penalty"
    from rayhet.engines.vllm_convert import sampling_kwargs

    kw = sampling_kwargs(SamplingParams(presence_penalty=0.5, frequency_penalty=1.0))
    assert (kw["presence_penalty"], kw["frequency_penalty"]) == (0.5, 1.0)


def test_unknown_fields_are_logged_once_and_served(caplog):
    parameters._unknown_logged.discard("x_future_field")
    with caplog.at_level("WARNING", logger="rayhet.ingress"):
        for _ in range(3):
            parse_request(ChatRequest, {**BASE[ChatRequest], "x_future_field": 1, "ignore_eos": True})
    said = [r for r in caplog.records if "x_future_field" in r.getMessage()]
    assert len(said) == 1 and not [r for r in caplog.records if "ignore_eos" in r.getMessage()]


def test_every_request_field_is_in_the_parameter_table():
    """The models' fields and the table agree: a field the ingress reads is listed, as honoured or refused."""
    for cls in (CompletionRequest, ChatRequest):
        table = parameters.PARAMETERS[cls.endpoint]
        assert set(cls.model_fields) - parameters.EXTENSIONS <= set(table), set(cls.model_fields) - set(table)


def test_the_readme_table_is_the_code_table():
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    assert parameters.parameters_markdown() in readme


def test_response_format_becomes_the_engines_constraint():
    chat = lambda rf: parse_request(ChatRequest, {**BASE[ChatRequest], "response_format": rf})  # noqa: E731
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    assert chat({"type": "json_schema", "json_schema": {"name": "x", "schema": schema, "strict": True}}
                ).response_format.sampling() == {"json_schema": schema}
    assert chat({"type": "json_schema", "json_schema": {"name": "x"}}).response_format.sampling() == \
        {"json_schema": {"type": "object"}}
    assert chat({"type": "json_object"}).response_format.sampling() == {"json_object": True}
    assert chat({"type": "text"}).response_format.sampling() == {}
    for bad, param in (({"type": "xml"}, "response_format.type"), ({"type": "json_schema"}, "response_format"),
                       ({"type": "json_schema", "json_schema": {"schema": schema}}, "response_format.json_schema.name"),
                       ("json", "response_format")):
        with pytest.raises(APIError) as e:
            chat(bad)
        assert e.value.status == 400 and e.value.param == param, (bad, e.value.param, e.value.message)


def test_logprobs_requests_and_bodies():
    from rayhet.engines.base import TokenLogprob

    chat = lambda **kw: parse_request(ChatRequest, {**BASE[ChatRequest], **kw})  # noqa: E731
    assert chat(logprobs=True, top_logprobs=3).logprobs_k() == 3 and chat(logprobs=True).logprobs_k() == 0
    assert chat().logprobs_k() is None and chat(logprobs=False).logprobs_k() is None
    assert parse_request(CompletionRequest, {**BASE[CompletionRequest], "logprobs": 2}).logprobs_k() == 2
    for bad, param in (({"top_logprobs": 2}, "top_logprobs"), ({"logprobs": True, "top_logprobs": 21}, "top_logprobs")):
        with pytest.raises(APIError) as e:
            chat(**bad)
        assert e.value.status == 400 and param in (e.value.param or "") + e.value.message, e.value.message
    with pytest.raises(APIError) as e:
        parse_request(CompletionRequest, {**BASE[CompletionRequest], "logprobs": 6})
    assert e.value.param == "logprobs"
    lps = [TokenLogprob("He", [72, 101], -0.5, [TokenLogprob("He", [72, 101], -0.5), TokenLogprob("A", [65], -1.5)]),
           TokenLogprob("llo", [108, 108, 111], -0.25, [TokenLogprob("llo", [108, 108, 111], -0.25)])]
    c = replies.logprobs_body("chat", lps)
    assert c["content"][0] == {"token": "He", "logprob": -0.5, "bytes": [72, 101], "top_logprobs": [
        {"token": "He", "logprob": -0.5, "bytes": [72, 101]}, {"token": "A", "logprob": -1.5, "bytes": [65]}]}
    t = replies.logprobs_body("completion", lps, offset=3)
    assert t == {"tokens": ["He", "llo"], "token_logprobs": [-0.5, -0.25], "text_offset": [3, 5],
                 "top_logprobs": [{"He": -0.5, "A": -1.5}, {"llo": -0.25}]}
    assert replies.logprobs_body("chat", None) is None
    # tokens of one text (pieces of UTF-8 characters) keep the most likely one's logprob; a prompt's first is null
    same = TokenLogprob("\ufffd", [0xE2], -0.5, [TokenLogprob("\ufffd", [0xE2], -0.5),
                                                 TokenLogprob("\ufffd", [0xE3], -2.0)])
    first = TokenLogprob("", [], None)
    t = replies.logprobs_body("completion", [first, same])
    assert t["top_logprobs"] == [None, {"\ufffd": -0.5}] and t["token_logprobs"] == [None, -0.5]


def test_tools_become_a_schema_the_output_is_held_to():
    from rayhet.serve import tools as tl

    weather = {"type": "function", "function": {"name": "get_weather", "parameters": {
        "type": "object", "properties": {"city": {"enum": ["Paris", "Oslo"]}}, "required": ["city"]}}}
    req = parse_request(ChatRequest, {**BASE[ChatRequest], "tools": [weather]})
    assert req.using_tools() and req.tool_setup()[1] == "auto"
    fns, choice = req.tool_setup()
    auto = tl.output_schema(fns, choice)
    assert [set(o["properties"]) for o in auto["anyOf"]] == [{"tool_calls"}, {"response"}]
    one = tl.output_schema(fns, "get_weather", parallel=False)["properties"]["tool_calls"]
    assert one["maxItems"] == 1 and one["items"]["properties"]["name"] == {"const": "get_weather"}
    assert not parse_request(ChatRequest, {**BASE[ChatRequest], "tools": [weather], "tool_choice": "none"}).using_tools()
    for bad in ({"tool_choice": "required"}, {"tools": [weather], "tool_choice": {"type": "function", "function": {"name": "nope"}}},
                {"tools": [weather], "response_format": {"type": "json_object"}},
                {"tools": [{"type": "function", "function": {"name": "bad name!"}}]}):
        with pytest.raises(APIError) as e:
            parse_request(ChatRequest, {**BASE[ChatRequest], **bad})
        assert e.value.status == 400 and (e.value.param or "").startswith(("tool", "response_format")), bad
    content, calls = tl.read_reply('{"tool_calls": [{"name": "get_weather", "arguments": {"city": "Oslo"}}]}')
    assert content is None and calls[0]["function"] == {"name": "get_weather", "arguments": '{"city": "Oslo"}'}
    assert calls[0]["id"].startswith("call_") and calls[0]["type"] == "function"
    assert tl.read_reply('{"response": "hi"}') == ("hi", None) and tl.read_reply('{"tool_ca') == ('{"tool_ca', None)
    history = ChatMessage.model_validate({"role": "assistant", "content": None, "tool_calls": [calls[0]]}).as_dict()
    assert json.loads(history["content"]) == {"tool_calls": [{"name": "get_weather", "arguments": {"city": "Oslo"}}]}


# -- echo through the official client, on the real ingress and a llama.cpp pool of the tiny model (no Ray) -----
@pytest.fixture
async def echo_client(tiny_gguf):
    import httpx
    import openai

    from rayhet.plan import Plan
    from rayhet.serve.ingress import Ingress, make_app
    from rayhet.serve.pool import PoolServer
    from rayhet.testing.handles import FakeHandle

    server = PoolServer.__new__(PoolServer)
    await server.__init__("a", "llama_cpp", {"model_path": str(tiny_gguf), "n_ctx": 256, "n_slots": 4, "n_threads": 1})
    config = {"model": {"id": "m", "gguf": str(tiny_gguf)},
              "pools": [{"name": "a", "engine": "llama_cpp", "price_per_hour": 1.0}]}
    plan = Plan(replicas={"a": 1}, routing={(0, 0): {"a": 1.0}}, input_edges=[4096], output_edges=[4096],
                cost_per_hour=1.0, rate=1.0).to_dict()
    ingress = Ingress(config, plan, {"a": FakeHandle(server)}, [{"name": "a", "max_context": 256, "price_per_hour": 1.0,
                                                              "slots": 4}])
    http = httpx.AsyncClient(transport=httpx.ASGITransport(app=make_app(ingress)), base_url="http://test", timeout=60)
    try:
        yield openai.AsyncOpenAI(base_url="http://test/v1", api_key="unused", max_retries=0, http_client=http), server
    finally:
        await http.aclose()
        await server.engine.shutdown()


def _check_echoed(lp, prompt: str, n_prompt: int, text: str):
    """An echoed choice's logprobs: the prompt's tokens first (the first with null logprob and null top), each
    later one finite with its top alternatives; text_offset runs along the choice's text."""
    import math

    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == len(lp.text_offset)
    assert lp.token_logprobs[0] is None and lp.top_logprobs[0] is None
    assert all(isinstance(x, float) and math.isfinite(x) and x <= 0 for x in lp.token_logprobs[1:])
    assert all(len(t) <= 2 and max(t.values()) >= x - 1e-6 for t, x in zip(lp.top_logprobs[1:], lp.token_logprobs[1:]))
    assert "".join(lp.tokens[:n_prompt]) == prompt  # (the tiny model's byte-level BPE: pieces add up; BOS is "")
    assert [text[o:o + len(t)] for t, o in zip(lp.tokens, lp.text_offset)] == lp.tokens


async def test_echo_puts_the_prompt_before_the_text_and_its_scored_tokens_before_the_generated(echo_client):
    client, server = echo_client
    prompt = "the a of the"
    n_prompt = server.engine.count_tokens(prompt)
    plain = await client.completions.create(model="m", prompt=prompt, max_tokens=5, temperature=0, logprobs=2,
                                            extra_body={"ignore_eos": True})
    r = await client.completions.create(model="m", prompt=prompt, max_tokens=5, temperature=0, logprobs=2, echo=True,
                                        extra_body={"ignore_eos": True})
    c = r.choices[0]
    assert c.text == prompt + plain.choices[0].text and c.finish_reason == "length"
    assert (r.usage.prompt_tokens, r.usage.completion_tokens) == (n_prompt, 5)  # usage as without echo
    _check_echoed(c.logprobs, prompt, n_prompt, c.text)
    assert len(c.logprobs.tokens) == n_prompt + 5
    assert c.logprobs.tokens[n_prompt:] == plain.choices[0].logprobs.tokens
    assert c.logprobs.token_logprobs[n_prompt:] == pytest.approx(plain.choices[0].logprobs.token_logprobs, abs=1e-3)
    assert c.logprobs.text_offset[n_prompt] == len(prompt)
    # without logprobs, the text alone; a token-id prompt echoes its text
    r = await client.completions.create(model="m", prompt=prompt, max_tokens=3, echo=True)
    assert r.choices[0].text.startswith(prompt) and r.choices[0].logprobs is None
    ids = server.engine.tokenize(prompt)
    r = await client.completions.create(model="m", prompt=ids, max_tokens=3, temperature=0, echo=True)
    assert r.choices[0].text.startswith(prompt) and r.usage.prompt_tokens == len(ids)


async def test_echo_with_max_tokens_0_is_the_prompt_scored(echo_client):
    import openai

    client, server = echo_client
    prompt = "once upon a time"
    n_prompt = server.engine.count_tokens(prompt)
    r = await client.completions.create(model="m", prompt=prompt, max_tokens=0, echo=True, logprobs=1)
    c = r.choices[0]
    assert c.text == prompt and c.finish_reason == "length"
    assert (r.usage.prompt_tokens, r.usage.completion_tokens) == (n_prompt, 0)
    assert len(c.logprobs.tokens) == n_prompt
    _check_echoed(c.logprobs, prompt, n_prompt, c.text)
    chunks = [ch async for ch in await client.completions.create(model="m", prompt=prompt, max_tokens=0, echo=True,
                                                                 stream=True, stream_options={"include_usage": True})]
    assert "".join(ch.choices[0].text for ch in chunks if ch.choices) == prompt
    assert chunks[-1].usage.completion_tokens == 0
    with pytest.raises(openai.BadRequestError) as e:  # without echo, 0 stays refused
        await client.completions.create(model="m", prompt=prompt, max_tokens=0)
    assert e.value.body["param"] == "max_tokens"


async def test_echo_streamed_comes_first_and_matches_the_whole_reply(echo_client):
    client, server = echo_client
    prompt = "the a of the"
    n_prompt = server.engine.count_tokens(prompt)
    kw = dict(model="m", prompt=prompt, max_tokens=6, temperature=0, logprobs=2, echo=True,
              extra_body={"ignore_eos": True})
    whole = (await client.completions.create(**kw)).choices[0]
    chunks = [ch async for ch in await client.completions.create(stream=True, **kw)]
    assert chunks[0].choices[0].text.startswith(prompt)  # the echoed prompt in the first chunk
    assert chunks[0].choices[0].logprobs.token_logprobs[0] is None
    assert len(chunks[0].choices[0].logprobs.tokens) >= n_prompt
    text = "".join(ch.choices[0].text for ch in chunks)
    merged = {k: [x for ch in chunks for x in getattr(ch.choices[0].logprobs, k)]
              for k in ("tokens", "token_logprobs", "top_logprobs", "text_offset")}
    assert text == whole.text
    assert merged["tokens"] == whole.logprobs.tokens and merged["text_offset"] == whole.logprobs.text_offset
    assert merged["token_logprobs"][1:] == pytest.approx(whole.logprobs.token_logprobs[1:], abs=1e-3)


@pytest.mark.parametrize("stream", [False, True])
async def test_echo_with_n_2_echoes_in_each_choice(echo_client, stream):
    client, server = echo_client
    prompt = "the a of the"
    n_prompt = server.engine.count_tokens(prompt)
    kw = dict(model="m", prompt=prompt, max_tokens=4, logprobs=1, echo=True, n=2, seed=3,
              extra_body={"ignore_eos": True})
    if stream:
        chunks = [ch async for ch in await client.completions.create(stream=True, **kw)]
        texts = {i: "".join(ch.choices[0].text for ch in chunks if ch.choices[0].index == i) for i in (0, 1)}
        lps = {i: [x for ch in chunks if ch.choices[0].index == i for x in ch.choices[0].logprobs.token_logprobs]
               for i in (0, 1)}
        firsts = {}
        for ch in chunks:
            firsts.setdefault(ch.choices[0].index, ch.choices[0].text)
        assert all(t.startswith(prompt) for t in firsts.values())
    else:
        r = await client.completions.create(**kw)
        assert [c.index for c in r.choices] == [0, 1] and r.usage.completion_tokens == 8
        texts = {c.index: c.text for c in r.choices}
        lps = {c.index: c.logprobs.token_logprobs for c in r.choices}
        for c in r.choices:
            _check_echoed(c.logprobs, prompt, n_prompt, c.text)
    for i in (0, 1):
        assert texts[i].startswith(prompt) and len(texts[i]) > len(prompt)
        assert len(lps[i]) == n_prompt + 4 and lps[i][0] is None
        assert lps[0][1:n_prompt] == pytest.approx(lps[1][1:n_prompt], abs=1e-6)  # the same prompt, scored alike


# -- found by the conformance fuzzing (tests/serve/test_conformance.py), or reading the code behind what it found --
def _assistant_call(**function) -> dict:
    return {"role": "assistant", "content": None,
            "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "f", **function}}]}


def test_a_history_call_whose_arguments_are_not_json_is_carried_as_text():
    """A model's own call can be malformed; it came back in the history as a 500 (json.loads in history_text)."""
    history = ChatMessage.model_validate(_assistant_call(arguments="{not json")).as_dict()
    assert json.loads(history["content"]) == {"tool_calls": [{"name": "f", "arguments": "{not json"}]}


@pytest.mark.parametrize("message, param", [
    (_assistant_call(), "messages.0.tool_calls.0.function.arguments"),  # served with "{}" before
    ({**_assistant_call(), "tool_calls": [{"type": "function", "function": {"name": "f", "arguments": "{}"}}]},
     "messages.0.tool_calls.0.id"),
])
def test_a_history_call_needs_its_id_and_arguments_as_at_openai(message, param):
    with pytest.raises(APIError) as e:
        parse_request(ChatRequest, {**BASE[ChatRequest], "messages": [message, {"role": "user", "content": "hi"}]})
    assert e.value.status == 400 and e.value.param == param, e.value.message
    # a named tool_choice still gives the name alone
    named = {"type": "function", "function": {"name": "f"}}
    tools = [{"type": "function", "function": {"name": "f"}}]
    req = parse_request(ChatRequest, {**BASE[ChatRequest], "tools": tools, "tool_choice": named})
    assert req.tool_setup()[1] == "f"


@pytest.mark.parametrize("cls", [CompletionRequest, ChatRequest], ids=lambda c: c.__name__)
def test_stream_options_are_typed(cls):
    """`"include_usage": "no"` was truthy (usage sent); now a 400 naming it. Keys rayhet does not use are ignored."""
    with pytest.raises(APIError) as e:
        parse_request(cls, {**BASE[cls], "stream_options": {"include_usage": "no"}})
    assert e.value.param == "stream_options.include_usage" and "expected a boolean" in e.value.message
    req = parse_request(cls, {**BASE[cls], "stream_options": {"include_usage": True, "include_obfuscation": [1]}})
    assert req.stream_usage() == (True, False)
    assert parse_request(cls, {**BASE[cls], "stream_options": {"include_usage": True, "continuous_usage_stats": True}}
                         ).stream_usage() == (True, True)
    assert parse_request(cls, BASE[cls]).stream_usage() == (False, False)


def test_identifiers_with_no_effect_are_still_typed():
    """metadata {"team": 5} was served (rayhet did not read it); OpenAI refuses it, naming the field."""
    for key, value, param in (("metadata", {"team": 5}, "metadata.team"), ("metadata", 5, "metadata"),
                              ("prompt_cache_key", 3, "prompt_cache_key"), ("service_tier", 1, "service_tier"),
                              ("safety_identifier", ["u"], "safety_identifier")):
        with pytest.raises(APIError) as e:
            parse_request(ChatRequest, {**BASE[ChatRequest], key: value})
        assert e.value.status == 400 and e.value.param == param, e.value.message


@pytest.mark.parametrize("role", ["system", "developer", "user", "tool"])
def test_only_an_assistant_message_may_leave_content_out(role):
    """Found by the conformance fuzzing: a developer message with null content was served. OpenAI requires content
    on every turn but the assistant's; the 400 names the message's content."""
    with pytest.raises(APIError) as e:
        parse_request(ChatRequest, {**BASE[ChatRequest], "messages": [{"role": role, "content": None}]})
    assert e.value.status == 400 and e.value.param == "messages.0.content", e.value.message
    ok = parse_request(ChatRequest, {**BASE[ChatRequest], "messages": [_assistant_call(arguments="{}"),
                                                                        {"role": "user", "content": "hi"}]})
    assert ok.messages[0].content is None
