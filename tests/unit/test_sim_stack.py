"""The simulated HTTP stack (rayhet.sim.stack): Serve's proxy and the ingress replicas as FIFO servers."""

import numpy as np
import pytest

from rayhet.sim.stack import HttpStack, Stage, ingress_replicas_needed


def test_a_stage_adds_only_the_wait_for_a_free_server():
    s = Stage(servers=2, rate=10.0)  # each server busy 0.1 s per request
    assert [s.enter(0.0) for _ in range(4)] == pytest.approx([0.0, 0.0, 0.1, 0.1])
    assert s.enter(5.0) == 5.0  # idle again: no wait
    assert Stage(1, None).enter(3.0) == 3.0


def test_the_stack_is_its_narrowest_stage():
    class Server:
        ingress_replicas, ingress_capacity_rps, proxy_capacity_rps = 3, 55.0, 90.0

    st = HttpStack.from_server(Server)
    assert st.capacity_rps() == 90.0
    # 200 arrivals in 1 s (200 req/s) through 90 req/s: the last one reaches the router ~ (200-90)/90 s late
    reach = [st.reach(i / 200) for i in range(200)]
    assert reach[-1] - 199 / 200 == pytest.approx(199 / 90 - 199 / 200, rel=0.02)
    assert all(b >= a for a, b in zip(reach, reach[1:]))


def test_ingress_replicas_needed_keeps_them_below_80_percent():
    assert ingress_replicas_needed(40, 55) == 1
    assert ingress_replicas_needed(45, 55) == 2
    assert ingress_replicas_needed(76.5, 55) == 2
    assert ingress_replicas_needed(100, 55) == 3
    assert ingress_replicas_needed(1000, None) == 1


def test_the_fleet_makes_requests_wait_in_an_overloaded_ingress(tmp_path):
    """One ingress replica at 20 req/s, 40 req/s offered for 2 s to an engine with room to spare: requests
    reach the pool later and later (TTFT grows by ~ the backlog / 20 s); with 2 replicas no one waits."""
    from rayhet.config import parse_config
    from rayhet.perf import StepModel
    from rayhet.sim.build import fleet_for
    from rayhet.sim.trace import Trace
    from tests.unit.test_simulate import _profile

    step = StepModel(c_step=0.001, c_prefill=0, c_decode=0, c_kv_read=0, c_attn=0)
    prof = _profile(tmp_path / "p.json", step=step, slots=256, ctx=4096, name="p", price=1.0)

    def ttfts(replicas):
        cfg = parse_config({"model": {"id": "m", "gguf": "/nonexistent.gguf"},
                            "pools": [{"name": "p", "engine": "llama_cpp", "min_replicas": 1, "max_replicas": 1,
                                       "profile": prof, "engine_settings": {"n_slots": 256, "n_ctx": 4096}}],
                            "slo": {"ttft_ms": 1000, "ttft_quantile": 0.9}, "routing": {"predictor": "max_tokens"},
                            "controller": {"enabled": False},
                            "server": {"ingress_replicas": replicas, "ingress_capacity_rps": 20.0,
                                       "proxy_capacity_rps": None}})
        t = np.arange(80) / 40.0
        res = fleet_for(cfg).run(Trace(t, np.full(80, 10), np.full(80, 4)))
        return np.array([r.first_token - r.arrival for r in res.requests])

    one, two = ttfts(1), ttfts(2)
    assert one[-1] == pytest.approx(79 / 20 - 79 / 40, abs=0.05)  # the last one waited for 79 before it
    assert two.max() < 0.05
