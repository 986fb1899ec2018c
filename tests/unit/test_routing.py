"""Routing: output-length prediction per input bucket, bucket mapping, weighted choice, spill-over order."""

from __future__ import annotations

import asyncio

from collections import Counter

import pytest

from rayhet.plan import Plan
from rayhet.routing import (
    BucketQuantilePredictor,
    MaxTokensPredictor,
    OutputPredictor,
    PoolLimit,
    Router,
    make_predictor,
    static_plan,
)


def plan(routing, replicas=None):
    return Plan(replicas=replicas or {"small": 1, "big": 1}, routing=routing, input_edges=[100, 1000],
                output_edges=[50, 500], cost_per_hour=1.0, rate=1.0)


def test_predictor_learns_per_input_bucket():
    p = BucketQuantilePredictor([100, 1000], quantile=0.5, window=10, min_samples=3)
    assert p.predict(10, 300) == 300  # nothing learned: max_tokens
    for n in (20, 30, 40):
        p.observe(10, n, 300)
    assert p.predict(10, 300) == 30
    assert p.predict(10, 25) == 25  # capped by max_tokens
    assert p.predict(500, 300) == 300  # other input bucket: still conservative
    for n in range(20):
        p.observe(10, 200, 300)  # the window forgets the old ones
    assert p.predict(10, 300) == 200


def test_make_predictor_specs():
    assert isinstance(make_predictor("max_tokens", [1]), MaxTokensPredictor)
    assert isinstance(make_predictor("rayhet.routing:MaxTokensPredictor", [1]), OutputPredictor)
    with pytest.raises(ValueError, match="unknown predictor"):
        make_predictor("psychic", [1])


def test_short_and_long_go_to_their_planned_pools():
    r = Router(plan({(0, 0): {"small": 1.0}, (0, 1): {"big": 1.0}, (1, 1): {"big": 1.0}}),
               [PoolLimit("small", 2048, 1.0), PoolLimit("big", 2048, 2.0)])
    short = r.decide(10, 20)
    assert short.bucket == (0, 0) and short.pools[0] == "small"
    long = r.decide(10, 400)
    assert long.bucket == (0, 1) and long.pools == ["big", "small"]  # spill: cheapest other pool
    # a short request may spill to the pool planned for longer outputs of its input bucket
    assert short.pools == ["small", "big"]


def test_weighted_shares_are_followed_exactly():
    r = Router(plan({(0, 0): {"small": 0.75, "big": 0.25}}), [PoolLimit("small"), PoolLimit("big")])
    firsts = Counter(r.decide(10, 20).pools[0] for _ in range(400))
    assert firsts == {"small": 300, "big": 100}


def test_context_limits_and_rejection():
    r = Router(plan({(1, 1): {"small": 1.0}}), [PoolLimit("small", 512), PoolLimit("big", 4096)])
    d = r.decide(600, 100)
    assert d.pools == ["big"]  # small is planned but cannot hold 700 tokens
    no = r.decide(5000, 100)
    assert no.pools == [] and "exceeds every pool's context" in no.reason and "4096" in no.reason


def test_beyond_grid_is_clipped_into_last_bucket():
    r = Router(plan({(1, 1): {"big": 1.0}}), [PoolLimit("small"), PoolLimit("big")])
    d = r.decide(5000, 2000)
    assert d.bucket == (1, 1) and d.clipped and d.pools[0] == "big"


def test_failed_pool_goes_last_for_a_while():
    r = Router(plan({(0, 0): {"small": 1.0}}), [PoolLimit("small", None, 1.0), PoolLimit("big", None, 2.0)],
               failure_cooldown_s=5)
    r.mark_failed("small", now=100.0)
    assert r.decide(10, 20, now=101.0).pools == ["big", "small"]
    assert r.decide(10, 20, now=106.0).pools == ["small", "big"]


def test_pools_without_replicas_are_not_spill_targets():
    r = Router(plan({(0, 0): {"small": 1.0}}, replicas={"small": 1, "big": 0}), [PoolLimit("small"), PoolLimit("big")])
    assert r.decide(10, 20).pools == ["small"]


def test_static_plan_splits_by_replicas():
    p = static_plan({"a": 3, "b": 1}, 2048)
    assert p.input_edges[0] == 32 and p.input_edges[-1] == 2048 and p.status == "static"
    assert p.pools_for(0, 0) == {"a": 0.75, "b": 0.25}
    assert Plan.from_dict(p.to_dict()) == p


def test_largest_context_and_chat_default_max_tokens():
    from types import SimpleNamespace

    from rayhet.serve.ingress import Ingress
    from rayhet.serve.openai_api import ChatRequest

    assert Router(plan({}), [PoolLimit("small", 512), PoolLimit("big", None)]).largest_context == 512
    assert Router(plan({}), [PoolLimit("small"), PoolLimit("big")]).largest_context == 0  # none known

    def chat_max_tokens(max_context, prompt_chars):
        cfg = {"model": {"id": "fake"}, "pools": [{"name": "fake", "engine": "fake"}],
               "routing": {"default_max_tokens": 256}}
        handle = SimpleNamespace(options=lambda **_: None)
        ing = Ingress(cfg, static_plan({"fake": 1}, 1024).to_dict(), {"fake": handle},
                      [{"name": "fake", "max_context": max_context, "slots": 4}])
        req = ChatRequest.model_validate({"model": "fake", "messages": [{"role": "user", "content": "x" * prompt_chars}]})
        ids, max_tokens, _ = asyncio.run(ing._tokenize("chat", req))
        return len(ids), max_tokens

    n, m = chat_max_tokens(300, 100)  # the context leaves less than the default: capped by it
    assert m == 300 - n < 256
    assert chat_max_tokens(4096, 100)[1] == 256  # room enough: the default
    assert chat_max_tokens(None, 100)[1] == 256  # context unknown: the default
    assert chat_max_tokens(100, 200)[1] == 256  # the prompt alone overflows: the default (the router refuses it)
