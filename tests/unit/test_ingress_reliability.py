"""The ingress under failures, overload and hostile input, without Ray: its FastAPI app driven in process
(httpx's ASGI transport) with pool handles that are TEST DOUBLES around real PoolServers on the fake engine.
Each double can be told to push back, to lose its replica, or to hang (a pool whose replicas are gone).
The same cases run against real Serve replicas in tests/serve/test_reliability.py."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace

import httpx
import pytest

from rayhet.plan import Plan
from rayhet.serve.health import PoolState
from rayhet.serve.ingress import Ingress, make_app
from rayhet.testing.handles import FakeHandle, fake_pool_server, HandleCall as _Call


CONFIG = {
    "model": {"id": "m"},
    "pools": [
        {"name": "a", "engine": "fake", "price_per_hour": 1.0, "queue_per_replica": 0, "max_queued_requests": 1},
        {"name": "b", "engine": "fake", "price_per_hour": 2.0, "queue_per_replica": 0, "max_queued_requests": 1},
    ],
    "server": {"max_wait_s": 5.0},
}


def plan(replicas: dict[str, int]) -> dict:
    return Plan(replicas=replicas, routing={(0, 0): {"a": 1.0}}, input_edges=[4096], output_edges=[4096],
                cost_per_hour=1.0, rate=1.0).to_dict()


async def make_ingress(scripts: dict[str, list[str]] | None = None, config: dict | None = None,
                       engine: dict | None = None, slots: int = 2) -> tuple[Ingress, dict[str, FakeHandle]]:
    scripts = scripts or {}
    handles = {n: FakeHandle(await fake_pool_server(n, n_slots=slots, **(engine or {})), scripts.get(n)) for n in ("a", "b")}
    limits = [{"name": n, "max_context": 4096, "price_per_hour": 1.0 + k, "slots": slots} for k, n in enumerate("ab")]
    return Ingress(config or CONFIG, plan({"a": 1, "b": 1}), handles, limits), handles


def client(ingress: Ingress) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=make_app(ingress)), base_url="http://test", timeout=30)


def body(**kw) -> dict:
    return {"model": "m", "prompt": "hello", "max_tokens": 4, **kw}


def watched(ingress: Ingress, **running: int) -> None:
    """Pretend Serve's status says these pools have these running replicas (0: UNHEALTHY, none running)."""
    states = {n: PoolState("HEALTHY" if r else "UNHEALTHY", r) for n, r in running.items()}
    ingress.watcher = SimpleNamespace(states=states, checked_at=time.time())
    ingress._pools_changed(states)


# -- hostile input: a 400 naming the parameter, never a 5xx ------------------------------------------
async def test_lone_surrogates_and_deep_json_are_400():
    ingress, _ = await make_ingress()
    async with client(ingress) as c:
        r = await c.post("/v1/completions", content=b'{"model": "m", "prompt": "a\\ud800b"}',
                         headers={"content-type": "application/json"})
        assert r.status_code == 400 and r.json()["error"]["param"] == "prompt"
        chat = b'{"model": "m", "messages": [{"role": "user", "content": "x\\udc00"}]}'
        r = await c.post("/v1/chat/completions", content=chat, headers={"content-type": "application/json"})
        assert r.status_code == 400 and r.json()["error"]["param"] == "messages.0.content"
        deep = b'{"model": "m", "prompt": "x", "extra": ' + b"[" * 1000 + b"]" * 1000 + b"}"
        r = await c.post("/v1/completions", content=deep, headers={"content-type": "application/json"})
        assert r.status_code == 400 and "nests deeper" in r.json()["error"]["message"]
        r = await c.post("/v1/completions", json=body())  # and the server still serves
        assert r.status_code == 200


async def test_null_means_the_default_as_in_openai():
    ingress, _ = await make_ingress()
    async with client(ingress) as c:
        r = await c.post("/v1/completions", json=body(temperature=None, top_p=None, n=None, stream=None, echo=None))
        assert r.status_code == 200, r.text
        r = await c.post("/v1/chat/completions", json={"model": "m", "messages": [{"role": "user", "content": "hi"}],
                                                       "temperature": None, "n": None, "stream": None, "max_tokens": 3})
        assert r.status_code == 200, r.text


async def test_an_engine_error_from_a_replica_reaches_the_client_without_its_traceback():
    from ray.exceptions import RayTaskError

    from rayhet.engines.base import InvalidRequestError

    ingress, handles = await make_ingress()
    cause = InvalidRequestError("prompt + max_tokens exceeds the context", param="max_tokens")
    wrapped = RayTaskError("complete", "Traceback (most recent call last):\n  File \"/x/y.py\" pid=1234 ip=10.0.0.1",
                           cause).as_instanceof_cause()

    async def raise_wrapped():
        raise wrapped

    handles["a"].complete = SimpleNamespace(remote=lambda gen: _Call(raise_wrapped(), False))
    async with client(ingress) as c:
        r = await c.post("/v1/completions", json=body())
    err = r.json()["error"]
    assert r.status_code == 400 and err["param"] == "max_tokens"
    assert err["message"] == "prompt + max_tokens exceeds the context"
    assert "Traceback" not in r.text and "pid" not in r.text and "10.0.0.1" not in r.text


async def test_an_engine_refusal_names_the_request_field_the_client_sent():
    """The engine checks token ids against its vocabulary and names its own field, prompt_token_ids; the client
    sent `prompt` (found by the conformance fuzzing: the 400 named a field the request did not have)."""
    from rayhet.engines.base import InvalidRequestError, check_token_ids

    ingress, handles = await make_ingress()

    async def check():
        check_token_ids([-3, 7], 512)

    handles["a"].complete = SimpleNamespace(remote=lambda gen: _Call(check(), False))
    async with client(ingress) as c:
        r = await c.post("/v1/completions", json=body(prompt=[-3, 7]))
    err = r.json()["error"]
    assert r.status_code == 400 and err["param"] == "prompt", err
    assert "prompt_token_ids" not in err["message"] and "[0, 512)" in err["message"], err
    with pytest.raises(InvalidRequestError):
        await check()


async def test_a_malformed_call_in_the_history_is_served():
    """An assistant turn whose call's arguments are not JSON was a 500 (history_text's json.loads)."""
    ingress, _ = await make_ingress()
    call = {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{oops"}}
    messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": None, "tool_calls": [call]},
                {"role": "tool", "tool_call_id": "call_1", "content": "12"}]
    async with client(ingress) as c:
        r = await c.post("/v1/chat/completions", json={"model": "m", "messages": messages, "max_tokens": 2})
    assert r.status_code == 200, r.text


# -- lost replicas: safe retries, spill from a pool without replicas ---------------------------------
@pytest.mark.parametrize("stream", [False, True])
async def test_a_request_whose_replica_died_before_answering_is_sent_again(stream):
    ingress, handles = await make_ingress({"a": ["die"]})
    watched(ingress, a=2, b=1)  # a has another replica: the retry stays on a
    async with client(ingress) as c:
        r = await c.post("/v1/completions", json=body(stream=stream))
        assert r.status_code == 200 and "data: [DONE]" in r.text if stream else r.json()["usage"]["completion_tokens"] == 4
    assert handles["a"].calls == 2 and handles["b"].calls == 0
    assert r.headers["x-rayhet-pool"] == "a"


async def test_with_one_replica_left_a_lost_request_goes_to_the_next_pool():
    ingress, handles = await make_ingress({"a": ["die"]})
    watched(ingress, a=1, b=1)
    async with client(ingress) as c:
        r = await c.post("/v1/completions", json=body())
    assert r.status_code == 200 and r.headers["x-rayhet-pool"] == "b"
    assert handles["a"].calls == 1


async def test_a_pool_without_a_running_replica_is_not_tried():
    ingress, handles = await make_ingress()
    watched(ingress, a=0, b=1)
    async with client(ingress) as c:
        r = await c.post("/v1/completions", json=body())
    assert r.status_code == 200 and r.headers["x-rayhet-pool"] == "b"
    assert handles["a"].calls == 0


@pytest.mark.parametrize("script", ["hang", "hang-bad-cancel"])
async def test_a_request_waiting_on_a_pool_that_loses_its_replicas_moves_on_within_a_second(script):
    ingress, handles = await make_ingress({"a": [script]})
    watched(ingress, a=1, b=1)

    async def lose_a():
        await asyncio.sleep(0.3)
        watched(ingress, a=0, b=1)

    async with client(ingress) as c:
        t0 = time.monotonic()
        r, _ = await asyncio.gather(c.post("/v1/completions", json=body()), lose_a())
        waited = time.monotonic() - t0
    assert r.status_code == 200 and r.headers["x-rayhet-pool"] == "b"
    assert waited < 3.0, waited  # about 0.3 + 0.5 s; far from the 5 s max_wait_s it would otherwise wait


async def test_no_pool_with_a_replica_is_a_fast_503_with_retry_after():
    ingress, handles = await make_ingress()
    watched(ingress, a=0, b=0)
    async with client(ingress) as c:
        t0 = time.monotonic()
        r = await c.post("/v1/completions", json=body())
    assert r.status_code == 503 and int(r.headers["retry-after"]) >= 1
    assert time.monotonic() - t0 < 2.5  # nothing waited for (max_wait_s is 5 s)
    assert handles["a"].calls == handles["b"].calls == 0


async def test_a_request_nobody_starts_is_refused_at_its_deadline():
    cfg = dict(CONFIG, server={"max_wait_s": 0.5})
    ingress, handles = await make_ingress({"a": ["hang"], "b": ["hang"]}, config=cfg)
    async with client(ingress) as c:
        t0 = time.monotonic()
        r = await c.post("/v1/completions", json=body())
    assert r.status_code == 503 and "retry-after" in r.headers
    assert 0.5 <= time.monotonic() - t0 < 4.0  # at its deadline, not at the pools' (3600 s)


# -- overload: bounded waiting, a fast refusal with Retry-After ---------------------------------------
async def test_overload_is_refused_at_once_with_retry_after_and_nothing_is_lost():
    """Each pool holds slots (2) + its queue at the caller (1) = 3; the 7th request onwards is refused at
    once with 429 and Retry-After, every admitted one is served, and the bound is back once they are done."""
    ingress, handles = await make_ingress(engine={"tpot_s": 0.25})  # an admitted request lasts ~1.75 s
    watched(ingress, a=1, b=1)
    async with client(ingress) as c:
        async def one():
            t0 = time.monotonic()
            r = await c.post("/v1/completions", json=body(max_tokens=8))
            return r, time.monotonic() - t0

        results = await asyncio.gather(*[one() for _ in range(12)])
        codes = sorted(r.status_code for r, _ in results)
        assert codes.count(200) == 6 and codes.count(429) == 6, codes
        for r, dt in results:
            if r.status_code == 429:
                assert int(r.headers["retry-after"]) >= 1 and dt < 1.0  # not after a wait for a slot
                assert r.json()["error"]["type"] == "rate_limit_error"
        assert ingress.admission.in_flight == {"a": 0, "b": 0}
        pools = ingress.traffic.snapshot().pools  # a full pool skipped counts as a spill-over, as a push-back
        assert pools["a"].spilled_out >= 3 and pools["b"].spilled_in == pools["a"].spilled_out
        r = await c.post("/v1/completions", json=body())
        assert r.status_code == 200


async def test_when_every_pool_is_full_the_body_is_not_even_read():
    ingress, _ = await make_ingress()
    watched(ingress, a=1, b=1)
    tickets = [ingress.admission.enter(p) for p in "ab" for _ in range(3)]
    async with client(ingress) as c:
        r = await c.post("/v1/completions", content=b"not json at all", headers={"content-type": "application/json"})
        assert r.status_code == 429 and "retry-after" in r.headers
        for t in tickets:
            t.release()
        r = await c.post("/v1/completions", content=b"not json at all", headers={"content-type": "application/json"})
        assert r.status_code == 400


async def test_an_ingress_whose_loop_runs_late_with_work_in_hand_sheds_new_requests_at_once():
    """server.shed_lag_ms (200): a loop 0.5 s late with >= 16 requests at the pools refuses with 429 and
    Retry-After before reading the body; late with fewer in hand (a busy host, not an overload), it serves."""
    from rayhet.serve.ingress import SHED_MIN_IN_FLIGHT

    ingress, handles = await make_ingress(slots=64)
    watched(ingress, a=1, b=1)
    ingress.lag.late_s = lambda now=None: 0.5
    async with client(ingress) as c:
        tickets = [ingress.admission.enter("a") for _ in range(SHED_MIN_IN_FLIGHT - 1)]
        assert (await c.post("/v1/completions", json=body())).status_code == 200
        tickets.append(ingress.admission.enter("a"))
        r = await c.post("/v1/completions", content=b"not json at all", headers={"content-type": "application/json"})
        assert r.status_code == 429 and r.headers["retry-after"] == "1"
        assert r.json()["error"]["code"] == "rate_limit_exceeded" and "ms late" in r.json()["error"]["message"]
        assert ingress._shed_count == 1
        ingress.lag.late_s = lambda now=None: 0.05  # caught up
        assert (await c.post("/v1/completions", json=body())).status_code == 200
        for t in tickets:
            t.release()


def test_pool_facts_from_the_builder_are_validated_naming_the_field():
    """What the builder tells the ingress about its pools is a typed message: a missing or bad field is an error
    naming it when the ingress starts, not a silent default (slots were once `or 8`)."""
    from types import SimpleNamespace

    from pydantic import ValidationError

    handles = {n: SimpleNamespace(options=lambda **_: None) for n in "ab"}
    with pytest.raises(ValidationError, match="slots"):
        Ingress(CONFIG, plan({"a": 1, "b": 1}), handles, [{"name": "a", "max_context": 4096}])
    with pytest.raises(ValidationError, match="slots"):
        Ingress(CONFIG, plan({"a": 1, "b": 1}), handles, [{"name": "a", "slots": 0}])


async def test_long_prompts_are_tokenized_off_the_event_loop():
    """Issue 17's hot path: a prompt longer than server.tokenize_inline_chars is tokenized in the ingress's thread
    pool, so the event loop keeps running other requests meanwhile; a short one inline (the hop costs more)."""
    import threading

    ingress, _ = await make_ingress()
    seen: list[str] = []
    real = ingress.tokenizer.prompt_ids

    def slow(text: str) -> list[int]:
        seen.append(threading.current_thread().name)
        if len(text) > ingress.config.server.tokenize_inline_chars:
            time.sleep(0.3)  # a tokenizer busy with a long prompt
        return real(text)

    ingress.tokenizer.prompt_ids = slow
    ticks = 0

    async def ticker():
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.01)

    t = asyncio.ensure_future(ticker())
    async with client(ingress) as c:
        r = await c.post("/v1/completions", json=body(prompt="x" * (ingress.config.server.tokenize_inline_chars + 1)))
        short = await c.post("/v1/completions", json=body(prompt="hello"))
    t.cancel()
    assert r.status_code == 200 and short.status_code == 200
    assert seen[0].startswith("rayhet-tokenize") and seen[1] == threading.current_thread().name
    assert ticks >= 10  # the loop ran on through the 0.3 s of tokenization
