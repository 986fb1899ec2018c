"""PoolServer without Ray: the unary `complete` (one message, timings measured in the replica) and the
streaming `generate` that coalesces the deltas the engine produced while the last one was being sent."""

from __future__ import annotations

import asyncio
import time

import pytest

from rayhet.engines.base import EngineError, GenerationDelta, GenerationRequest, SamplingParams, TokenLogprob, Usage
from rayhet.serve.pool import Completion, GenerationFailed, PoolServer, merge


class _Pool(PoolServer):
    def __del__(self) -> None:  # Serve awaits the async one; outside Serve nothing would
        pass


async def make_pool(**settings) -> PoolServer:
    pool = _Pool.__new__(_Pool)  # Serve awaits the async constructor; so do we
    await pool.__init__("p", "fake", settings)
    return pool


def req(max_tokens: int = 10) -> GenerationRequest:
    return GenerationRequest(request_id="r", prompt="hello", sampling=SamplingParams(max_tokens=max_tokens))


class _FailsAfterFirst:
    """Yields one token, then fails (a replica dying mid-generation)."""

    async def generate(self, request):
        yield GenerationDelta(text="a", token_ids=[97])
        raise EngineError("boom")


async def test_complete_returns_everything_in_one_reply():
    pool = await make_pool(tokens_per_step=3, tpot_s=0.001)
    res = await pool.complete(req(10))
    assert isinstance(res, Completion)
    assert (res.text, res.token_ids, res.finish_reason) == ("a" * 10, [97] * 10, "length")
    assert res.usage == Usage(5, 10)
    assert 0 <= res.ttft_s <= res.total_s and 0 <= res.decode_s <= res.total_s
    c = pool._counters
    assert (c["requests"], c["ok"], c["completion_tokens"]) == (1, 1, 10)


class _FinalOnly:
    """An engine that honours stream=False: one delta with everything, stamped with the engine's own
    first-token time (as VllmEngine does with FINAL_ONLY outputs)."""

    def __init__(self):
        self.seen: list[bool] = []

    async def generate(self, request):
        self.seen.append(request.stream)
        first = time.monotonic()
        await asyncio.sleep(0.05)  # the decode the caller does not see
        yield GenerationDelta(text="abc", token_ids=[1, 2, 3], finish_reason="length", usage=Usage(5, 3),
                              first_token_time=first)


async def test_complete_asks_for_the_final_result_only_and_takes_the_engines_first_token_time():
    pool = await make_pool()
    pool.engine = _FinalOnly()
    request = req(3)
    res = await pool.complete(request)
    assert pool.engine.seen == [False] and request.stream is True  # the caller's request is left as it was
    assert (res.text, res.token_ids, res.usage) == ("abc", [1, 2, 3], Usage(5, 3))
    # TTFT from the engine's stamp, not from when the one delta arrived: the decode time is not lost
    assert res.ttft_s < 0.04 and res.decode_s >= 0.04


async def test_complete_errors_before_the_first_token_propagate_as_raised():
    pool = await make_pool(fail=True)
    with pytest.raises(EngineError) as e:
        await pool.complete(req())
    assert not isinstance(e.value, GenerationFailed)  # the ingress may still spill this one


async def test_complete_failure_after_the_first_token_is_generation_failed():
    pool = await make_pool()
    pool.engine = _FailsAfterFirst()
    with pytest.raises(GenerationFailed, match="after 1 tokens"):
        await pool.complete(req())
    assert pool._counters["errors"] == 1


async def test_generate_coalesces_deltas_already_produced():
    pool = await make_pool()  # tpot 0: the engine produces all 10 deltas before the first is sent
    deltas = [d async for d in pool.generate(req(10))]
    assert len(deltas) < 10
    assert "".join(d.text for d in deltas) == "a" * 10
    assert deltas[-1].finish_reason == "length" and deltas[-1].usage == Usage(5, 10)
    assert pool._counters["ok"] == 1 and pool._counters["completion_tokens"] == 10


async def test_generate_sends_the_first_token_alone_when_the_engine_is_slower():
    pool = await make_pool(tpot_s=0.2)
    gen = pool.generate(req(3))
    first = await gen.__anext__()
    assert first.token_ids == [97]  # not held back to fill a message
    rest = [d async for d in gen]
    assert sum(len(d.token_ids) for d in rest) == 2


async def test_generate_raises_engine_errors_and_closing_it_frees_the_slot():
    pool = await make_pool(fail=True)
    with pytest.raises(EngineError):
        [d async for d in pool.generate(req())]
    pool = await make_pool(tpot_s=0.05, n_slots=1)
    gen = pool.generate(req(100))
    await gen.__anext__()
    await gen.aclose()  # the caller went away
    deadline = time.monotonic() + 10
    while pool.engine.stats().running and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    assert pool.engine.stats().running == 0
    assert pool._counters["cancelled"] == 1


def test_merge_keeps_order_and_the_last_finish():
    a = GenerationDelta("x", [1], first_token_time=5.0)
    b = GenerationDelta("y", [2], finish_reason="stop", usage=Usage(1, 2), first_token_time=5.0)
    m = merge([a, b])
    assert (m.text, m.token_ids, m.finish_reason, m.usage, m.first_token_time) == ("xy", [1, 2], "stop", Usage(1, 2), 5.0)
    assert merge([a]) is a
    lp = TokenLogprob("x", [120], -0.5)
    first = GenerationDelta("x", [1], prompt_logprobs=[TokenLogprob("", [], None), lp])
    assert merge([first, b]).prompt_logprobs == first.prompt_logprobs and m.prompt_logprobs is None
