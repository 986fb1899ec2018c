"""rayhet.dispatch: the ingress's per-request decisions and bookkeeping on an injected clock."""

from __future__ import annotations

from rayhet.config import parse_config
from rayhet.dispatch import Dispatcher
from rayhet.plan import Plan
from rayhet.routing import PoolLimit


def _dispatcher(now: list[float], **routing):
    cfg = parse_config({"model": {"id": "m", "gguf": "/x.gguf"},
                        "pools": [{"name": "a", "engine": "llama_cpp"}, {"name": "b", "engine": "llama_cpp"}],
                        "routing": {"predictor": "max_tokens", **routing}})
    plan = Plan({"a": 1, "b": 1}, {(0, 0): {"a": 1.0}, (0, 1): {"b": 1.0}}, [100], [10, 100], 1.0, 1.0)
    return Dispatcher(cfg, plan, [PoolLimit("a", 200, 0.1), PoolLimit("b", 1000, 0.2)], ["a", "b"],
                      clock=lambda: now[0], wall_clock=lambda: 1e9 + now[0])


def test_route_spill_and_outcomes_are_recorded_on_the_injected_clock():
    now = [100.0]
    d = _dispatcher(now, max_attempts=2)
    r = d.route(50, 8)
    assert r.pools[0] == "a" and d.tries(r) == ["a", "b"]
    d.sent("a")
    d.pushed_back("a")
    d.sent("b", spilled_from="a")
    now[0] = 101.0
    d.succeeded("b", r, 8, 8, ttft_s=0.2, decode_s=0.7)
    snap = d.traffic.snapshot()
    assert snap.time == 1e9 + 101.0 and snap.arrivals == [(0, 0, 1)]
    assert snap.pools["a"].spilled_out == 1 and snap.pools["b"].ok == 1
    assert snap.pools["b"].tpot_ms.mean == 100.0  # 0.7 s over 7 tokens after the first
    # a failed pool is tried last for the cool-down, on the same clock
    d.failed("a")
    assert d.route(50, 8).pools[-1] == "a"
    now[0] = 200.0
    assert d.route(50, 8).pools[0] == "a"


def test_no_spill_tries_one_pool_and_too_long_is_rejected():
    now = [0.0]
    d = _dispatcher(now, spill=False)
    assert d.tries(d.route(50, 8)) == ["a"]
    r = d.route(990, 100)  # fits no pool
    assert r.pools == [] and "exceeds every pool's context" in r.reason
    assert d.traffic.snapshot().rejected == 1


def test_available_puts_running_pools_first_and_never_waits_on_a_starting_one():
    running = {"a": 0, "b": 2, "c": None, "d": 0}.get
    usable = {"a": False, "b": True, "c": True, "d": True}.get  # a: starting; d: scaled to zero on purpose
    assert Dispatcher.available(["a", "b", "c", "d"], running, usable) == ["b", "c", "d"]
    assert Dispatcher.available(["a"], running, usable) == []


def test_while_the_planned_pool_starts_a_pool_still_running_outside_the_plan_serves():
    """The plan moved bucket (0, 0) to 'a' (starting) and gave 'b' no replicas, but b's replica still runs
    (the scale-down delay): with spill-over it is tried rather than the request refused; never one that is
    not running."""
    for spill, want in ((True, ["b"]), (False, [])):
        cfg = parse_config({"model": {"id": "m", "gguf": "/x.gguf"},
                            "pools": [{"name": "a", "engine": "llama_cpp"}, {"name": "b", "engine": "llama_cpp"}],
                            "routing": {"predictor": "max_tokens", "spill": spill}})
        plan = Plan({"a": 1, "b": 0}, {(0, 0): {"a": 1.0}, (0, 1): {"a": 1.0}}, [100], [10, 100], 1.0, 1.0)
        d = Dispatcher(cfg, plan, [PoolLimit("a", 200, 0.3), PoolLimit("b", 1000, 0.1)], ["a", "b"])
        r = d.route(50, 8)
        assert r.pools == ["a"] and r.standby == ["b"]
        assert d.order(r, {"a": 0, "b": 1}.get, {"a": False, "b": True}.get) == want
        assert d.order(r, {"a": 0, "b": 0}.get, {"a": False, "b": True}.get) == []  # b scaled to zero: not tried
        assert d.order(r, {"a": 1, "b": 1}.get, {"a": True, "b": True}.get) == (["a", "b"] if spill else ["a"])
