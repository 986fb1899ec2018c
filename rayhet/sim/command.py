"""`rayhet simulate`: replay a trace through the real dispatcher, controller and planner, with replica models
timed by each pool's engine model, and report $ and SLO (per window and in total, per policy with --compare).

`rayhet trace diurnal`: write a reproducible 24-hour (or shorter) trace in Azure format from a size sample.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from rayhet.errors import RayhetError


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, help="the rayhet config (YAML/JSON) to simulate, as `serve run` would deploy it")
    p.add_argument("--trace", required=True, metavar="CSV", help="Azure-format trace, or size pairs with --rate/--rate-curve")
    p.add_argument("--rate", type=float, help="with size pairs: constant arrival rate (req/s); needs --duration")
    p.add_argument("--rate-curve", metavar="CSV", help="with size pairs: rate curve, rows time_s,req_per_s (linear between)")
    p.add_argument("--duration", type=float, metavar="S", help="seconds of arrivals (size pairs)")
    p.add_argument("--speedup", type=float, default=1.0, help="compress the trace's time by this factor (default 1)")
    p.add_argument("--rate-scale", type=float, default=1.0, help="scale its rate, same timeline (default 1)")
    p.add_argument("--max-tokens", default="exact", metavar="exact|N",
                   help="max_tokens each request sends: its own output length (exact, default) or at least N")
    p.add_argument("--window", type=float, default=60.0, metavar="S", help="reporting window (default 60 s)")
    p.add_argument("--compare", action="store_true", help="also run the comparison policies and print a table")
    p.add_argument("--out", metavar="JSON", help="write the results here")
    p.add_argument("--plot", metavar="DIR", help="write plots into this directory")
    p.add_argument("--seed", type=int, default=0, help="seed for generated arrivals and rate scaling")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from rayhet.config import load_config
    from rayhet.sim.policies import Policy, policies
    from rayhet.sim.report import plot, summarize, table
    from rayhet.sim.trace import load_trace, reshape

    config = load_config(args.config)
    trace = load_trace(args.trace, rate=args.rate, rate_curve=args.rate_curve, duration_s=args.duration,
                       seed=args.seed)
    trace = reshape(trace, speedup=args.speedup, rate_scale=args.rate_scale, seed=args.seed)
    if not len(trace):
        raise RayhetError(f"{args.trace}: no requests to simulate")
    if args.max_tokens != "exact":
        try:
            int(args.max_tokens)
        except ValueError:
            raise RayhetError(f"--max-tokens: 'exact' or a number, got {args.max_tokens!r}") from None
    max_tokens = args.max_tokens if args.max_tokens == "exact" else int(args.max_tokens)
    if args.compare:
        runs, bound = policies(config, trace, window_s=args.window)  # derives the pools' grids at once first
    else:
        from rayhet.capacity import derive_ahead
        from rayhet.sim.build import fleet_for

        derive_ahead([p.profile for p in config.pools if p.profile], config.slo)  # all pools' grids at once

        runs, bound = [Policy("rayhet online" if config.controller.enabled else "rayhet (controller off)",
                              lambda: fleet_for(config))], None
    print(f"trace: {len(trace):,} requests over {trace.duration_s / 3600:.2f} h ({trace.source}); "
          f"SLO: {_slo_text(config.slo)}", file=sys.stderr)
    from rayhet.app import warn_if_ingress_short

    warn_if_ingress_short(config, peak_rate(trace.arrival), "the trace's busiest minute")  # (simulated as such)
    summaries, results = [], []
    for pol in runs:
        if pol.make is None:
            print(f"{pol.name}: skipped ({pol.note})", file=sys.stderr)
            continue
        fleet = pol.make()
        fleet.max_tokens = max_tokens
        t0 = time.perf_counter()
        res = fleet.run(trace, progress=_bar(pol.name, len(trace), args.no_progress))
        s = summarize(res, config.slo, window_s=args.window, name=pol.name)
        s["total"]["wall_s"] = round(time.perf_counter() - t0, 2)
        summaries.append(s)
        results.append((pol.name, res))
    rows = [s["total"] for s in summaries] + ([bound] if bound else [])
    print(table([{**r, **({} if "slo_attainment" in r else {"slo_attainment": None})} for r in rows]))
    if bound and bound.get("windows_without_plan"):
        print(f"(offline bound: {bound['windows_without_plan']} windows had no feasible plan and count $0)")
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"command": "rayhet simulate " + " ".join(sys.argv[2:]) if sys.argv[1:2] == ["simulate"]
                                   else None, "config": str(args.config), "trace": trace.source,
                                   "requests": len(trace), "policies": summaries, "offline_bound": bound},
                                  indent=1, default=float))
        print(f"wrote {out}", file=sys.stderr)
    if args.plot:
        for f in plot(summaries, args.plot, results):
            print(f"wrote {f}", file=sys.stderr)
    return 0


def peak_rate(arrival, window_s: float = 60.0) -> float:
    """Requests per second in the busiest `window_s` (sliding) of sorted arrival times."""
    import numpy as np

    a = np.asarray(arrival, dtype=float)
    if not len(a):
        return 0.0
    ends = np.searchsorted(a, a + window_s, side="left")
    return float((ends - np.arange(len(a))).max()) / window_s


def _slo_text(slo) -> str:
    from rayhet.slo import describe

    return "none" if slo is None else describe(slo)


def _bar(name: str, total: int, off: bool):
    if off:
        return None
    from tqdm import tqdm

    bar = tqdm(total=total, unit="req", desc=f"simulate: {name}", dynamic_ncols=True, leave=False)

    def update(k: int) -> None:
        bar.update(k - bar.n)
        if k >= total:
            bar.close()

    return update


# -- `rayhet trace` ---------------------------------------------------------------------------------------
def add_trace_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="kind", metavar="diurnal")
    d = sub.add_parser("diurnal", help="a diurnal day (cosine between trough and peak, optional bursts)")
    d.add_argument("--sizes", required=True, metavar="CSV", help="request sizes: input,output pairs or an Azure trace")
    d.add_argument("--mean-rate", type=float, required=True, help="mean req/s over a whole day")
    d.add_argument("--peak-to-trough", type=float, default=4.0, help="peak rate / trough rate (default 4)")
    d.add_argument("--peak-hour", type=float, default=14.0, help="hour of the peak (default 14)")
    d.add_argument("--duration", type=float, default=86400.0, metavar="S", help="seconds (default a day)")
    d.add_argument("--bursts", type=int, default=0, help="short surges at random times (default 0)")
    d.add_argument("--burst-factor", type=float, default=3.0, help="rate multiplier during a surge (default 3)")
    d.add_argument("--burst-s", type=float, default=300.0, help="length of a surge (default 300 s)")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--out", required=True, metavar="CSV", help="Azure-format trace to write")


def run_trace(args: argparse.Namespace) -> int:
    from rayhet.sim.trace import diurnal_curve, from_sizes, write_azure
    from rayhet.workload import read_workload

    if args.kind != "diurnal":
        raise RayhetError("rayhet trace: say which trace to make (diurnal)")
    sizes = read_workload(args.sizes).samples
    times, rates = diurnal_curve(mean_rate=args.mean_rate, peak_to_trough=args.peak_to_trough,
                                 peak_hour=args.peak_hour, duration_s=args.duration, bursts=args.bursts,
                                 burst_factor=args.burst_factor, burst_s=args.burst_s, seed=args.seed)
    trace = from_sizes(sizes, times, rates, args.duration, seed=args.seed, source=args.sizes)
    write_azure(trace, args.out)
    print(f"wrote {args.out}: {len(trace):,} requests over {args.duration / 3600:.2f} h "
          f"(rate {rates.min():.2f}-{rates.max():.2f} req/s)")
    return 0
