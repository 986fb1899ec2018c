"""Simulator validation (issue 14): one trace replayed open-loop against the real app, and simulated.

1. `serve run` the config (Ray Serve on this machine, the controller on), wait until every pool is up.
   With `--calibrate N` (and `--contention`), first measure each pool's serving overhead and host speed (and
   its slowdown beside a busy neighbour) with `rayhet calibrate`'s client, then deploy the app afresh, so the
   controller does not start the trace with the calibration's requests in its traffic window.
2. Replay the trace: each request sent at its time (streamed /v1/completions, token-id prompt of its input
   length, `max_tokens` = its output length, `ignore_eos`), timing TTFT and TPOT as a client sees them and
   noting the pool that served it (`x-rayhet-pool`). Serve's replica counts are polled every 0.5 s.
3. Simulate the same trace and config (`rayhet.sim.build.fleet_for`).
4. Compare: SLO attainment, p90 TTFT, p90 TPOT, requests per pool, scale-ups (when each pool got a
   replica more, and when it was serving), cost; write JSON and a Markdown table.

    python benchmarks/sim_validation.py --config benchmarks/sim/validation.yaml \
        --trace benchmarks/sim/ramp-10min.csv --out benchmarks/results/sim-validation
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np


@dataclass
class Real:
    """A request of the real run, shaped like rayhet.sim.fleet.Request for rayhet.sim.report."""

    idx: int
    arrival: float
    input_tokens: int
    output_tokens: int
    pool: str | None = None
    first_token: float | None = None
    end: float | None = None
    outcome: str = "pending"
    spilled: bool = False
    status: int | None = None
    sent: float | None = None  # when the client sent it: an open-loop client that falls behind shows here


async def replay(url: str, model: str, trace, t0: float) -> list[Real]:
    import httpx

    ids = list(range(3, 259))
    reqs = [Real(k, float(trace.arrival[k]), int(trace.input_tokens[k]), int(trace.output_tokens[k]))
            for k in range(len(trace))]
    rng = np.random.default_rng(0)
    async with httpx.AsyncClient(timeout=httpx.Timeout(600, connect=10),
                                 limits=httpx.Limits(max_connections=None, max_keepalive_connections=64)) as client:
        async def one(r: Real) -> None:
            body = {"model": model, "prompt": [int(x) for x in rng.choice(ids, r.input_tokens)],
                    "max_tokens": r.output_tokens, "ignore_eos": True, "stream": True,
                    "stream_options": {"include_usage": True}}
            r.sent = time.monotonic() - t0
            try:
                async with client.stream("POST", url + "/v1/completions", json=body) as resp:
                    r.status = resp.status_code
                    r.pool = resp.headers.get("x-rayhet-pool")
                    if resp.status_code != 200:
                        await resp.aread()
                        # the simulator's words: refused = pushed back (429 full, 503 none running), rejected =
                        # no pool can take it (400: too long for every context)
                        r.outcome = {429: "refused", 503: "refused", 400: "rejected"}.get(resp.status_code, "failed")
                        r.end = time.monotonic() - t0
                        return
                    async for line in resp.aiter_lines():
                        if line.startswith("data:") and '"text"' in line and r.first_token is None:
                            r.first_token = time.monotonic() - t0
                r.end = time.monotonic() - t0
                r.outcome = "ok" if r.first_token is not None else "failed"
            except httpx.HTTPError:
                r.outcome, r.end = "failed", time.monotonic() - t0

        tasks = []
        for r in reqs:
            delay = t0 + r.arrival - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.ensure_future(one(r)))
        await asyncio.gather(*tasks)
    return reqs


def watch(stop: threading.Event, t0: float, out: list) -> None:
    """Serve's running and target replicas per deployment, every 0.5 s: (t, {deployment: running})."""
    from ray import serve

    while not stop.is_set():
        try:
            st = serve.status().applications["default"].deployments
            out.append((time.monotonic() - t0, {name: sum(n for s, n in d.replica_states.items() if s == "RUNNING")
                                                for name, d in st.items()}))
        except Exception:  # noqa: BLE001
            pass
        stop.wait(0.5)


def watch_controller(stop: threading.Event, t0_wall: float, out: list, every_s: float) -> None:
    """The real controller's periods that solved or moved a target (`rayhet status`'s last period), as
    rayhet.control.decision gives them, with "at" in seconds from the start of the trace."""
    import ray

    from rayhet.serve.controller import get_controller

    seen, targets = None, None
    while not stop.wait(every_s):
        try:
            last = ray.get(get_controller("default").status.remote(), timeout=5)["last_period"] or {}
        except Exception:  # noqa: BLE001 - starting, or between periods: no look this time
            continue
        if last.get("at") in (None, seen) or "targets" not in last:
            continue
        seen = last["at"]
        if last.get("solved") or last["targets"] != targets:
            out.append({k: last.get(k) for k in ("reason", "detail", "solved", "targets", "held", "bumped", "rate")}
                       | {"at": round(last["at"] - t0_wall, 1)})
        targets = last["targets"]


def control_phase(real_decisions: list, period: float) -> float | None:
    """When the real controller's periods fall on the trace's clock (phase + k x period), from the periods it was
    seen deciding; None when none was seen."""
    return (min(d["at"] for d in real_decisions) % period or period) if real_decisions else None


def decisions_table(real: list, simulated: list, since_s: float = 0.0) -> list[str]:
    """The periods that solved or moved a target, real and simulated, one table on the trace's time."""
    rows = [(d["at"], "real", d) for d in real if d["at"] >= since_s] + \
           [(d["at"], "simulated", d) for d in simulated if d["at"] >= since_s]
    md = ["| at (s) | run | reason | targets | rate (req/s) | detail |", "|---|---|---|---|---|---|"]
    for at, run, d in sorted(rows, key=lambda r: (r[0], r[1])):
        t = ", ".join(f"{p} {n}" for p, n in sorted(d["targets"].items()))
        md.append(f"| {at:.1f} | {run} | {d['reason']}{'' if d['solved'] else ' (no solve)'} | {t} | "
                  f"{d['rate']:.3g} | {d['detail']} |")
    return md


def sample(stop: threading.Event, t0: float, pools: list[str], timeline: list, out: list, every_s: float) -> None:
    """Every `every_s`: each serving pool's engine as it reports itself (running and waiting sequences, KV use,
    tokens/s; one replica) and the cores each process used since the last look (rayhet.procstat): in a
    run that falls behind, whether the engine is full or the stack around it is busy."""
    from rayhet.procstat import cpu_share, cpu_times

    from rayhet.testing.driver import call_deployment

    before, t_prev = cpu_times(), time.monotonic()
    while not stop.wait(every_s):
        now, look = time.monotonic(), cpu_times()
        serving = timeline[-1][1] if timeline else {}
        engines = {}
        for p in pools:
            if not serving.get(f"pool-{p}"):  # a call to a pool with no replica would wait for one
                continue
            try:
                e = call_deployment("default", f"pool-{p}", "stats", timeout_s=2.0)["engine"]
                engines[p] = {k: e.get(k) for k in ("running", "waiting", "kv_usage", "tokens_per_s")}
            except Exception:  # noqa: BLE001 - a replica busy or stopping: no sample this time
                pass
        out.append({"t": round(now - t0, 1), "engines": engines, "cores": cpu_share(before, look, now - t_prev)})
        before, t_prev = look, now


def load_table(samples: list, window_s: float) -> list[str]:
    """Per window: each pool engine's mean running / waiting sequences and tokens/s, and the busiest processes."""
    if not samples:
        return []
    rows, by = [], {}
    for s in samples:
        by.setdefault(int(s["t"] // window_s), []).append(s)
    md = ["", f"Where the time went (sampled every few seconds; engine figures as each pool reports them, cores "
              f"busy per process from /proc), per {window_s:g} s:", "",
          "| from (s) | engine: running / waiting, tokens/s | busiest processes (cores) |", "|---|---|---|"]
    for k in sorted(by):
        ss = by[k]
        eng = []
        for p in sorted({p for s in ss for p in s["engines"]}):
            e = [s["engines"][p] for s in ss if p in s["engines"]]
            mean = lambda key: sum((x.get(key) or 0) for x in e) / len(e)  # noqa: E731
            eng.append(f"{p}: {mean('running'):.0f} / {mean('waiting'):.0f}, {mean('tokens_per_s'):,.0f}")
        cores: dict[str, float] = {}
        for s in ss:
            for name, c in s["cores"].items():
                cores[name] = cores.get(name, 0.0) + c / len(ss)
        top = sorted(cores.items(), key=lambda kv: -kv[1])[:4]
        rows.append(f"| {k * window_s:g} | {'; '.join(eng) or '-'} | {', '.join(f'{n} {c:.2f}' for n, c in top)} |")
    return md + rows


def replica_spans(timeline, pools, end):
    """(pool, start, end) intervals of running replicas from the polled counts (a count k means replicas 1..k)."""
    spans, open_at = [], {p: [] for p in pools}
    for t, counts in timeline:
        for p in pools:
            n = counts.get("pool-" + p, 0)
            while len(open_at[p]) < n:
                open_at[p].append(t)
            while len(open_at[p]) > n:
                spans.append((p, open_at[p].pop(), t))
    for p in pools:
        for a in open_at[p]:
            spans.append((p, a, end))
    return spans


def scale_ups(timeline, pool):
    """Times at which the pool's running count went up."""
    ups, prev = [], None
    for t, counts in timeline:
        n = counts.get("pool-" + pool, 0)
        if prev is not None and n > prev:
            ups.append(t)
        prev = n
    return ups


def _lateness(real) -> dict | None:
    late = np.array([r.sent - r.arrival for r in real if r.sent is not None])
    if not len(late):
        return None
    return {"p50": round(float(np.percentile(late, 50)), 4), "p99": round(float(np.percentile(late, 99)), 4),
            "max": round(float(late.max()), 4)}


def _row(r) -> list:
    ttft = None if r.first_token is None else round(r.first_token - r.arrival, 4)
    return [round(r.arrival, 3), r.input_tokens, r.output_tokens, r.pool, ttft,
            None if r.end is None else round(r.end, 3), r.outcome, getattr(r, "status", None)]


def compare(real_sum, sim_sum, pools) -> list[tuple]:
    """(metric, real, simulated, error, within the issue's target) for the validation's table."""
    rows = []

    def p90(s, key):
        v = s["total"][key]
        return None if v is None else v["p90"]

    def row(what, r, s, tol=None, kind="rel"):
        if r is None or s is None:
            rows.append((what, r, s, None, None))
            return
        err = (s - r) / r if kind == "rel" and r else (s - r)
        ok = None if tol is None else abs(err) <= tol
        rows.append((what, r, s, err, ok))

    rt, st = real_sum["total"], sim_sum["total"]
    row("SLO attainment (points)", 100 * rt["slo_attainment"], 100 * st["slo_attainment"], 3.0, "abs")
    row("p90 TTFT (s)", p90(real_sum, "ttft_s"), p90(sim_sum, "ttft_s"), 0.25)
    row("p90 TPOT (s)", p90(real_sum, "tpot_s"), p90(sim_sum, "tpot_s"), 0.25)
    for p in pools:
        row(f"requests on {p}", rt["requests_per_pool"].get(p, 0), st["requests_per_pool"].get(p, 0), 0.10)
    row("refused + failed", rt["refused"] + rt["failed"], st["refused"] + st["failed"])
    row("cost ($)", rt["cost_usd"], st["cost_usd"])
    return rows


def table(rows) -> list[str]:
    md = ["| metric | real | simulated | error | target met |", "|---|---|---|---|---|"]
    for w, r, s, e, ok in rows:
        fmt = lambda x: "-" if x is None else (f"{x:.3g}" if isinstance(x, float) else str(x))  # noqa: E731
        err = "-" if e is None else (f"{e:+.1f}" if "points" in w else f"{100 * e:+.0f}%")
        md.append(f"| {w} | {fmt(r)} | {fmt(s)} | {err} | {'-' if ok is None else 'yes' if ok else 'NO'} |")
    return md


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", required=True)
    ap.add_argument("--trace", required=True)
    ap.add_argument("--out", required=True, help="path prefix: writes PREFIX.json and PREFIX.md")
    ap.add_argument("--window", type=float, default=60.0)
    ap.add_argument("--gguf", help="model file for the config's llama.cpp pools (default: the config's model.gguf "
                                   "when that file exists, else the 120M benchmark model)")
    ap.add_argument("--compare", action="store_true",
                    help="also simulate every `rayhet simulate --compare` policy on the trace (the always-on "
                         "single pool among them) and put their $ and SLO attainment beside the real run")
    ap.add_argument("--plot", help="directory: the real run's replicas, $/h and rate over time, and the simulated "
                                   "run's, SLO attainment over time, latency CDFs (rayhet.sim.report.plot)")
    ap.add_argument("--speedup", type=float, default=1.0,
                    help="compress the trace's time (rates x this; reshape): a shorter run of the same ramp")
    ap.add_argument("--calibrate", type=int, default=0, metavar="N",
                    help="before the trace, send N requests one at a time (sizes from the trace) and fit each pool's "
                         "serving overhead from them (rayhet calibrate); the simulation is then run with it as well, "
                         "and compared with the real run beside the one without")
    ap.add_argument("--contention", action="store_true",
                    help="with --calibrate: also send each pool's calibration requests again while the other pool is "
                         "kept busy, and fit each pool's host_contention slowdown (rayhet calibrate --contention); "
                         "the calibrated simulation then carries both")
    ap.add_argument("--sample-s", type=float, default=5.0,
                    help="every this many seconds, record each pool engine's own load and the cores each process "
                         "uses (0: off)")
    ap.add_argument("--rate-scale", type=float, default=1.0,
                    help="scale the trace's rate on its timeline (rayhet.sim.trace.reshape): the same ramp for a host "
                         "whose pools are this much faster (give the config a start-up rate to match)")
    ap.add_argument("--host-cpus", type=float, default=None,
                    help="the host's cores, shared by the pools and the serving stack (HostContention.cpus): also "
                         "simulate with the stack's share of them fitted from this run's process samples "
                         "(benchmarks/sim/host_fit.py: CPU accounting, not latencies) on top of the calibration")
    args = ap.parse_args(argv)

    import ray
    from ray import serve

    from rayhet.app import build
    from rayhet.config import load_config
    from rayhet.sim.build import fleet_for
    from rayhet.sim.deployment import FleetResult
    from rayhet.sim.report import summarize
    from rayhet.sim.trace import load_trace, reshape

    from rayhet.models import cached_gguf

    config = load_config(args.config)
    # the validation configs name a placeholder (rayhet-120m.gguf) that this fills in; a config naming a model
    # file that exists (the day's 1B model) keeps it
    have = config.model.gguf and Path(config.model.gguf).is_file()
    gguf = args.gguf or (config.model.gguf if have else str(cached_gguf("120m", dtype="f16")))
    config = config.model_copy(update={"model": config.model.model_copy(update={"gguf": gguf})})
    trace = load_trace(args.trace)
    if args.rate_scale != 1.0 or args.speedup != 1.0:
        trace = reshape(trace, speedup=args.speedup, rate_scale=args.rate_scale)
    pools = [p.name for p in config.pools]

    # -- the simulation first (seconds): its numbers do not depend on the real run
    t_sim = time.perf_counter()
    sim = fleet_for(config).run(trace)
    sim_s = time.perf_counter() - t_sim
    sim_sum = summarize(sim, config.slo, window_s=args.window, name="simulated")
    others, bound = [], None
    if args.compare:
        from rayhet.sim.policies import policies

        runs, bound = policies(config, trace, window_s=args.window)
        for pol in runs[1:]:  # the first is "rayhet online": the run above
            others.append({"policy": pol.name, "skipped": pol.note} if pol.make is None else
                          summarize(pol.make().run(trace), config.slo, window_s=args.window, name=pol.name)["total"])

    # -- the real run
    ray.init(include_dashboard=False, log_to_driver=False)
    def deploy() -> float:
        t_up = time.monotonic()
        serve.run(build({"config": config.model_dump(mode="json")}), blocking=False)
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            st = serve.status().applications.get("default")
            if st is not None and st.status == "RUNNING":
                break
            time.sleep(1)
        return time.monotonic() - t_up

    up_s = deploy()
    ready_at = time.monotonic()
    port = 8000
    calibration = None
    if args.calibrate:
        from rayhet.sim.calibrate import draw_sizes, fit_pools, lone_requests

        sizes = draw_sizes(trace, args.calibrate, seed=1)
        lone = asyncio.run(lone_requests(f"http://127.0.0.1:{port}", config.model.id, sizes, seed=1))
        fitted = fit_pools(config, lone, "benchmarks/sim_validation.py --calibrate")
        calibration = {"fitted": fitted, "requests": [vars(x) for x in lone], "contention": {}, "beside_busy": []}
        print(f"calibrated on {len(lone)} lone requests: {fitted}")
        if args.contention:
            from rayhet.sim.calibrate import beside_busy_neighbours, fit_contention

            busy = asyncio.run(beside_busy_neighbours(f"http://127.0.0.1:{port}", config.model.id, lone, seed=2))
            calibration["beside_busy"] = [vars(x) for x in busy]
            calibration["contention"] = fit_contention(config, busy, fitted, "validation-host",
                                                       "benchmarks/sim_validation.py --contention")
            print(f"contention from {len(busy)} requests beside a busy neighbour: {calibration['contention']}")
        if args.host_cpus:  # the stack's share of the host's cores, measured before the trace (rayhet calibrate)
            from rayhet.sim.calibrate import fit_host, host_phases

            phases = asyncio.run(host_phases(f"http://127.0.0.1:{port}", config.model.id, sizes, seed=3))
            calibration["host_phases"] = [vars(x) for x in phases]
            calibration["host"] = fit_host(phases, args.host_cpus, "validation-host",
                                           "benchmarks/sim_validation.py --host-cpus")
            print(f"host share from {len(phases)} stretches: {calibration['host']}")
        missing = [p.name for p in config.pools if p.name not in fitted]
        if missing:  # the router sent none of the drawn sizes there: that pool keeps its engine model alone
            print(f"not calibrated (no lone request landed there): {', '.join(missing)}; ask for more (--calibrate)")
        # A fresh app for the trace: the calibration's requests would otherwise be in the controller's traffic
        # window, and its first plans would differ from the simulation's, which starts with none (seen
        # 2026-12-01: the real run kept `large` up through the trough, the simulated one scaled it down).
        # Its controller is stopped too (it would end itself only 3 periods after the app), so the trace starts
        # from a new one, as a first deployment does.
        from rayhet.serve.controller import stop_controller

        serve.delete("default")
        stop_controller("default")
        time.sleep(5)  # Serve's policies of the deleted pools see no more calls (rayhet.serve.autoscaling)
        up_s = deploy()
        ready_at = time.monotonic()
    timeline: list = []
    stop = threading.Event()
    t0 = time.monotonic() + 2.0
    up_before = round(t0 - ready_at, 2)  # the app's traffic window is this much older than the trace (at least)
    watcher = threading.Thread(target=watch, args=(stop, t0, timeline), daemon=True)
    watcher.start()
    decisions: list = []
    controlled = threading.Thread(target=watch_controller, daemon=True,
                                  args=(stop, time.time() + (t0 - time.monotonic()), decisions,
                                        min(2.0, config.controller.period_s / 3)))
    controlled.start()
    samples: list = []
    sampler = threading.Thread(target=sample, args=(stop, t0, pools, timeline, samples, args.sample_s), daemon=True)
    if args.sample_s > 0:
        sampler.start()
    real = asyncio.run(replay(f"http://127.0.0.1:{port}", config.model.id, trace, t0))
    end = max([r.end for r in real if r.end is not None] + [trace.duration_s])
    time.sleep(1.0)
    stop.set()
    watcher.join()
    controlled.join()
    if sampler.is_alive():
        sampler.join()
    serve.shutdown()
    ray.shutdown()
    prices = {p: sim.prices[p] for p in pools}
    real_res = FleetResult(real, replica_spans(timeline, pools, end), prices, end, [], [], [])
    real_sum = summarize(real_res, config.slo, window_s=args.window, name="real")
    # the simulations again with the real controller's phase (its periods at phase + k x period on the trace's
    # clock): near a threshold, a plan depends on the window the period sees
    period = config.controller.period_s
    phase = control_phase(decisions, period)
    if phase is not None:
        sim = fleet_for(config, control_phase_s=phase, up_before_s=up_before).run(trace)
        sim_sum = summarize(sim, config.slo, window_s=args.window, name="simulated")
    uncalibrated = None
    if calibration and calibration["fitted"]:
        # the simulation again, each pool with the overhead measured before the trace; it becomes the one compared
        from rayhet.sim.calibrate import calibrated

        cal = calibrated(config, calibration["fitted"], calibration["contention"])
        uncalibrated = sim_sum
        sim = fleet_for(cal, control_phase_s=phase, up_before_s=up_before).run(trace)
        sim_sum = summarize(sim, config.slo, window_s=args.window, name="simulated (calibrated)")

    host = host_sum = host_run = None
    if args.host_cpus:
        # the host's cores shared with the stack: its share as measured before the trace (--calibrate), else as
        # the run's own CPU accounting gives it (not its latencies); the neighbour slowdown measured before the
        # trace stays out (on such a host the share is what it stood for)
        sys.path.insert(0, str(Path(__file__).resolve().parent / "sim"))
        from host_fit import fit as fit_samples

        from rayhet.sim.calibrate import calibrated

        host_run = fit_samples(samples) if len(samples) >= 3 else None
        host = (calibration or {}).get("host") or (host_run and {
            "host": "validation-host", "cpus": args.host_cpus, "base_cpus": host_run["base_cpus"],
            "stack_cpu_ms_per_token": host_run["stack_cpu_ms_per_token"], "source": "the run's process samples"})
        if host:
            spec = {k: host[k] for k in ("host", "cpus", "base_cpus", "stack_cpu_ms_per_token")}
            with_host = calibrated(config, calibration["fitted"] if calibration else {}, {p: spec for p in pools})
            host_sum = summarize(fleet_for(with_host, control_phase_s=phase, up_before_s=up_before).run(trace), config.slo, window_s=args.window,
                                 name="simulated (calibrated, host share)")
            print(f"host share {host}; from the run's samples: {host_run}")

    rows = compare(real_sum, sim_sum, pools)
    ups = {p: (scale_ups(timeline, p), [ready for _, q, _, ready in sim.scale_ups if q == p]) for p in pools}
    result = {
        "machine": f"{platform.node()} ({os.cpu_count()} CPUs), Python {platform.python_version()}",
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": "python benchmarks/sim_validation.py " + " ".join(sys.argv[1:]),
        "client_lateness_s": _lateness(real),
        # how many; "requests" below holds them one by one (the two once shared a key, and the count was lost)
        "rate_scale": args.rate_scale, "speedup": args.speedup, "trace_requests": len(trace),
        "app_up_s": round(up_s, 1), "simulation_s": round(sim_s, 2),
        "rows": [{"metric": w, "real": r, "simulated": s, "error": e, "within_target": ok} for w, r, s, e, ok in rows],
        "scale_ups": {p: {"real_serving_at_s": a, "simulated_serving_at_s": b} for p, (a, b) in ups.items()},
        # the controller's periods that solved or moved a target: why each run scaled when it did
        "decisions": {"real": decisions, "simulated": sim.decisions},
        "control_period_s": period, "control_phase_s": phase, "app_up_before_trace_s": up_before,
        "real": real_sum, "simulated": sim_sum, "other_policies_simulated": others, "offline_bound": bound,
        "calibration": calibration, "simulated_uncalibrated": uncalibrated,
        "host_share": host, "host_share_from_run_samples": host_run, "simulated_host_share": host_sum,
        # request by request, both runs on the trace's order: where the two disagree, not only how much
        "requests": {"columns": ["arrival_s", "input_tokens", "output_tokens", "pool", "ttft_s", "end_s", "outcome",
                                 "http_status"],
                     "real": [_row(r) for r in sorted(real, key=lambda r: r.idx)],
                     "simulated": [_row(r) for r in sorted(sim.requests, key=lambda r: r.idx)]},
        "timeline": timeline,
        "samples": samples,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    Path(str(out) + ".json").write_text(json.dumps(result, indent=1, default=float))
    md = [f"# Simulator validation: {args.trace} on {args.config}", "",
          f"Machine: {result['machine']}. Date: {result['date']}.", "", f"Command: `{result['command']}`", ""]
    if calibration:
        md += ["Serving overhead fitted before the trace, per pool (`rayhet calibrate`'s arithmetic, "
               f"{len(calibration['requests'])} lone requests): {calibration['fitted']}; the simulation below uses it.",
               ""]
        if calibration["contention"]:
            md += [f"Host contention fitted before the trace ({len(calibration['beside_busy'])} of those requests "
                   f"again beside a busy neighbour): {calibration['contention']}; the simulation below uses it.", ""]
    md += table(rows)
    if uncalibrated is not None:
        md += ["", "The same simulation without the calibration (the pools' engine models alone):", ""]
        md += table(compare(real_sum, uncalibrated, pools))
    if host_sum is not None:
        md += ["", f"The calibrated simulation on a host of {args.host_cpus:g} cores shared with the serving stack "
               f"(rayhet.sim.host; base {host['base_cpus']} cores, {host['stack_cpu_ms_per_token']} ms of CPU a "
               f"streamed token, from {host['source']}), without the neighbour slowdown:", ""]
        md += table(compare(real_sum, host_sum, pools))
        if host_run:
            md += ["", f"The run's own process samples give base {host_run['base_cpus']} cores and "
                   f"{host_run['stack_cpu_ms_per_token']} ms a token (benchmarks/sim/host_fit.py; residual p90 "
                   f"{host_run['residual_cores_p90']} cores)."]
    codes: dict = {}
    for r in real:
        if r.outcome != "ok":
            codes[f"{r.outcome} {r.status}"] = codes.get(f"{r.outcome} {r.status}", 0) + 1
    md += ["", f"Replay client lateness (sent - due, s): {result['client_lateness_s']}",
           "", f"Requests not served, by outcome and HTTP status (None: no response): {codes or 'none'}"]
    md += load_table(samples, args.window)
    md += ["", "Scale-ups (seconds from the start of the trace when a new replica was serving):", ""]
    for p, (a, b) in ups.items():
        md.append(f"- {p}: real {[round(x, 1) for x in a]}, simulated {[round(x, 1) for x in b]}")
    md += ["", "Controller periods that solved or moved a target, real and simulated (the real ones as its "
           "`rayhet status` showed them, looked at every few seconds):", ""]
    md += decisions_table(decisions, sim.decisions)
    if others:
        md += ["", "Other policies on the same trace (simulated):", "", "| policy | $ | SLO attainment |", "|---|---|---|"]
        md += [f"| {o['policy']} | skipped: {o['skipped']} | |" if "skipped" in o else
               f"| {o['policy']} | {o['cost_usd']:.4g} | {100 * o['slo_attainment']:.1f} % |" for o in others]
        if bound:
            md.append(f"| {bound['policy']} | {bound['cost_usd']:.4g} | - |")
    Path(str(out) + ".md").write_text("\n".join(md) + "\n")
    if args.plot:
        from rayhet.sim.report import plot

        for f in plot([real_sum, sim_sum], args.plot, [("real", real_res), ("simulated", sim)]):
            print(f"wrote {f}")
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
