"""`rayhet simulate` (issue 14): traces, the fleet's event loop against closed forms, exact cost on a known
answer, the production dispatcher and controller being the code exercised, start-up delays, the CLI."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from rayhet.config import parse_config
from rayhet.perf import EngineLimits, StepModel
from rayhet.sim.trace import Trace, diurnal_curve, from_azure, from_sizes, load_trace, reshape, write_azure

PRICE = 0.36  # $/h: 0.0001 $/s, so costs are easy to check


def _profile(path, *, step: StepModel, slots: int, ctx: int = 4096, price: float = PRICE, name: str = "cpu",
             max_rate=None):
    limits = EngineLimits(batch_slots=slots, step_tokens=4096, kv_tokens=slots * ctx, max_context=ctx,
                          max_waiting=64)
    path.write_text(json.dumps({
        "schema_version": 2, "model": "m", "pool": name, "engine": "llama_cpp", "engine_version": "x",
        "hardware": {"vcpus": 1}, "price_per_hour": price, "slo": {"ttft_ms": 1000, "ttft_quantile": 0.9},
        "input_edges": [128, 4000], "output_edges": [64, 4000], "max_rate": max_rate or [[1.0, 0.5], [0.5, 0.1]],
        "provenance": {"measured_by": "test", "measured_at": "2026-11-30", "command": "test"},
        "engine_model": {"limits": limits.model_dump(), "step": step.model_dump(), "mean_abs_rel_error": 0.0,
                         "max_abs_rel_error": 0.0}}))
    return str(path)


def _config(pools: list[dict], *, controller: dict | None = None, expected_rate: float = 0.01, slo=None):
    return parse_config({
        "model": {"id": "m", "gguf": "/nonexistent.gguf"},
        "pools": [{"engine": "llama_cpp", **p} for p in pools],
        "slo": slo or {"ttft_ms": 1000, "ttft_quantile": 0.9},
        # the start-up plan's mix: small requests (bucket 0, 0), as the tests send
        "planner": {"expected_rate": expected_rate, "headroom": 0.0, "distribution": [[1, 0], [0, 0]]},
        "controller": controller or {"enabled": False},
    })


def _constant(n: int, gap: float, n_in: int = 1, n_out: int = 1) -> Trace:
    return Trace(np.arange(n) * gap, np.full(n, n_in), np.full(n, n_out), "constant")


# -- traces --------------------------------------------------------------------------------------------
def test_diurnal_curve_has_its_mean_and_peak_to_trough():
    t, r = diurnal_curve(mean_rate=5.0, peak_to_trough=4.0, peak_hour=14.0, step_s=60.0)
    assert r.max() / r.min() == pytest.approx(4.0, rel=1e-3)
    assert np.mean(r[:-1]) == pytest.approx(5.0, rel=1e-3)
    assert t[np.argmax(r)] == pytest.approx(14 * 3600, abs=60)
    _, burst = diurnal_curve(mean_rate=5.0, bursts=2, burst_factor=3.0, burst_s=300, seed=1)
    surge = burst / r
    assert surge.max() == pytest.approx(3.0) and 8 <= (surge > 1).sum() <= 12  # 2 surges of 5 one-minute samples


def test_generated_trace_follows_its_rate_curve_and_is_reproducible(tmp_path):
    sizes = np.array([[10, 20], [300, 40]])
    a = from_sizes(sizes, np.array([0.0, 1000.0]), np.array([2.0, 2.0]), 1000.0, seed=3)
    b = from_sizes(sizes, np.array([0.0, 1000.0]), np.array([2.0, 2.0]), 1000.0, seed=3)
    assert np.array_equal(a.arrival, b.arrival) and len(a) == pytest.approx(2000, rel=0.1)
    assert set(map(tuple, a.sizes().tolist())) <= {(10, 20), (300, 40)}
    ramp = from_sizes(sizes, np.array([0.0, 1000.0]), np.array([0.0, 4.0]), 1000.0, seed=3)
    assert (ramp.arrival > 500).sum() > 2.5 * (ramp.arrival <= 500).sum()  # 3x the arrivals in the second half
    # Azure format round trip (what `rayhet trace diurnal` writes and `--trace` reads)
    back = from_azure(write_azure(a, tmp_path / "t.csv"))
    assert np.allclose(back.arrival, a.arrival - a.arrival[0], atol=1e-5)
    assert np.array_equal(back.input_tokens, a.input_tokens)


def test_reshape_speedup_and_rate_scale():
    t = _constant(1000, 1.0)
    fast = reshape(t, speedup=10)
    assert fast.duration_s == pytest.approx(99.9) and len(fast) == 1000
    double = reshape(t, rate_scale=2.0)
    assert len(double) == 2000 and double.duration_s <= t.duration_s + 1
    half = reshape(t, rate_scale=0.5, seed=1)
    assert 400 < len(half) < 600


def test_size_pairs_need_a_rate(tmp_path):
    from rayhet.errors import WorkloadError

    p = tmp_path / "pairs.csv"
    p.write_text("10,20\n30,40\n")
    with pytest.raises(WorkloadError, match="--rate"):
        load_trace(p)
    tr = load_trace(p, rate=5.0, duration_s=100.0)
    assert len(tr) == pytest.approx(500, rel=0.2)


# -- the fleet -----------------------------------------------------------------------------------------
def test_one_static_replica_costs_exactly_its_time(tmp_path):
    """One replica for the whole run, requests of one 10 ms step each, one per second: each ends 10 ms after it
    arrives, and the run costs the price times the time to the last end."""
    from rayhet.sim.build import fleet_for
    from rayhet.sim.report import summarize

    prof = _profile(tmp_path / "p.json", step=StepModel(c_step=0.01, c_prefill=0, c_decode=0, c_kv_read=0, c_attn=0),
                    slots=4)
    cfg = _config([{"name": "cpu", "profile": prof, "min_replicas": 1, "max_replicas": 1,
                    "engine_settings": {"n_slots": 4, "n_ctx": 4096}}])
    res = fleet_for(cfg).run(_constant(100, 1.0))
    assert all(r.outcome == "ok" for r in res.requests)
    assert [r.end - r.arrival for r in res.requests] == pytest.approx([0.01] * 100)
    assert res.duration_s == pytest.approx(99.01)
    assert res.cost() == pytest.approx(99.01 / 3600 * PRICE)
    s = summarize(res, cfg.slo, window_s=10)
    assert s["total"]["slo_attainment"] == 1.0 and s["total"]["requests_per_pool"] == {"cpu": 100}
    assert len(s["windows"]) == 10 and s["windows"][0]["replicas"] == {"cpu": pytest.approx(1.0)}


def test_serving_overhead_delays_each_request_and_slows_each_decoded_token(tmp_path):
    """A pool's serving_overhead: each request reaches the engine request_s later, and each decode step costs
    per_token_s more per sequence. Alone on the replica, TTFT and TPOT move by exactly those."""
    from rayhet.sim.build import fleet_for

    step = StepModel(c_step=0.01, c_prefill=0.001, c_decode=0.002, c_kv_read=0, c_attn=0)
    prof = _profile(tmp_path / "p.json", step=step, slots=4)
    pool = {"name": "cpu", "profile": prof, "min_replicas": 1, "max_replicas": 1,
            "engine_settings": {"n_slots": 4, "n_ctx": 4096}}
    plain = fleet_for(_config([pool])).run(_constant(5, 10.0, n_in=100, n_out=20))
    over = fleet_for(_config([{**pool, "serving_overhead": {"request_s": 0.05, "per_token_s": 0.003}}])) \
        .run(_constant(5, 10.0, n_in=100, n_out=20))
    for a, b in zip(plain.requests, over.requests):
        assert b.first_token - b.arrival == pytest.approx(a.first_token - a.arrival + 0.05)
        assert (b.end - b.first_token) / 19 == pytest.approx((a.end - a.first_token) / 19 + 0.003)


def test_fit_overhead_recovers_the_stack_delay_and_the_host_speed():
    """Lone requests timed as the model says on a host 1.3x slower, plus a fixed stack delay (and one outlier):
    the fit gives both back; a faster host gives a scale below 1, never a negative delay."""
    from rayhet.sim.overhead import LoneRequest, fit_overhead, model_times

    step = StepModel(c_step=0.008, c_prefill=0.0004, c_decode=0.001, c_kv_read=1e-6, c_attn=0.0001)
    limits = EngineLimits(batch_slots=4, step_tokens=512, kv_tokens=8192, max_context=2048)
    sizes = [(30, 20), (200, 50), (700, 100), (1500, 40), (64, 8)]
    lone = []
    for i, (n_in, n_out) in enumerate(sizes):
        ttft, tpot = model_times(step, limits, n_in, n_out)
        assert ttft > 0 and tpot > 0
        lone.append(LoneRequest("cpu", n_in, n_out, 1.3 * ttft + 0.057 + (2.0 if i == 0 else 0.0), 1.3 * tpot))
    request_s, step_scale, prefill_scale = fit_overhead(lone, step, limits)
    assert request_s == pytest.approx(0.057) and step_scale == pytest.approx(1.3)
    assert prefill_scale == pytest.approx(1.3)
    faster = [LoneRequest("cpu", n, m, *[0.5 * x for x in model_times(step, limits, n, m)]) for n, m in sizes]
    assert fit_overhead(faster, step, limits) == (0.0, pytest.approx(0.5), pytest.approx(0.5))
    with pytest.raises(ValueError, match="no lone requests"):
        fit_overhead([], step, limits)


def test_fit_overhead_tells_a_hosts_prompt_speed_from_its_decode_speed():
    """A host that decodes at 0.7x the model but runs prompts at 0.6x (wider vector units), plus a 40 ms stack
    delay and one outlier: the fit gives all three back, and the deployed model built from them times the
    lone requests as measured; with one prompt size there is nothing to tell them apart by."""
    from rayhet.sim.overhead import LoneRequest, fit_overhead, model_times, with_overhead

    step = StepModel(c_step=0.008, c_prefill=0.0004, c_decode=0.001, c_kv_read=1e-6, c_attn=0.0001)
    limits = EngineLimits(batch_slots=4, step_tokens=512, kv_tokens=8192, max_context=2048)
    host = with_overhead(step, step_scale=0.7, prefill_scale=0.6)
    assert host.c_prefill == pytest.approx(0.6 * step.c_prefill) and host.c_decode == pytest.approx(0.7 * step.c_decode)
    sizes = [(30, 20), (200, 50), (700, 100), (1500, 40), (64, 8), (400, 30)]
    lone = []
    for i, (n_in, n_out) in enumerate(sizes):
        ttft, tpot = model_times(host, limits, n_in, n_out)
        lone.append(LoneRequest("cpu", n_in, n_out, ttft + 0.04 + (1.5 if i == 2 else 0.0), tpot))
    fit = fit_overhead(lone, step, limits)
    assert fit.step_scale == pytest.approx(0.7) and fit.prefill_scale == pytest.approx(0.6, rel=0.01)
    assert fit.request_s == pytest.approx(0.04, abs=0.002)
    same = [LoneRequest("cpu", 200, 40, *model_times(host, limits, 200, 40))] * 3
    assert fit_overhead(same, step, limits).prefill_scale == pytest.approx(0.7)


def test_step_scale_slows_every_step_of_the_pool(tmp_path):
    """serving_overhead.step_scale: a request alone on the replica takes exactly that times as long, first
    token and every token after it."""
    from rayhet.sim.build import fleet_for

    step = StepModel(c_step=0.01, c_prefill=0.001, c_decode=0.002, c_kv_read=1e-6, c_attn=0.01)
    prof = _profile(tmp_path / "p.json", step=step, slots=4)
    pool = {"name": "cpu", "profile": prof, "min_replicas": 1, "max_replicas": 1,
            "engine_settings": {"n_slots": 4, "n_ctx": 4096}}
    plain = fleet_for(_config([pool])).run(_constant(5, 10.0, n_in=300, n_out=20))
    slow = fleet_for(_config([{**pool, "serving_overhead": {"step_scale": 1.3}}])) \
        .run(_constant(5, 10.0, n_in=300, n_out=20))
    for a, b in zip(plain.requests, slow.requests):
        assert b.first_token - b.arrival == pytest.approx(1.3 * (a.first_token - a.arrival))
        assert b.end - b.first_token == pytest.approx(1.3 * (a.end - a.first_token))


@pytest.mark.parametrize("queue_at", ["engine", "caller"])
def test_one_slot_fleet_is_md1(tmp_path, queue_at):
    """One replica, one slot, a fixed 50 ms per request, Poisson arrivals at rho = 0.5: the mean wait is M/D/1's
    rho*D / (2 (1 - rho)) = 25 ms — whether the queue is in the engine or at Serve's caller side."""
    from rayhet.sim.build import fleet_for

    d, lam = 0.05, 10.0
    prof = _profile(tmp_path / "p.json", step=StepModel(c_step=d, c_prefill=0, c_decode=0, c_kv_read=0, c_attn=0),
                    slots=1)
    per_replica = 100_000 if queue_at == "engine" else 0
    cfg = _config([{"name": "cpu", "profile": prof, "min_replicas": 1, "max_replicas": 1,
                    "queue_per_replica": per_replica, "max_queued_requests": -1,
                    "engine_settings": {"n_slots": 1, "n_ctx": 4096}}])
    t = np.cumsum(np.random.default_rng(0).exponential(1 / lam, 20_000))
    fleet = fleet_for(cfg, sweep_s=0.001)
    res = fleet.run(Trace(t, np.ones(len(t)), np.ones(len(t))))
    wait = np.mean([r.first_token - r.arrival - d for r in res.requests])
    rho = lam * d
    assert wait == pytest.approx(rho * d / (2 * (1 - rho)), rel=0.08 if queue_at == "engine" else 0.12)


def test_a_busy_neighbour_on_the_host_slows_a_replica_only_while_it_is_busy(tmp_path):
    """host_contention: two one-slot pools on one host, slowdown 0.5; `a` serves short outputs and `b` long ones
    (their contexts), one request each at once. Each step takes 1.5x while both hold a request, 1x after the
    neighbour is done; a request alone, or pools without host_contention, run at the model's speed."""
    from rayhet.errors import ConfigError
    from rayhet.sim.build import fleet_for
    from rayhet.sim.fleet import HOST_TICK_S

    step = StepModel(c_step=0.1, c_prefill=0, c_decode=0, c_kv_read=0, c_attn=0)
    # a's context holds the short bucket only (128 + 64 tokens), b's the long one too (128 + 4000)
    pools = [{"name": n, "engine": "llama_cpp", "min_replicas": 1, "max_replicas": 1,
              "profile": _profile(tmp_path / f"{n}.json", step=step, slots=1, ctx=ctx, name=n, price=price),
              "engine_settings": {"n_slots": 1, "n_ctx": ctx}}
             for n, ctx, price in (("a", 256, 0.1), ("b", 8192, 0.2))]
    shared = [{**p, "host_contention": {"host": "node-1", "slowdown": 0.5}} for p in pools]

    def run(ps, trace):
        cfg = parse_config({"model": {"id": "m", "gguf": "/nonexistent.gguf"}, "pools": ps,
                            "slo": {"ttft_ms": 1000, "ttft_quantile": 0.9},  # the profiles' own: their grids as they are
                            "routing": {"predictor": "max_tokens"},
                            "planner": {"expected_rate": 0.0001, "distribution": [[0.5, 0.5], [0, 0]]},
                            "controller": {"enabled": False},
                            "server": {"ingress_capacity_rps": None, "proxy_capacity_rps": None}})  # not the stack
        return fleet_for(cfg).run(trace).requests

    pair = Trace(np.zeros(2), np.ones(2), np.array([100, 6]))  # output buckets: (64, 4000] -> b, <= 64 -> a
    long_, short = run(shared, pair)
    assert (long_.pool, short.pool) == ("b", "a")
    assert short.end == pytest.approx(6 * 0.15)  # slowed throughout: b is busy all along
    # slowed while a is busy, then at the model's speed, seen within a host tick (and the step then under way)
    assert 6 * 0.15 + 94 * 0.1 <= long_.end <= 6 * 0.15 + 94 * 0.1 + HOST_TICK_S + 0.05
    assert [r.end for r in run(pools, pair)] == pytest.approx([10.0, 0.6])
    assert [r.end for r in run(shared, Trace(np.zeros(1), np.ones(1), np.full(1, 100)))] == pytest.approx([10.0])
    with pytest.raises(ConfigError, match="host_contention"):
        _config([{**pools[0], "host_contention": {"host": "node-1", "slowdown": -1}}])


def test_host_share_is_processor_sharing_of_the_cores():
    from rayhet.sim.host import host_share

    assert host_share(2, 1, 0, 0) == 1.0 and host_share(2, 2, 0, 0) == 1.0  # not oversubscribed
    assert host_share(1, 2, 0, 0) == pytest.approx(2.0)  # two busy threads on one core: each half as fast
    # with the stack's work per token: the demand at the slowdown it causes is s times the cores
    cpus, engines, rate, c = 2.0, 2.0, 60.0, 0.01
    s = host_share(cpus, engines, rate, c)
    assert s > 1 and engines + c * rate / s == pytest.approx(s * cpus)
    assert host_share(16, 2, 60, 0.01) == 1.0  # the same stack on a host with cores to spare slows nothing
    with pytest.raises(ValueError):
        host_share(0, 1, 0, 0)


def test_a_host_with_few_cores_slows_its_engines_by_their_share(tmp_path):
    """host_contention.cpus: two one-thread pools on a one-core host each run at half speed while both compute,
    at full speed alone; the stack's CPU per streamed token slows even a lone request on it, by the share the
    closed form gives; pools of one host that disagree on its cores are a config error naming them."""
    from rayhet.errors import ConfigError
    from rayhet.sim.build import fleet_for
    from rayhet.sim.fleet import HOST_TICK_S
    from rayhet.sim.host import host_share

    step = StepModel(c_step=0.1, c_prefill=0, c_decode=0, c_kv_read=0, c_attn=0)
    pools = [{"name": n, "engine": "llama_cpp", "min_replicas": 1, "max_replicas": 1,
              "profile": _profile(tmp_path / f"{n}.json", step=step, slots=1, ctx=ctx, name=n, price=price),
              "engine_settings": {"n_slots": 1, "n_ctx": ctx, "n_threads": 1}}
             for n, ctx, price in (("a", 256, 0.1), ("b", 8192, 0.2))]

    def run(host, trace):
        ps = [{**p, "host_contention": {"host": "vm", **host}} for p in pools]
        cfg = parse_config({"model": {"id": "m", "gguf": "/nonexistent.gguf"}, "pools": ps,
                            "slo": {"ttft_ms": 1000, "ttft_quantile": 0.9}, "routing": {"predictor": "max_tokens"},
                            "planner": {"expected_rate": 0.0001, "distribution": [[0.5, 0.5], [0, 0]]},
                            "controller": {"enabled": False},
                            "server": {"ingress_capacity_rps": None, "proxy_capacity_rps": None}})
        return fleet_for(cfg).run(trace).requests

    pair = Trace(np.zeros(2), np.ones(2), np.array([100, 6]))
    long_, short = run({"cpus": 1}, pair)
    assert short.end == pytest.approx(6 * 0.2)  # both compute throughout: half speed
    assert 6 * 0.2 + 94 * 0.1 - 1e-9 <= long_.end <= 6 * 0.2 + 94 * 0.1 + HOST_TICK_S + 0.1
    assert [r.end for r in run({"cpus": 2}, pair)] == pytest.approx([10.0, 0.6])  # a core each
    # alone, 10 tokens/s streamed at 50 ms of the stack's CPU each: slowed from its second step on
    s = host_share(1, 1, 10, 0.05)
    (alone,) = run({"cpus": 1, "stack_cpu_ms_per_token": 50}, Trace(np.zeros(1), np.ones(1), np.full(1, 100)))
    assert alone.end == pytest.approx(0.1 + 99 * 0.1 * s, rel=0.02)
    with pytest.raises(ConfigError, match="host 'vm'"):
        parse_config({"model": {"id": "m", "gguf": "/x.gguf"}, "pools": [
            {**pools[0], "host_contention": {"host": "vm", "cpus": 2}},
            {**pools[1], "host_contention": {"host": "vm", "cpus": 4}}]})


def test_backpressure_spills_then_refuses(tmp_path):
    """A one-slot pool with a caller queue of 2: a burst of 10 fills slot + queue, the rest spill to the second
    pool (its own slot + queue), and what neither takes is refused."""
    from rayhet.sim.build import fleet_for

    step = StepModel(c_step=0.5, c_prefill=0, c_decode=0, c_kv_read=0, c_attn=0)
    a = _profile(tmp_path / "a.json", step=step, slots=1, price=0.1, name="a")
    b = _profile(tmp_path / "b.json", step=step, slots=1, price=0.2, name="b")
    pools = [{"name": n, "profile": p, "min_replicas": 1, "max_replicas": 1, "queue_per_replica": 0,
              "max_queued_requests": 2, "engine_settings": {"n_slots": 1, "n_ctx": 4096}} for n, p in (("a", a), ("b", b))]
    res = fleet_for(_config(pools, slo={"tpot_ms": 1000})).run(Trace(np.zeros(10), np.ones(10), np.ones(10)))
    outcome = [r.outcome for r in res.requests]
    assert outcome.count("ok") == 6 and outcome.count("refused") == 4
    assert sum(r.spilled for r in res.requests) == 3


@pytest.mark.parametrize("queue_at", ["serve", "engine"])
def test_a_request_without_its_first_token_by_max_wait_is_refused_and_cancelled(tmp_path, queue_at):
    """server.max_wait_s as the ingress applies it: a burst of 5 on one slot of 1 s a request, max_wait 2.5 s.
    The third starts at 2 s (its first token at 3 s, in the step under way at the deadline: it runs on); the
    last two, still queued at Serve's caller side or in the engine, are refused at 2.5 s and cancelled, so they
    count for no pool; without the limit all five are served."""
    from rayhet.sim.build import fleet_for

    step = StepModel(c_step=1.0, c_prefill=0, c_decode=0, c_kv_read=0, c_attn=0)
    prof = _profile(tmp_path / "p.json", step=step, slots=1)
    pool = {"name": "cpu", "profile": prof, "min_replicas": 1, "max_replicas": 1,
            "queue_per_replica": 100 if queue_at == "engine" else 0, "max_queued_requests": -1,
            "engine_settings": {"n_slots": 1, "n_ctx": 4096}}
    burst = Trace(np.zeros(5), np.ones(5), np.ones(5))

    def run(max_wait):
        cfg = _config([pool], slo={"tpot_ms": 1000})
        server = cfg.server.model_copy(update={"max_wait_s": max_wait, "ingress_capacity_rps": None,
                                               "proxy_capacity_rps": None})  # not the stack: the wait alone
        cfg = cfg.model_copy(update={"server": server})
        return fleet_for(cfg).run(burst)

    res = run(2.5)
    assert [r.outcome for r in res.requests] == ["ok"] * 3 + ["refused"] * 2
    assert [r.end for r in res.requests] == pytest.approx([1.0, 2.0, 3.0, 2.5, 2.5])
    assert all(r.waited_out for r in res.requests[3:])
    from rayhet.sim.report import summarize

    total = summarize(res, None, name="x")["total"]
    assert total["requests_per_pool"] == {"cpu": 3} and total["refused"] == 2
    assert [r.outcome for r in run(30.0).requests] == ["ok"] * 5


def test_the_simulator_runs_the_production_router_and_controller(tmp_path, monkeypatch):
    """The dispatcher is the ingress's own class, its router rayhet.routing.Router, and a controlled run goes
    through rayhet.control's decisions: patching them changes what the simulator does."""
    import rayhet.control as control
    import rayhet.routing as routing
    import rayhet.serve.ingress as ingress
    from rayhet.sim import fleet as fleet_mod
    from rayhet.sim.build import fleet_for

    assert fleet_mod.Dispatcher is ingress.Dispatcher
    prof = _profile(tmp_path / "p.json", step=StepModel(c_step=0.01, c_prefill=0, c_decode=0, c_kv_read=0, c_attn=0),
                    slots=4)
    cfg = _config([{"name": "cpu", "profile": prof, "min_replicas": 1, "max_replicas": 3,
                    "engine_settings": {"n_slots": 4, "n_ctx": 4096}}],
                  controller={"period_s": 5, "min_plan_lifetime_s": 0, "scale_down_delay_s": 0})
    calls = {"decide": 0, "replan": 0}
    real_decide, real_replan = routing.Router.decide, control.decide_replan

    def decide(self, *a, **k):
        calls["decide"] += 1
        return real_decide(self, *a, **k)

    def replan(*a, **k):
        calls["replan"] += 1
        return real_replan(*a, **k)

    monkeypatch.setattr(routing.Router, "decide", decide)
    monkeypatch.setattr(control, "decide_replan", replan)
    fleet = fleet_for(cfg)
    assert type(fleet.dispatch.router) is routing.Router
    fleet.run(_constant(60, 0.5))
    assert calls["decide"] == 60 and calls["replan"] >= 5
    # a router that sends nothing anywhere: every request is rejected
    monkeypatch.setattr(routing.Router, "decide", lambda self, n, m, now=None: routing.Route(n, m, None, False, [], "x"))
    res = fleet_for(cfg).run(_constant(10, 0.5))
    assert {r.outcome for r in res.requests} == {"rejected"}


def test_controller_scales_up_after_the_startup_delay_and_pays_for_starting(tmp_path):
    """A step from 0.2 to 4 req/s on a pool whose replica serves about 1 req/s under the SLO: the controller
    asks for more replicas, each serves only startup_s after it was asked for, and the starting time is paid."""
    from rayhet.sim.build import fleet_for

    step = StepModel(c_step=0.02, c_prefill=0, c_decode=0.01, c_kv_read=0, c_attn=0)
    prof = _profile(tmp_path / "p.json", step=step, slots=4, max_rate=[[1.0, 1.0], [1.0, 1.0]])
    cfg = _config([{"name": "cpu", "profile": prof, "min_replicas": 1, "max_replicas": 8, "startup_s": 30,
                    "engine_settings": {"n_slots": 4, "n_ctx": 4096}}], expected_rate=0.2,
                  controller={"period_s": 5, "min_plan_lifetime_s": 0, "scale_down_delay_s": 60})
    low = np.arange(0, 300, 5.0)
    high = 300 + np.arange(0, 600, 0.25)
    t = np.r_[low, high]
    res = fleet_for(cfg).run(Trace(t, np.full(len(t), 50), np.full(len(t), 30)))
    ups = res.scale_ups
    assert ups and all(ready - at == pytest.approx(30) for at, _, _, ready in ups)
    assert min(at for at, *_ in ups) < 300 + 5 + 1 + 1e-6  # within one period (+ a policy poll) of the step
    assert max(n for _, _, n in res.targets) >= 4
    # the decision log says why: the period that first asked for more than one replica solved, on a (windowed) rate
    # above the start's, for a reason the controller gives for a rise in traffic, before the first start
    first_up = min(at for at, *_ in ups)
    rise = next(d for d in res.decisions if d["targets"].get("cpu", 0) > 1)
    assert rise["solved"] and rise["reason"] in {"overload", "queue", "drift"} and rise["rate"] > 0.3
    assert 300 <= rise["at"] <= first_up + 1e-6
    assert all(d["solved"] or d["targets"] for d in res.decisions)
    # every replica is paid from when it was asked for, starting included
    assert res.cost() == pytest.approx(sum(b - a for _, a, b in res.replica_spans) / 3600 * PRICE)


def test_control_periods_run_at_the_phase_given(tmp_path):
    """control_phase_s: the controller's periods fall at phase + k x period (a validation replays the real
    controller's); by default one period in. up_before_s: the traffic window counts from before the trace."""
    from rayhet.sim.build import fleet_for

    step = StepModel(c_step=0.02, c_prefill=0, c_decode=0.01, c_kv_read=0, c_attn=0)
    prof = _profile(tmp_path / "p.json", step=step, slots=4, max_rate=[[1.0, 1.0], [1.0, 1.0]])
    cfg = _config([{"name": "cpu", "profile": prof, "min_replicas": 1, "max_replicas": 8,
                    "engine_settings": {"n_slots": 4, "n_ctx": 4096}}], expected_rate=0.2,
                  controller={"period_s": 5, "min_plan_lifetime_s": 0, "scale_down_delay_s": 60})
    t = np.arange(0, 60, 0.5)
    trace = Trace(t, np.full(len(t), 50), np.full(len(t), 30))
    at = [d["at"] for d in fleet_for(cfg, control_phase_s=3.0).run(trace).decisions]
    assert at and all((a - 3.0) % 5 == pytest.approx(0) for a in at) and min(at) == pytest.approx(3.0)
    assert min(d["at"] for d in fleet_for(cfg).run(trace).decisions) == pytest.approx(5.0)
    # an app up for a while before the first arrival reads its first seconds against an older window, as live
    young = fleet_for(cfg).run(trace).decisions[0]
    old = fleet_for(cfg, up_before_s=30.0).run(trace).decisions[0]
    assert young["at"] == old["at"] == pytest.approx(5.0)
    assert young["rate"] == pytest.approx(2.0, rel=0.25) and old["rate"] < 0.6 * young["rate"]


def test_simulate_command_compare_writes_json_and_plots(tmp_path, capsys):
    from rayhet import cli

    step = StepModel(c_step=0.01, c_prefill=1e-5, c_decode=0.002, c_kv_read=0, c_attn=0)
    a = _profile(tmp_path / "a.json", step=step, slots=4, price=0.1, name="small", ctx=1024,
                 max_rate=[[2.0, 1.0], [1.0, 0.5]])
    b = _profile(tmp_path / "b.json", step=step, slots=4, price=0.3, name="big", max_rate=[[6.0, 3.0], [3.0, 1.5]])
    cfg = tmp_path / "fleet.yaml"
    cfg.write_text(json.dumps({
        "model": {"id": "m", "gguf": "/nonexistent.gguf"},
        "pools": [{"name": "small", "engine": "llama_cpp", "profile": a, "max_replicas": 4,
                   "engine_settings": {"n_ctx": 1024, "n_slots": 4}},
                  {"name": "big", "engine": "llama_cpp", "profile": b, "max_replicas": 4,
                   "engine_settings": {"n_ctx": 4096, "n_slots": 4}}],
        "slo": {"ttft_ms": 1000, "ttft_quantile": 0.9}, "controller": {"period_s": 10}}))
    sizes = tmp_path / "sizes.csv"
    sizes.write_text("50,30\n200,100\n900,60\n" * 10)
    out, plots = tmp_path / "r.json", tmp_path / "plots"
    assert cli.main(["simulate", "--config", str(cfg), "--trace", str(sizes), "--rate", "1.5", "--duration", "300",
                     "--compare", "--out", str(out), "--plot", str(plots), "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "rayhet online" in text and "static Mélange plan" in text and "offline bound" in text
    data = json.loads(out.read_text())
    online = data["policies"][0]["total"]
    assert online["requests"] == sum(online["requests_per_pool"].values()) + online["refused"] + online["rejected"]
    assert online["cost_usd"] > 0 and 0 <= online["slo_attainment"] <= 1
    assert data["offline_bound"]["cost_usd"] <= min(p["total"]["cost_usd"] for p in data["policies"]) + 1e-9
    assert (plots / "slo-attainment.png").stat().st_size > 0 and (plots / "latency-cdf.png").exists()


def test_trace_command_writes_a_diurnal_day(tmp_path, capsys):
    from rayhet import cli

    sizes = tmp_path / "sizes.csv"
    sizes.write_text("50,30\n200,100\n")
    out = tmp_path / "day.csv"
    assert cli.main(["trace", "diurnal", "--sizes", str(sizes), "--mean-rate", "0.5", "--duration", "7200",
                     "--out", str(out)]) == 0
    tr = from_azure(out)
    assert len(tr) > 1000 and tr.duration_s <= 7200 and math.isfinite(tr.duration_s)


def test_a_pool_whose_replicas_are_only_starting_is_skipped_as_the_ingress_skips_it(tmp_path):
    """The live ingress never sends a request to a pool with replicas only starting (rayhet.dispatch.available):
    it would wait out the start-up. The simulator orders each request's pools the same way: while 'a' starts,
    its requests go to 'b'; with spill-over off they are refused at once; once 'a' runs, it serves."""
    from rayhet.sim.build import fleet_for

    step = StepModel(c_step=0.01, c_prefill=0, c_decode=0, c_kv_read=0, c_attn=0)
    a = _profile(tmp_path / "a.json", step=step, slots=4, price=0.1, name="a")
    b = _profile(tmp_path / "b.json", step=step, slots=4, price=0.2, name="b")
    pools = [{"name": n, "profile": p, "min_replicas": 1, "max_replicas": 1, "startup_s": 30,
              "engine_settings": {"n_slots": 4, "n_ctx": 4096}} for n, p in (("a", a), ("b", b))]
    for spill, served_early in ((True, {"b"}), (False, set())):
        cfg = _config(pools).model_copy(update={"routing": _config(pools).routing.model_copy(update={"spill": spill})})
        fleet = fleet_for(cfg)
        fleet._set_target("a", 0, 0.0)
        fleet._set_target("a", 1, 0.0)  # a restarts: starting until t = 30
        res = fleet.run(_constant(60, 1.0))
        early = [r for r in res.requests if r.arrival < 30]
        late = [r for r in res.requests if r.arrival > 31]
        assert {r.pool for r in early if r.outcome == "ok"} == served_early
        assert all(r.outcome == "refused" and r.end == r.arrival for r in early) or spill
        assert {r.pool for r in late} == {"a"} and all(r.outcome == "ok" for r in late)
