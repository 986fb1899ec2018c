"""The serving app on two real llama.cpp CPU pools (examples/two-pools.yaml): routing by size, the openai
client, and bad requests."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rayhet.messages import TrafficSnapshot
from rayhet.testing.driver import call_deployment

pytestmark = pytest.mark.serve

APP = "two-pools"
PREFIX = "/two"
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "two-pools.yaml"


@pytest.fixture(scope="module")
def two_pools(serve_url):
    from rayhet.testing.driver import deployed

    with deployed(str(EXAMPLE), APP, PREFIX):
        yield f"{serve_url}{PREFIX}"


@pytest.fixture(scope="module")
def client(two_pools):
    from openai import OpenAI

    return OpenAI(base_url=f"{two_pools}/v1", api_key="unused", max_retries=0, timeout=60)


def pool_counters(pool: str) -> dict:
    return call_deployment(APP, f"pool-{pool}", "stats")["counters"]


def test_plan_sends_short_and_long_requests_to_different_pools(client):
    from rayhet.testing.models import prompt_of_tokens

    before = {p: pool_counters(p)["requests"] for p in ("small", "big")}
    for _ in range(3):  # short: <= 32 output tokens -> the cheap 1-thread pool
        r = client.completions.create(model="rayhet-tiny", prompt=prompt_of_tokens(20), max_tokens=8,
                                      extra_body={"ignore_eos": True})
        assert r.usage.completion_tokens == 8
    for _ in range(2):  # long: 33..256 output tokens -> only the 2-thread pool serves them
        r = client.completions.create(model="rayhet-tiny", prompt=prompt_of_tokens(20), max_tokens=64,
                                      extra_body={"ignore_eos": True})
        assert r.usage.completion_tokens == 64
    after = {p: pool_counters(p)["requests"] for p in ("small", "big")}
    assert after["small"] - before["small"] == 3
    assert after["big"] - before["big"] == 2
    snap = TrafficSnapshot.model_validate(call_deployment(APP, "ingress", "traffic_snapshot"))
    arrivals = {(i, j): c for i, j, c in snap.arrivals}
    assert arrivals[(0, 0)] >= 3 and arrivals[(0, 1)] >= 2
    assert snap.pools["small"].ttft_ms is not None and snap.pools["big"].tpot_ms is not None


def test_openai_completion_counts_tokens_exactly(client):
    from rayhet.testing.models import prompt_of_tokens

    r = client.completions.create(model="rayhet-tiny", prompt=prompt_of_tokens(37), max_tokens=5,
                                  extra_body={"ignore_eos": True})
    assert r.object == "text_completion" and r.choices[0].finish_reason == "length"
    assert (r.usage.prompt_tokens, r.usage.completion_tokens, r.usage.total_tokens) == (37, 5, 42)
    assert [m.id for m in client.models.list()] == ["rayhet-tiny"]


def test_openai_chat_non_streaming_and_streaming(client):
    msgs = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello there"}]
    r = client.chat.completions.create(model="rayhet-tiny", messages=msgs, max_tokens=6)
    assert r.object == "chat.completion" and r.choices[0].message.role == "assistant"
    assert r.usage.prompt_tokens > 5 and 1 <= r.usage.completion_tokens <= 6
    chunks = list(client.chat.completions.create(model="rayhet-tiny", messages=msgs, max_tokens=6, stream=True,
                                                  stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    # as OpenAI: usage only on a last chunk with no choices, after the one with finish_reason
    assert chunks[-1].choices == [] and chunks[-1].usage.prompt_tokens == r.usage.prompt_tokens
    assert all(c.usage is None for c in chunks[:-1])
    assert chunks[-2].choices[0].finish_reason in ("length", "stop")
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert len(finishes) == 1
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert chunks[-1].usage.completion_tokens <= 6 and isinstance(text, str)


def test_official_client_gets_400_naming_what_rayhet_does_not_do(client):
    """Issue 17, never silent: what rayhet does not do is refused naming the parameter (not a 200 with free text);
    penalties and identifiers are served; the app serves normally afterwards."""
    import openai

    msgs = [{"role": "user", "content": "Give me JSON"}]
    for kwargs, param, code in (({"tool_choice": "required"}, "tool_choice", None),  # no tools to call
                                ({"audio": {"voice": "x"}}, "audio", "unsupported_parameter"),
                                ({"prediction": {"type": "content", "content": "x"}}, "prediction", "unsupported_parameter")):
        with pytest.raises(openai.BadRequestError) as e:
            client.chat.completions.create(model="rayhet-tiny", messages=msgs, max_tokens=4, **kwargs)
        assert e.value.status_code == 400 and e.value.body["param"] == param, e.value.body
        assert e.value.body["code"] == code
    with pytest.raises(openai.BadRequestError) as e:
        client.completions.create(model="rayhet-tiny", prompt="hi", max_tokens=4, suffix="end")
    assert e.value.body["param"] == "suffix"
    r = client.chat.completions.create(model="rayhet-tiny", messages=msgs, max_tokens=4, presence_penalty=1.0,
                                       frequency_penalty=0.5, user="u1", metadata={"k": "v"}, tools=[],
                                       response_format={"type": "text"})
    assert r.choices[0].message.content is not None and r.usage.completion_tokens >= 1


def test_n_choices_with_usage_counted_as_openai_does(client, two_pools):
    """n > 1 (issue 17): n generations, choices 0..n-1, the prompt counted once and every choice's tokens;
    a seed gives choice i the seed + i (different choices, the same reply again)."""
    import httpx

    r = client.completions.create(model="rayhet-tiny", prompt="Once upon a time", max_tokens=5, n=3, seed=7,
                                  temperature=1.0, extra_body={"ignore_eos": True})
    assert [c.index for c in r.choices] == [0, 1, 2] and all(c.finish_reason == "length" for c in r.choices)
    one = client.completions.create(model="rayhet-tiny", prompt="Once upon a time", max_tokens=5)
    assert r.usage.prompt_tokens == one.usage.prompt_tokens and r.usage.completion_tokens == 15
    assert len({c.text for c in r.choices}) > 1
    again = client.completions.create(model="rayhet-tiny", prompt="Once upon a time", max_tokens=5, n=3, seed=7,
                                      temperature=1.0, extra_body={"ignore_eos": True})
    assert [c.text for c in again.choices] == [c.text for c in r.choices]
    # streamed chat: each choice's deltas carry its index, each ends, one usage chunk with the total
    body = {"model": "rayhet-tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4, "n": 2,
            "ignore_eos": True, "stream": True, "stream_options": {"include_usage": True}}
    with httpx.stream("POST", f"{two_pools}/v1/chat/completions", json=body, timeout=60) as resp:
        assert resp.status_code == 200
        lines = [ln[6:] for ln in resp.iter_lines() if ln.startswith("data: ")]
    assert lines[-1] == "[DONE]"
    chunks = [json.loads(ln) for ln in lines[:-1]]
    finishes = {c["choices"][0]["index"]: c["choices"][0]["finish_reason"] for c in chunks
                if c["choices"] and c["choices"][0]["finish_reason"]}
    assert finishes == {0: "length", 1: "length"}
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 8


def test_logprobs_with_the_official_client_streamed_and_not(client):
    """logprobs (issue 17): chat content entries with top_logprobs, completions' parallel lists, streamed
    and not, one entry per generated token; greedy takes the most likely token."""
    msgs = [{"role": "user", "content": "hi"}]
    r = client.chat.completions.create(model="rayhet-tiny", messages=msgs, max_tokens=6, temperature=0,
                                       logprobs=True, top_logprobs=3, extra_body={"ignore_eos": True})
    content = r.choices[0].logprobs.content
    assert len(content) == r.usage.completion_tokens == 6
    assert all(len(e.top_logprobs) == 3 and e.top_logprobs[0].logprob == pytest.approx(e.logprob) for e in content)
    assert "".join(e.token for e in content) == r.choices[0].message.content
    chunks = list(client.chat.completions.create(model="rayhet-tiny", messages=msgs, max_tokens=6, temperature=0,
                                                 logprobs=True, stream=True, extra_body={"ignore_eos": True}))
    streamed = [e for c in chunks if c.choices and c.choices[0].logprobs for e in c.choices[0].logprobs.content]
    assert [e.token for e in streamed] == [e.token for e in content]  # the same greedy tokens
    c = client.completions.create(model="rayhet-tiny", prompt="Once upon", max_tokens=5, logprobs=2, n=2, seed=3,
                                  extra_body={"ignore_eos": True})
    for ch in c.choices:
        lp = ch.logprobs
        assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == 5
        assert lp.text_offset[0] == 0 and all(len(t) <= 2 for t in lp.top_logprobs)
    plain = client.completions.create(model="rayhet-tiny", prompt="Once upon", max_tokens=3)
    assert plain.choices[0].logprobs is None
    # echo through Serve: the prompt and its scored tokens first, streamed (first chunk) and not
    echoed = client.completions.create(model="rayhet-tiny", prompt="Once upon", max_tokens=3, logprobs=1, echo=True,
                                       extra_body={"ignore_eos": True})
    lp = echoed.choices[0].logprobs
    assert echoed.choices[0].text.startswith("Once upon") and echoed.usage.completion_tokens == 3
    assert lp.token_logprobs[0] is None and len(lp.tokens) == echoed.usage.prompt_tokens + 3
    first = next(iter(client.completions.create(model="rayhet-tiny", prompt="Once upon", max_tokens=3, echo=True,
                                                stream=True)))
    assert first.choices[0].text.startswith("Once upon")


@pytest.mark.parametrize("stream", [False, True])
def test_tool_calls_with_the_official_client(client, stream):
    """Tools (issue 17): with tool_choice required, the reply is a call of a listed function whose arguments
    validate against its parameters; a named choice calls that one; streamed, the calls come as deltas."""
    import jsonschema

    params = {"type": "object", "properties": {"city": {"enum": ["Paris", "Oslo", "Lima"]},
                                               "days": {"enum": [1, 2, 3]}},
              "required": ["city", "days"], "additionalProperties": False}
    tools = [{"type": "function", "function": {"name": "get_weather", "description": "Weather", "parameters": params}},
             {"type": "function", "function": {"name": "get_time", "parameters": {
                 "type": "object", "properties": {"tz": {"enum": ["UTC", "CET"]}}, "required": ["tz"],
                 "additionalProperties": False}}}]
    msgs = [{"role": "user", "content": "Weather in Oslo?"}]
    for choice in ("required", {"type": "function", "function": {"name": "get_weather"}}):
        kw = dict(model="rayhet-tiny", messages=msgs, tools=tools, tool_choice=choice, max_tokens=120,
                  parallel_tool_calls=False)
        if stream:
            chunks = list(client.chat.completions.create(stream=True, **kw))
            calls = [tc for c in chunks if c.choices for tc in (c.choices[0].delta.tool_calls or [])]
            finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason][-1]
        else:
            r = client.chat.completions.create(**kw)
            calls, finish = r.choices[0].message.tool_calls, r.choices[0].finish_reason
            assert r.choices[0].message.content is None
        assert finish == "tool_calls" and len(calls) == 1 and calls[0].id.startswith("call_")
        fn = calls[0].function
        assert fn.name in ("get_weather", "get_time") and (choice == "required" or fn.name == "get_weather")
        jsonschema.validate(json.loads(fn.arguments), params if fn.name == "get_weather" else tools[1]["function"]["parameters"])
    # the call and its result carried back in the next turn
    msgs2 = msgs + [{"role": "assistant", "content": None, "tool_calls": [
        {"id": calls[0].id, "type": "function", "function": {"name": fn.name, "arguments": fn.arguments}}]},
        {"role": "tool", "tool_call_id": calls[0].id, "content": "12 C"}]
    r = client.chat.completions.create(model="rayhet-tiny", messages=msgs2, tools=tools, tool_choice="none",
                                       max_tokens=8)
    assert r.choices[0].message.tool_calls is None and r.choices[0].message.content


@pytest.mark.parametrize("stream", [False, True])
def test_structured_output_through_the_app_validates_against_its_schema(client, stream):
    """response_format json_schema with the official client, streamed and not: the content is JSON of the
    schema (llama.cpp's grammar on the pool); json_object gives an object."""
    import json

    import jsonschema

    schema = {"type": "object", "properties": {"ok": {"type": "boolean"}, "size": {"enum": ["s", "m", "l"]}},
              "required": ["ok", "size"], "additionalProperties": False}
    rf = {"type": "json_schema", "json_schema": {"name": "answer", "schema": schema, "strict": True}}
    msgs = [{"role": "user", "content": "Answer in JSON"}]
    if stream:
        chunks = list(client.chat.completions.create(model="rayhet-tiny", messages=msgs, max_tokens=100,
                                                     response_format=rf, stream=True))
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        finish = [c.choices[0].finish_reason for c in chunks if c.choices][-1]
    else:
        r = client.chat.completions.create(model="rayhet-tiny", messages=msgs, max_tokens=100, response_format=rf)
        text, finish = r.choices[0].message.content, r.choices[0].finish_reason
    jsonschema.validate(json.loads(text), schema)
    assert finish == "stop"
    r = client.chat.completions.create(model="rayhet-tiny", messages=msgs, max_tokens=100,
                                       response_format={"type": "json_object"}, temperature=0)
    assert r.choices[0].message.content.lstrip().startswith("{")


def test_openai_completion_streaming(client):
    from rayhet.testing.models import prompt_of_tokens

    chunks = list(client.completions.create(model="rayhet-tiny", prompt=prompt_of_tokens(10), max_tokens=12,
                                            stream=True, stream_options={"include_usage": True},
                                            extra_body={"ignore_eos": True}))
    assert chunks[-2].choices[0].finish_reason == "length" and chunks[-2].usage is None
    assert chunks[-1].choices == []
    assert chunks[-1].usage.completion_tokens == 12 and chunks[-1].usage.prompt_tokens == 10
    text = "".join(c.choices[0].text for c in chunks if c.choices)
    assert text == "".join(c.choices[0].text for c in chunks[:-1])


@pytest.mark.parametrize("include_usage", [True, False])
def test_stream_usage_chunks_as_openai_sends_them(two_pools, include_usage):
    """On the wire: with include_usage every chunk has `usage` (null but the last, `choices: []`); without, none."""
    import json

    import httpx

    from rayhet.testing.models import prompt_of_tokens

    body = {"model": "rayhet-tiny", "prompt": prompt_of_tokens(10), "max_tokens": 5, "stream": True,
            "ignore_eos": True}
    if include_usage:
        body["stream_options"] = {"include_usage": True}
    with httpx.stream("POST", f"{two_pools}/v1/completions", json=body, timeout=60) as r:
        lines = [ln[6:] for ln in r.iter_lines() if ln.startswith("data: ")]
    assert lines[-1] == "[DONE]"
    chunks = [json.loads(ln) for ln in lines[:-1]]
    if not include_usage:
        assert not any("usage" in c for c in chunks)
        assert chunks[-1]["choices"][0]["finish_reason"] == "length"
        return
    assert all("usage" in c for c in chunks)
    assert [c["usage"] for c in chunks[:-1]] == [None] * (len(chunks) - 1)
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"] == {
        "prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}


@pytest.mark.parametrize("body, status, param", [
    (b"{not json", 400, None),
    (b"[1, 2]", 400, None),
    (b'{"model": "rayhet-tiny", "prompt": "hi", "max_tokens": "ten"}', 400, "max_tokens"),
    (b'{"model": "rayhet-tiny", "prompt": "hi", "max_tokens": -3}', 400, "max_tokens"),
    (b'{"model": "rayhet-tiny", "prompt": "hi", "temperature": 7}', 400, "temperature"),
    (b'{"model": "rayhet-tiny", "prompt": 12}', 400, "prompt"),
    (b'{"model": "rayhet-tiny"}', 400, "prompt"),
    (b'{"model": "gpt-9", "prompt": "hi"}', 404, "model"),
    (b'{"model": "rayhet-tiny", "prompt": "hi", "n": 9}', 400, "n"),  # server.max_n is 8
    (b'{"model": "rayhet-tiny", "prompt": "hi", "n": 0}', 400, "n"),
])
def test_bad_completion_requests_get_4xx(two_pools, body, status, param):
    import httpx

    r = httpx.post(f"{two_pools}/v1/completions", content=body, headers={"content-type": "application/json"},
                   timeout=30)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["message"] and err["type"]
    if param:
        assert err["param"] == param


def test_bad_chat_requests_and_too_long_prompts_get_4xx(two_pools):
    import httpx

    from rayhet.testing.models import prompt_of_tokens

    url = f"{two_pools}/v1/chat/completions"
    for body in ({"model": "rayhet-tiny", "messages": "hi"}, {"model": "rayhet-tiny", "messages": []},
                 {"model": "rayhet-tiny", "messages": [{"role": "wizard", "content": "x"}]},
                 {"model": "rayhet-tiny", "messages": [{"role": "user", "content": 5}]}):
        r = httpx.post(url, json=body, timeout=30)
        assert r.status_code == 400, (body, r.text)
    r = httpx.post(f"{two_pools}/v1/completions", timeout=30,
                   json={"model": "rayhet-tiny", "prompt": prompt_of_tokens(1100), "max_tokens": 8})
    assert r.status_code == 400 and "exceeds every pool's context" in r.json()["error"]["message"]
    assert r.json()["error"]["code"] == "context_length_exceeded"
    assert httpx.get(f"{two_pools}/v1/completions", timeout=30).status_code == 405


def test_health_reports_every_routed_pool(two_pools):
    import time

    import httpx

    deadline = time.monotonic() + 30
    while (r := httpx.get(f"{two_pools}/health", timeout=30)).status_code != 200 and time.monotonic() < deadline:
        time.sleep(0.2)  # the first background read of the pools' states is at most a refresh away
    body = r.json()
    assert r.status_code == 200 and body["status"] == "ok", body
    assert {p: (v["routed"], v["ok"], v["running"]) for p, v in body["pools"].items()} == {
        "small": (True, True, 1), "big": (True, True, 1)}


def test_health_is_503_while_a_routed_pool_has_no_replica(serve_url):
    """A pool pinned to hardware the cluster lacks never starts: the app answers, but /health says it cannot serve."""
    import time

    import httpx
    from ray import serve

    from rayhet.app import build

    config = {"model": {"id": "fake"}, "server": {"ingress_num_cpus": 0},
              "pools": [{"name": "here", "engine": "fake", "num_cpus": 0},
                        {"name": "nowhere", "engine": "fake", "num_cpus": 0, "accelerator_type": "H100"}]}
    serve._run(build({"config": config}), _blocking=False, name="unhealthy", route_prefix="/unhealthy")
    try:
        deadline, r = time.monotonic() + 60, None
        while time.monotonic() < deadline:
            try:
                r = httpx.get(f"{serve_url}/unhealthy/health", timeout=10)
                if r.status_code == 503 and r.json().get("pools", {}).get("here", {}).get("ok"):
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.25)
        assert r is not None and r.status_code == 503, r and r.text
        body = r.json()
        assert body["status"] == "unavailable" and body["reason"].endswith(": nowhere")
        assert body["pools"]["here"]["ok"] and not body["pools"]["nowhere"]["ok"]
    finally:
        serve.delete("unhealthy")
