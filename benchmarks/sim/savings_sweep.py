"""Issue 16's open question, simulated: at what traffic does rayhet's mix cost less than the H200 always on?

The compressed days (benchmarks/gpu/day.sh) keep one H200 busy at the peak and at 1 % of it overnight; on this
model one 12-core llama.cpp replica serves ~0.085 req/s of the LMSYS mix, so no night of that day is cheap
enough for CPUs. This sweep asks the question the other way round: real-time 24-hour diurnal days (start-up
delays at their true scale) whose peak ranges from far below one CPU replica's capacity to a few req/s, with
0..N idle 12-core CPU replicas beside the H200, each day simulated by `rayhet simulate`'s own fleet (the real
planner and controller), against the H200 alone, static (what teams run today). SLO: the day's config's, or
--ttft-only (TTFT p90 <= 2 s with no allowance per input token, the SLO under which a CPU pool cannot serve a
quarter of these requests at any rate).

    python benchmarks/sim/savings_sweep.py --sizes lmsys-8k.csv --out benchmarks/results/savings-sweep.json \
        [--peaks 0.05 0.1 0.2 0.5 1 2 4] [--cpu-replicas 1 4 16] [--ttft-only] [--plot DIR]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from rayhet.config import load_config  # noqa: E402
from rayhet.sim.build import fleet_for  # noqa: E402
from rayhet.sim.policies import static_fleet  # noqa: E402
from rayhet.sim.report import summarize  # noqa: E402
from rayhet.sim.trace import DAY_S, diurnal_curve, from_sizes  # noqa: E402
from rayhet.slo import describe  # noqa: E402


def day(sizes: np.ndarray, peak: float, ratio: float, seed: int):
    mean = peak * (1 + 1 / ratio) / 2  # a cosine's mean is (peak + trough) / 2
    t, r = diurnal_curve(mean_rate=mean, peak_to_trough=ratio, seed=seed)
    return from_sizes(sizes, t, r, DAY_S, seed=seed, source=f"diurnal day, peak {peak} req/s")


def with_cpu_replicas(config, pool: str, n: int):
    pools = [p.model_copy(update={"max_replicas": n}) if p.name == pool else p for p in config.pools]
    return config.model_copy(update={"pools": pools})


def h200_alone(config, gpu: str, trace):
    """The H200 pool alone, static, planned for the day's busiest minute (one replica at these rates)."""
    from rayhet.sim.build import planner_options
    from rayhet.sim.policies import busiest_window, plan_for_sizes

    rate, busy = busiest_window(trace, 60.0)
    plan = plan_for_sizes(config, planner_options(config, pools={gpu}), busy.sizes(), rate, config.planner.headroom)
    return static_fleet(config, plan, {gpu})


def run_one(make, trace, slo) -> dict:
    t0 = time.perf_counter()
    res = make().run(trace)
    tot = summarize(res, slo, window_s=600.0)["total"]
    return {"cost_usd": round(tot["cost_usd"], 3), "slo_attainment": round(tot["slo_attainment"], 4),
            "requests": tot["requests"], "wall_s": round(time.perf_counter() - t0, 1),
            "replica_hours": {p: round(h, 2) for p, h in tot["replica_hours"].items()}}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default=str(ROOT / "benchmarks/sim/day-h200.yaml"))
    ap.add_argument("--sizes", required=True, help="input,output token pairs (the LMSYS sample, <= 8192 tokens)")
    ap.add_argument("--peaks", type=float, nargs="+", default=[0.05, 0.1, 0.2, 0.5, 1, 2, 4])
    ap.add_argument("--ratio", type=float, default=10.0, help="peak / trough of each day")
    ap.add_argument("--cpu-replicas", type=int, nargs="+", default=[1, 4, 16])
    ap.add_argument("--gpu-pool", default="h200")
    ap.add_argument("--cpu-pool", default="cpu16")
    ap.add_argument("--period-s", type=float, default=60.0, help="the controller's period (the config's: 10 s)")
    ap.add_argument("--ttft-only", action="store_true", help="TTFT p90 <= the config's, no per-token allowance")
    ap.add_argument("--ttft-quantile", type=float, help="the SLO's TTFT quantile instead of the config's (0.9)")
    ap.add_argument("--seed", type=int, default=16)
    ap.add_argument("--out", required=True)
    ap.add_argument("--plot", help="directory for the plot (named as --out, .png)")
    args = ap.parse_args(argv)

    config = load_config(args.config)
    config = config.model_copy(update={"controller": config.controller.model_copy(update={"period_s": args.period_s})})
    if args.ttft_only:
        config = config.model_copy(update={"slo": config.slo.model_copy(update={"ttft_ms_per_1k_input": 0.0})})
    if args.ttft_quantile:
        config = config.model_copy(update={"slo": config.slo.model_copy(update={"ttft_quantile": args.ttft_quantile})})
    sizes = np.loadtxt(args.sizes, delimiter=",", dtype=np.int64)
    rows = []
    for peak in args.peaks:
        trace = day(sizes, peak, args.ratio, args.seed)
        base = run_one(lambda: h200_alone(config, args.gpu_pool, trace), trace, config.slo)
        print(f"peak {peak} req/s, {len(trace):,} requests: H200 alone ${base['cost_usd']:.2f}, "
              f"{base['slo_attainment']:.1%} ({base['wall_s']} s)", file=sys.stderr)
        for n in args.cpu_replicas:
            cfg = with_cpu_replicas(config, args.cpu_pool, n)
            r = run_one(lambda: fleet_for(cfg), trace, config.slo)
            r.update(peak=peak, cpu_replicas=n, h200_alone=base,
                     saving=round(1 - r["cost_usd"] / base["cost_usd"], 4) if base["cost_usd"] else None)
            rows.append(r)
            print(f"  rayhet online, <= {n} CPU replicas: ${r['cost_usd']:.2f} ({r['saving']:+.1%} saved), "
                  f"{r['slo_attainment']:.1%} ({r['wall_s']} s)", file=sys.stderr)
    out = {"machine": f"{platform.node()}, {platform.machine()}, Python {platform.python_version()}",
           "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
           "command": "python benchmarks/sim/savings_sweep.py " + " ".join(sys.argv[1:]),
           "config": args.config, "slo": config.slo.model_dump(), "slo_text": describe(config.slo), "controller_period_s": args.period_s,
           "peak_to_trough": args.ratio, "seed": args.seed, "rows": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1))
    print(f"wrote {args.out}", file=sys.stderr)
    if args.plot:
        print(f"wrote {plot(rows, args.plot, describe(config.slo), args.out)}", file=sys.stderr)
    return 0


def plot(rows: list[dict], out_dir: str, slo_name: str, out_name: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(2, 1, figsize=(8, 7), sharex=True)
    for n in sorted({r["cpu_replicas"] for r in rows}):
        rs = sorted((r for r in rows if r["cpu_replicas"] == n), key=lambda r: r["peak"])
        x = [r["peak"] for r in rs]
        a.plot(x, [100 * r["saving"] for r in rs], marker="o", label=f"<= {n} CPU replicas (12 cores each)")
        b.plot(x, [100 * r["slo_attainment"] for r in rs], marker="o", label=f"<= {n} CPU replicas")
    rs = sorted({r["peak"]: r["h200_alone"] for r in rows}.items())
    b.plot([p for p, _ in rs], [100 * h["slo_attainment"] for _, h in rs], "k--", label="H200 alone")
    a.axhline(50, color="grey", lw=0.8, ls=":")
    a.set_ylabel("% saved vs the H200 always on")
    b.set_ylabel("SLO attainment (%)")
    b.set_xlabel("the day's peak rate (req/s; trough a tenth of it)")
    a.set_xscale("log")
    a.legend(fontsize=8)
    b.legend(fontsize=8)
    fig.suptitle(f"24-hour diurnal days, LMSYS sizes, 1B model, simulated\nSLO: {slo_name}", fontsize=10)
    fig.tight_layout()
    path = Path(out_dir) / f"{Path(out_name).stem}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path


if __name__ == "__main__":
    raise SystemExit(main())
