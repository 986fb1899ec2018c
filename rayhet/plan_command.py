"""`rayhet plan`: the cheapest mix of pools for a workload at one or more rates, beside every single pool
(rayhet.planner over the profiles, each re-derived for the service's SLO), as a table, JSON or a plot."""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from rayhet.errors import RayhetError

def _pairs(values: list[str] | None, flag: str, cast=int) -> dict[str, float]:
    out = {}
    for item in values or []:
        for part in item.split(","):
            name, eq, val = part.partition("=")
            try:
                out[name.strip()] = cast(val)
            except ValueError:
                raise RayhetError(f"{flag}: expected POOL=VALUE, got {part!r}") from None
            if not eq or not name.strip():
                raise RayhetError(f"{flag}: expected POOL=VALUE, got {part!r}")
    return out


def _rates(text: str) -> list[float]:
    try:
        return [float(r) for r in text.split(",") if r.strip()]
    except ValueError:
        raise RayhetError(f"--rate: expected numbers separated by commas, got {text!r}") from None


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--profiles", action="append", required=True, metavar="PATH",
                   help="profile file or directory of *.json profiles (repeat to combine)")
    p.add_argument("--workload", required=True, metavar="FILE", help="CSV of request sizes: input,output pairs or an Azure trace")
    p.add_argument("--format", default="auto", choices=["auto", "pairs", "azure"], help="workload format (default: sniffed)")
    p.add_argument("--rate", metavar="R[,R...]", help="request rate(s) in req/s; default: measured from the trace's timestamps")
    p.add_argument("--pools", metavar="A,B", help="use only these pools (default: every profile)")
    p.add_argument("--slices", type=int, default=8, help="K, the equal slices each bucket's load is cut into (default 8)")
    p.add_argument("--headroom", type=float, default=0.0, help="plan for rate x (1 + H) (default 0)")
    p.add_argument("--drop-unservable", action="store_true", help="drop (with a warning) buckets no pool can serve instead of failing")
    p.add_argument("--time-limit", type=float, default=10.0, metavar="S", help="solver time limit per rate in seconds (default 10)")
    p.add_argument("--min-replicas", action="append", metavar="POOL=N", help="lower bound on a pool's replicas (repeatable)")
    p.add_argument("--max-replicas", action="append", metavar="POOL=N", help="upper bound on a pool's replicas (repeatable)")
    p.add_argument("--price", action="append", metavar="POOL=USD", help="override a pool's $/replica-hour (repeatable)")
    p.add_argument("--vcpu-price", type=float, metavar="USD", help="price CPU pools at vCPUs x USD per vCPU-hour")
    p.add_argument("--held-out", default="scale", choices=["scale", "ignore"],
                   help="a profile whose own held-out check shows its engine model over-predicting: scale its "
                        "capacity down by the worst measured/predicted (default, with a warning), or ignore it")
    p.add_argument("--form", default="aggregated", choices=["aggregated", "binary"], help="MILP form (binary: the paper's, slower)")
    g = p.add_argument_group("the service's SLO (re-derives each profile's capacity from its engine model; "
                             "a profile without one must have been measured under the same SLO)")
    g.add_argument("--slo-ttft-ms", type=float, help="TTFT limit (ms) at --slo-ttft-quantile")
    g.add_argument("--slo-ttft-quantile", type=float, default=0.9, help="quantile of requests within the TTFT limit (default 0.9)")
    g.add_argument("--slo-ttft-ms-per-1k-input", type=float, default=0.0, help="TTFT allowance per 1,000 prompt tokens (ms)")
    g.add_argument("--slo-tpot-ms", type=float, help="TPOT limit (ms): the mean, or at --slo-tpot-quantile")
    g.add_argument("--slo-tpot-quantile", type=float, help="judge TPOT at this quantile instead of the mean")
    g.add_argument("--slo-normalized-ms", type=float, help="normalized latency limit (end-to-end ms / output tokens)")
    g.add_argument("--slo-normalized-quantile", type=float, default=0.9, help="its quantile (default 0.9)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--plot", metavar="F.png", help="draw $/hour against rate for the mix and each single pool")


def _service_slo(args: argparse.Namespace):
    """The SLO given with --slo-*, or None (plan with each profile's capacity as measured)."""
    from rayhet.profiles import SLO

    if args.slo_ttft_ms is None and args.slo_tpot_ms is None and args.slo_normalized_ms is None:
        return None
    try:
        return SLO(ttft_ms=args.slo_ttft_ms, ttft_quantile=args.slo_ttft_quantile,
                   ttft_ms_per_1k_input=args.slo_ttft_ms_per_1k_input, tpot_ms=args.slo_tpot_ms,
                   tpot_quantile=args.slo_tpot_quantile, normalized_ms=args.slo_normalized_ms,
                   normalized_quantile=args.slo_normalized_quantile)
    except ValueError as e:
        raise RayhetError(f"--slo-*: {e}") from None


def _pool_options(args: argparse.Namespace):
    from rayhet.planner import PoolOption
    from rayhet.profiles import load_profiles

    from rayhet.capacity import service_profile

    for path in args.profiles:  # read first: a missing file, an empty directory or a pool defined twice is a
        load_profiles(path)     # ProfileError naming the file (service_profile below then derives each one)
    slo = _service_slo(args)
    files = [f for path in args.profiles for f in (sorted(Path(path).glob("*.json")) if Path(path).is_dir() else [Path(path)])]
    from rayhet.capacity import derive_ahead

    derive_ahead(files, slo)  # every profile's grid for this SLO at once, one process a core
    profiles = [service_profile(f, slo, args.held_out) for f in files]
    names = [p.pool for p in profiles]
    if len(set(names)) != len(names):
        raise RayhetError(f"--profiles: pool names repeat across paths: {names}")
    if args.pools:
        wanted = [n.strip() for n in args.pools.split(",") if n.strip()]
        unknown = sorted(set(wanted) - set(names))
        if unknown:
            raise RayhetError(f"--pools: unknown pool(s) {unknown}; profiles define {names}")
        profiles = [p for p in profiles if p.pool in wanted]
    mins, maxs = _pairs(args.min_replicas, "--min-replicas"), _pairs(args.max_replicas, "--max-replicas")
    prices = _pairs(args.price, "--price", float)
    for flag, d in (("--min-replicas", mins), ("--max-replicas", maxs), ("--price", prices)):
        unknown = sorted(set(d) - {p.pool for p in profiles})
        if unknown:
            raise RayhetError(f"{flag}: unknown pool(s) {unknown}")
    out = []
    for p in profiles:
        price = prices.get(p.pool)
        if price is None and args.vcpu_price is not None and p.is_cpu:
            price = p.hardware.vcpus * args.vcpu_price
        out.append(PoolOption(p.pool, p, price, int(mins.get(p.pool, 0)), maxs.get(p.pool)))
    return sorted(out, key=lambda p: (p.price, p.name))


def _finite(x):
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_finite(v) for v in x]
    return x


def _saving(mix: float, base: float) -> float | None:
    return 100.0 * (base - mix) / base if math.isfinite(base) and base > 0 else None


def run(args: argparse.Namespace) -> int:
    from rayhet.planner import baselines, common_grid, solve
    from rayhet.workload import bucketize, read_workload

    pools = _pool_options(args)
    workload = read_workload(args.workload, args.format)
    if args.rate is None and workload.rate is None:
        raise RayhetError("--rate is required: this workload has no timestamps to measure a rate from")
    rates = _rates(args.rate) if args.rate is not None else [workload.rate]
    grid = common_grid([p.profile for p in pools])
    dist = bucketize(workload.samples, *grid)
    kw = dict(slices=args.slices, headroom=args.headroom, drop_unservable=args.drop_unservable,
              time_limit_s=args.time_limit, form=args.form)
    it = rates
    if len(rates) > 4 and sys.stderr.isatty() and not args.json:
        from tqdm import tqdm

        it = tqdm(rates, desc="planning", unit="rate", leave=False)
    results = []
    for r in it:
        mix = solve(pools, dist, r, **kw)
        base = baselines(pools, dist, r, **kw)
        results.append((r, mix, base))
    if args.plot:
        _plot(results, pools, Path(args.plot))
    if args.json:
        doc = {
            "workload": {"source": workload.source, "samples": int(len(workload.samples)), "measured_rate": workload.rate,
                         "clipped_fraction": dist.clipped, "input_edges": grid[0], "output_edges": grid[1]},
            "pools": [{"name": p.name, "price_per_hour": p.price, "min_replicas": p.min_replicas,
                       "max_replicas": p.max_replicas, "model": p.profile.model} for p in pools],
            "results": [{"rate": r, "plan": mix.to_dict(), "baselines": {k: b.to_dict() for k, b in base.items()},
                         "savings_pct": {k: _saving(mix.cost_per_hour, b.cost_per_hour) for k, b in base.items()}}
                        for r, mix, base in results],
        }
        print(json.dumps(_finite(doc), indent=1))
    else:
        print(_table(results, pools, workload, dist, args))
    return 0


def _table(results, pools, workload, dist, args) -> str:
    names = [p.name for p in pools]
    lines = [
        f"workload  {workload.source}: {len(workload.samples):,} requests"
        + (f", {100 * dist.clipped:.2g}% above the grid (counted in its last bucket)" if dist.clipped else ""),
        f"grid      {len(dist.input_edges)} input x {len(dist.output_edges)} output buckets; K={args.slices} slices; "
        f"headroom {100 * args.headroom:g}%",
        "pools     " + ", ".join(f"{p.name} ${p.price:g}/h{_kind(p.profile)}" for p in pools),
        "",
    ]
    head = ["req/s", "mix $/h", "mix replicas (" + "/".join(names) + ")"] + [f"{n}-only $/h" for n in names] + ["saving vs best single"]
    rows = []
    for r, mix, base in results:
        best = min(base.values(), key=lambda b: b.cost_per_hour)
        best_name = next(k for k, b in base.items() if b is best)
        s = _saving(mix.cost_per_hour, best.cost_per_hour)
        status = "" if mix.status == "optimal" else f" ({mix.status}, gap {100 * (mix.gap or 0):.2g}%)"
        rows.append([f"{r:g}", f"{mix.cost_per_hour:.2f}{status}", "/".join(str(mix.replicas[n]) for n in names)]
                    + [f"{base[n].cost_per_hour:.2f}" if math.isfinite(base[n].cost_per_hour) else "cannot" for n in names]
                    + [f"{s:.1f}% ({best_name})" if s is not None else "-"])
    widths = [max(len(h), *(len(row[k]) for row in rows)) for k, h in enumerate(head)]
    lines.append("  ".join(h.rjust(w) for h, w in zip(head, widths)))
    lines += ["  ".join(c.rjust(w) for c, w in zip(row, widths)) for row in rows]
    notes = {b.message for _, _, base in results for b in base.values() if b.status == "infeasible"}
    dropped = {m.message.split(";")[0] for _, m, _ in results if m.dropped_buckets}
    notes |= {d + " (--drop-unservable)" for d in dropped}
    if len(results) == 1:
        r, mix, _ = results[0]
        lines += ["", f"at {r:g} req/s: " + ", ".join(
            f"{n} x{mix.replicas[n]} at {100 * mix.utilisation[n]:.0f}%" for n in names if mix.replicas[n]) or "no replicas",
            f"solved in {1000 * mix.solve_time_s:.0f} ms ({mix.status})"]
    if notes:
        lines += [""] + [f"note: {m}" for m in sorted(notes)]
    return "\n".join(lines)


def _kind(profile) -> str:
    """A hybrid pool says so, with its split: where the planner picks one is then plain in the table."""
    split = profile.hardware.gpu_split
    if split is None:
        return ""
    layers = "all layers + head" if split.n_gpu_layers > split.n_layers else f"{split.n_gpu_layers}/{split.n_layers} layers"
    return (f" (hybrid: {layers} on {split.gpu_share:g} of a {profile.hardware.accelerator}, "
            f"{profile.hardware.vcpus} vCPUs)")


def _tick_labels(rates: list[float], min_ratio: float = 1.6) -> list[str]:
    """Each rate's label, left blank where it would crowd the last one labelled on a log axis (0.2 beside 0.3)."""
    kept: list[float] = []
    out = []
    for r in rates:
        keep = all(abs(math.log(r / k)) >= math.log(min_ratio) for k in kept)
        out.append(f"{r:g}" if keep else "")
        kept += [r] if keep else []
    return out


def _plot(results, pools, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rates = [r for r, _, _ in results]
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for p in pools:
        pts = [(r, base[p.name].cost_per_hour) for r, _, base in results if math.isfinite(base[p.name].cost_per_hour)]
        if pts:
            ax.plot(*zip(*pts), marker="o", linestyle="--", label=f"{p.name} only")
    ax.plot(rates, [m.cost_per_hour for _, m, _ in results], marker="s", color="black", linewidth=2.2, label="rayhet mix")
    cannot = [p.name for p in pools if all(not math.isfinite(base[p.name].cost_per_hour) for _, _, base in results)]
    if cannot:  # a single pool that cannot serve the workload has no line; say so instead of leaving it out silently
        fig.text(0.01, 0.01, f"cannot serve this workload alone: {', '.join(cannot)}", fontsize=8, color="gray")
    ax.set_xlabel("request rate (req/s)")
    ax.set_ylabel("cost ($/hour)")
    if len(rates) > 1 and min(rates) > 0:
        ax.set_xscale("log", base=2)
        ax.set_xticks(rates, _tick_labels(rates))
    costs = [line.get_ydata() for line in ax.get_lines()]
    ys = [float(y) for ydata in costs for y in ydata if math.isfinite(float(y)) and float(y) > 0]
    if ys and max(ys) / min(ys) > 30:  # a sweep over decades: on a linear axis the cheap end is a flat line
        ax.set_yscale("log")
    ax.grid(True, alpha=0.3)
    ax.legend()
    ax.set_title("cost vs request rate")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)

