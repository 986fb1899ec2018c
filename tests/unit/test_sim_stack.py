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
        ingress_replicas, ingress_capacity_rps, proxy_capacity_rps, shed_lag_ms = 3, 55.0, 90.0, None

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

    def run(replicas, shed_lag_ms=None):
        cfg = parse_config({"model": {"id": "m", "gguf": "/nonexistent.gguf"},
                            "pools": [{"name": "p", "engine": "llama_cpp", "min_replicas": 1, "max_replicas": 1,
                                       "profile": prof, "engine_settings": {"n_slots": 256, "n_ctx": 4096}}],
                            "slo": {"ttft_ms": 1000, "ttft_quantile": 0.9}, "routing": {"predictor": "max_tokens"},
                            "controller": {"enabled": False},
                            "server": {"ingress_replicas": replicas, "ingress_capacity_rps": 20.0,
                                       "proxy_capacity_rps": None, "shed_lag_ms": shed_lag_ms}})
        t = np.arange(80) / 40.0
        return fleet_for(cfg).run(Trace(t, np.full(80, 10), np.full(80, 4))).requests

    def ttfts(reqs):
        return np.array([r.first_token - r.arrival for r in reqs if r.outcome == "ok"])

    one, two = ttfts(run(1)), ttfts(run(2))
    assert one[-1] == pytest.approx(79 / 20 - 79 / 40, abs=0.05)  # the last one waited for 79 before it
    assert two.max() < 0.05
    # shedding at 0.3 s: no one served waits longer, about half the requests are refused (429) 0.3 s after arriving
    shed = run(1, shed_lag_ms=300)
    refused = [r for r in shed if r.outcome == "refused"]
    assert ttfts(shed).max() < 0.35 and 30 <= len(refused) <= 45
    assert all(r.end - r.arrival == pytest.approx(0.3) for r in refused)


def test_an_ingress_sheds_what_would_wait_past_its_bound():
    st = HttpStack(Stage(1, None), Stage(1, 10.0), shed_s=0.25)  # 0.1 s a request; refuse waits over 0.25 s
    got = [st.reach(0.0) for _ in range(5)]
    assert got[:3] == pytest.approx([0.0, 0.1, 0.2]) and got[3] is None and got[4] is None
    assert st.reach(0.3) == pytest.approx(0.3)  # the refused took no server time: free again at 0.3


def test_loop_lag_reads_an_overdue_tick_while_the_loop_is_stuck():
    from rayhet.serve.lag import LoopLag, shed

    lag = LoopLag(interval_s=0.025, clock=lambda: 0.0)
    assert lag.late_s(0.0) == 0.0  # not running: never late
    lag.woke(10.0)  # due again at 10.025
    assert lag.late_s(10.02) == 0.0
    assert lag.late_s(12.0) == pytest.approx(1.975)  # stuck: overdue now, before the tick can run
    lag.woke(12.0)
    assert lag.late_s(12.01) == pytest.approx(1.975)  # the last tick's lateness, until the next one
    lag.woke(12.03)
    assert lag.late_s(12.03) == pytest.approx(0.005)
    assert shed(0.3, 0.2) and not shed(0.1, 0.2) and not shed(5.0, None)


def test_a_stuck_event_loop_is_read_as_late_by_the_running_ticker():
    import asyncio
    import time

    from rayhet.serve.lag import LoopLag

    async def main():
        lag = LoopLag(interval_s=0.01)
        task = asyncio.get_running_loop().create_task(lag.run())
        await asyncio.sleep(0.05)
        assert lag.late_s() < 0.05
        time.sleep(0.3)  # the loop is blocked: the ticker cannot run
        late_during = lag.late_s()
        await asyncio.sleep(0.05)
        task.cancel()
        return late_during

    assert asyncio.run(main()) > 0.25
