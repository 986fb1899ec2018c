"""`rayhet calibrate --contention`: how much a pool slows while the pools beside it on its host are busy.

The fit is pure arithmetic over the engine model; the client is exercised against a small HTTP server that
stands in for an app of two pools (a test double: sizes decide the pool, as the router would, and one pool's
tokens come slower while the other holds a request)."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time

import pytest

from rayhet.perf import EngineLimits, StepModel

STEP = StepModel(c_step=0.008, c_prefill=0.0004, c_decode=0.001, c_kv_read=1e-6, c_attn=0.0001)
LIMITS = EngineLimits(batch_slots=4, step_tokens=512, kv_tokens=8192, max_context=2048)


def test_fit_slowdown_recovers_the_share_a_busy_neighbour_adds():
    """Requests timed as the model with the pool's overhead says (a host 1.3x slower than the profile's), their
    steps 1.25x as long again (one outlier):
    the fit gives 0.25 back; requests as fast as alone give 0; a faster host never a negative slowdown."""
    from rayhet.sim.overhead import LoneRequest, fit_slowdown, model_times, with_overhead

    request_s, step_scale = 0.05, 1.3
    model = with_overhead(STEP, step_scale=step_scale)
    sizes = [(30, 20), (200, 50), (700, 100), (1500, 40), (64, 8)]

    def timed(k: float, n_in: int, n_out: int, extra: float = 0.0) -> LoneRequest:
        ttft, tpot = model_times(model, LIMITS, n_in, n_out)
        return LoneRequest("small", n_in, n_out, request_s + k * ttft + extra, k * tpot)

    busy = [timed(1.25, *sz, extra=3.0 if i == 0 else 0.0) for i, sz in enumerate(sizes)]
    assert fit_slowdown(busy, STEP, LIMITS, request_s, step_scale=step_scale) == pytest.approx(0.25)
    assert fit_slowdown([timed(1.0, *sz) for sz in sizes], STEP, LIMITS, request_s, step_scale=step_scale) == pytest.approx(0.0)
    assert fit_slowdown([timed(0.8, *sz) for sz in sizes], STEP, LIMITS, request_s, step_scale=step_scale) == 0.0
    with pytest.raises(ValueError, match="busy neighbours"):
        fit_slowdown([], STEP, LIMITS, request_s, step_scale=step_scale)


def test_busy_share_counts_overlapping_spans_once():
    from rayhet.sim.calibrate import busy_share

    assert busy_share(0, 10, []) == 0
    assert busy_share(0, 10, [(-5, 2), (1, 4), (8, 20)]) == pytest.approx(0.6)
    assert busy_share(5, 5, [(0, 10)]) == 0


# --- a stand-in for a two-pool app: prompts under 100 tokens go to `small`, the rest to `large`
TOKEN_S = {"small": 0.004, "large": 0.006}
SLOWDOWN = 0.5  # `small` decodes this much slower while `large` holds a request


def _app(state: dict):
    from starlette.applications import Starlette
    from starlette.responses import StreamingResponse
    from starlette.routing import Route

    async def completions(request):
        body = await request.json()
        pool = "small" if len(body["prompt"]) < 100 else "large"

        async def stream():
            state["active"][pool] += 1
            try:
                for _ in range(body["max_tokens"]):
                    slow = pool == "small" and state["active"]["large"] > 0
                    await asyncio.sleep(TOKEN_S[pool] * (1 + SLOWDOWN if slow else 1))
                    yield "data: " + json.dumps({"choices": [{"text": "x"}]}) + "\n\n"
                yield "data: [DONE]\n\n"
            finally:
                state["active"][pool] -= 1

        return StreamingResponse(stream(), media_type="text/event-stream", headers={"x-rayhet-pool": pool})

    return Starlette(routes=[Route("/v1/completions", completions, methods=["POST"])])


@pytest.fixture
def two_pool_app():
    import uvicorn

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    state = {"active": {"small": 0, "large": 0}}
    server = uvicorn.Server(uvicorn.Config(_app(state), host="127.0.0.1", port=port, log_level="error"))
    t = threading.Thread(target=server.run, daemon=True)
    t.start()
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    t.join(timeout=10)


def test_beside_busy_neighbours_times_each_pool_while_the_other_is_busy(two_pool_app):
    """Lone requests land on both pools; sent again beside the other pool's load, `small` decodes 1.5x as slow
    and `large` (which its neighbour does not slow) as fast as alone; every measured request was served by
    its own pool with the neighbour busy throughout."""
    from rayhet.sim.calibrate import beside_busy_neighbours, lone_requests

    sizes = [(20, 40), (50, 40), (300, 60), (20, 40), (400, 60), (60, 40)]
    lone = asyncio.run(lone_requests(two_pool_app, "m", sizes))
    assert sorted({s.pool for s in lone}) == ["large", "small"] and len(lone) == len(sizes)
    busy = asyncio.run(beside_busy_neighbours(two_pool_app, "m", lone, streams=2))
    by_pool = {p: [s for s in busy if s.pool == p] for p in ("small", "large")}
    assert len(by_pool["small"]) >= 3 and len(by_pool["large"]) >= 1
    alone = {p: sorted(s.tpot_s for s in lone if s.pool == p)[len([s for s in lone if s.pool == p]) // 2]
             for p in ("small", "large")}
    small = sorted(s.tpot_s for s in by_pool["small"])[len(by_pool["small"]) // 2]
    large = sorted(s.tpot_s for s in by_pool["large"])[len(by_pool["large"]) // 2]
    # sleeps only lengthen on a busy host: the slow pool's ratio is at least its slowdown, the other's near 1
    assert small / alone["small"] > 1.3
    assert large / alone["large"] < 1.25


def test_rayhet_calibrate_contention_prints_each_pools_overhead_and_slowdown(two_pool_app, tmp_path):
    """`rayhet calibrate --contention HOST` end to end against the stand-in: both pools get a serving overhead,
    `small` (slowed by its busy neighbour) a slowdown near the stand-in's 0.5, `large` (not slowed) near 0; the
    JSON keeps every request."""
    import contextlib
    import io

    import numpy as np

    from rayhet.cli import main
    from rayhet.sim.trace import Trace, write_azure

    def profile(name: str) -> str:
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps({
            "schema_version": 2, "model": "m", "pool": name, "engine": "llama_cpp", "engine_version": "x",
            "hardware": {"vcpus": 1}, "price_per_hour": 0.05, "slo": {"ttft_ms": 1000, "ttft_quantile": 0.9},
            "input_edges": [100, 1000], "output_edges": [100], "max_rate": [[5.0], [1.0]],
            "provenance": {"measured_by": "test", "measured_at": "2026-12-01", "command": "test"},
            "engine_model": {"limits": LIMITS.model_dump(), "step": STEP.model_dump(), "mean_abs_rel_error": 0.0,
                             "max_abs_rel_error": 0.0}}))
        return str(path)

    cfg = tmp_path / "fleet.json"
    cfg.write_text(json.dumps({
        "model": {"id": "m", "gguf": "/nonexistent.gguf"},
        "pools": [{"name": p, "engine": "llama_cpp", "profile": profile(p)} for p in ("small", "large")],
        "slo": {"ttft_ms": 1000, "ttft_quantile": 0.9}}))
    sizes = [20, 50, 300, 40, 400, 60, 350, 30]
    trace = write_azure(Trace(np.arange(8.0), np.array(sizes), np.full(8, 40)), tmp_path / "sizes.csv")
    out = tmp_path / "calibration.json"
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = main(["calibrate", "--config", str(cfg), "--trace", str(trace), "--url", two_pool_app, "--requests", "8",
                   "--contention", "node-1", "--host-cpus", "2", "--host-phase-s", "1", "--out", str(out)])
    said = buf.getvalue()
    assert rc == 0, said
    res = json.loads(out.read_text())
    assert set(res["fitted"]) == {"small", "large"}, said
    assert all(f["step_scale"] > 0 and f["request_s"] >= 0 for f in res["fitted"].values())
    cont = res["contention"]
    assert {c["host"] for c in cont.values()} == {"node-1"}
    assert 0.25 < cont["small"]["slowdown"] < 0.9, said
    assert cont["large"]["slowdown"] < 0.2, said
    assert said.count("host_contention: {host: node-1, slowdown:") == 2
    # the host's share of its cores, measured beside (the stand-in runs in this process, which is left out)
    assert said.count(", cpus: 2, base_cpus: ") == 2 and "both count the same loss" in said, said
    assert res["host"]["cpus"] == 2 and len(res["host_phases"]) == 4
    assert {r["pool"] for r in res["beside_busy"]} == {"small", "large"}


# --- the stack's share of a host's cores (rayhet.sim.host, `rayhet calibrate --host-cpus`)
def test_fit_stack_share_recovers_base_and_cpu_per_token():
    from rayhet.sim.host import HostSample, fit_stack_share, stack_cores

    rates = [0.0, 20.0, 45.0, 90.0]
    samples = [HostSample(10.0, r, 0.3 + 0.002 * r + (0.01 if i % 2 else -0.01)) for i, r in enumerate(rates)]
    base, per_token, resid = fit_stack_share(samples)
    assert base == pytest.approx(0.3, abs=0.02) and per_token == pytest.approx(0.002, rel=0.1) and resid < 0.02
    with pytest.raises(ValueError, match="two token rates"):
        fit_stack_share([HostSample(10.0, 5.0, 0.4), HostSample(10.0, 5.0, 0.5)])
    assert stack_cores({"ray::ServeReplica:default:pool-small": 0.9, "ray::ProxyActor": 0.2, "raylet": 0.1}) == \
        pytest.approx((0.3, 0.9))


_BURNING_APP = r'''
import json, sys, time, asyncio
from starlette.applications import Starlette
from starlette.responses import StreamingResponse
from starlette.routing import Route
import uvicorn

BURN_S, GAP_S = float(sys.argv[2]), float(sys.argv[3])

async def completions(request):
    body = await request.json()
    async def stream():
        for _ in range(body["max_tokens"]):
            await asyncio.sleep(GAP_S)
            t = time.process_time()
            while time.process_time() - t < BURN_S:  # the stack's CPU for this token
                pass
            yield "data: " + json.dumps({"choices": [{"text": "x"}]}) + "\n\n"
        yield "data: [DONE]\n\n"
    return StreamingResponse(stream(), media_type="text/event-stream", headers={"x-rayhet-pool": "small"})

uvicorn.run(Starlette(routes=[Route("/v1/completions", completions, methods=["POST"])]), host="127.0.0.1",
            port=int(sys.argv[1]), log_level="error")
'''


def test_host_phases_read_the_stacks_cpu_per_streamed_token_from_proc(tmp_path):
    """A stand-in app in its own process spends 4 ms of CPU on each token it streams (and ~nothing idle): the
    host phases (0, 1, 2, 4 streams) see its cores grow with the token rate, and the fit gives about 4 ms a token
    (the HTTP stack's own work on top) and a small base."""
    import subprocess
    import sys

    from rayhet.sim.calibrate import fit_host, host_phases

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    script = tmp_path / "app.py"
    script.write_text(_BURNING_APP)
    proc = subprocess.Popen([sys.executable, str(script), str(port), "0.004", "0.02"])
    try:
        import httpx

        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                httpx.post(f"http://127.0.0.1:{port}/v1/completions", json={"max_tokens": 1}, timeout=2)
                break
            except httpx.HTTPError:
                time.sleep(0.2)
        phases = asyncio.run(host_phases(f"http://127.0.0.1:{port}", "m", [(10, 20), (10, 30)], phase_s=3.0,
                                         settle_s=0.5))
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    assert [round(p.tokens_per_s) > 0 for p in phases] == [False, True, True, True]
    assert phases[3].tokens_per_s > 1.5 * phases[1].tokens_per_s
    assert all(p.engine_cores == 0 for p in phases)  # no process titled as a pool replica
    host = fit_host(phases, 2.0, "local", "test")
    assert 3.0 < host["stack_cpu_ms_per_token"] < 8.0, phases
    assert host["base_cpus"] < 0.3 and host["cpus"] == 2.0, phases
