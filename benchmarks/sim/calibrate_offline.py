"""The serving overhead fitted on a past validation run (its lone requests before `--horizon` s), then the
validation's simulation again with it, compared with one or more real runs (benchmarks/sim_validation.py's JSON).
What `sim_validation.py --calibrate N` does live, on requests sent before the trace; this reuses a run's own.

    python benchmarks/sim/calibrate_offline.py benchmarks/results/sim-validation-16c-full1.json --horizon 120 \\
        --config benchmarks/sim/validation-16c.yaml --against benchmarks/results/sim-validation-16c-full2.json

`--from-calibration` fits on the requests the run sent before its trace (`sim_validation.py --calibrate`) with
today's fit instead; `--keep-up POOL` holds POOL at one replica or more, as a real run's controller did when the
calibration's own requests were still in its traffic window.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def lone_requests(rows, horizon: float):
    """The real run's requests that had their pool to themselves, arriving before `horizon`."""
    from rayhet.sim.overhead import LoneRequest

    out = []
    for i, r in enumerate(rows):
        if r["arrival_s"] > horizon or r["output_tokens"] < 2 or r["ttft_s"] is None:
            continue
        if any(j != i and o["pool"] == r["pool"] and o["arrival_s"] < r["end_s"] and o["end_s"] > r["arrival_s"]
               for j, o in enumerate(rows)):
            continue
        out.append(LoneRequest(r["pool"], r["input_tokens"], r["output_tokens"], r["ttft_s"],
                               (r["end_s"] - r["arrival_s"] - r["ttft_s"]) / (r["output_tokens"] - 1)))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", help="the validation JSON whose lone requests are fitted")
    ap.add_argument("--config", required=True)
    ap.add_argument("--trace", default="benchmarks/sim/ramp-10min.csv")
    ap.add_argument("--horizon", type=float, default=120.0)
    ap.add_argument("--against", nargs="*", default=[], help="other real runs to compare with (the run itself too)")
    ap.add_argument("--host-slowdown", action="append", default=[], metavar="POOL=S",
                    help="put POOL on one shared host with this slowdown while a neighbour is busy (repeatable; "
                         "benchmarks/sim/contention_fit.py measures it)")
    ap.add_argument("--from-calibration", action="store_true",
                    help="fit on the run's pre-trace calibration requests (and contention, if measured), not its lone "
                         "requests before --horizon")
    ap.add_argument("--keep-up", action="append", default=[], metavar="POOL",
                    help="hold POOL at min_replicas 1 (repeatable)")
    ap.add_argument("--no-overhead", action="store_true", help="leave the serving overhead out (contention alone)")
    ap.add_argument("--host-cpus", type=float, default=None,
                    help="put every pool on one host of this many cores shared with the serving stack "
                         "(HostContention.cpus, rayhet.sim.host)")
    ap.add_argument("--stack-ms", type=float, nargs="+", default=[0.0],
                    help="with --host-cpus: the stack's CPU ms per streamed token; several values: one simulation "
                         "each (a sweep to fit it on)")
    ap.add_argument("--no-neighbour-slowdown", action="store_true",
                    help="with --from-calibration: leave out the slowdown beside a busy neighbour it measured (to "
                         "model the host by --host-cpus alone)")
    ap.add_argument("--up-before", type=float, default=None, metavar="S",
                    help="the app was up this long before the trace (default: the run's record, else estimated "
                         "from the real controller's first period)")
    ap.add_argument("--base-cpus", type=float, default=0.0, help="with --host-cpus: cores busy regardless of traffic")
    args = ap.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from sim_validation import compare, control_phase, table

    from rayhet.config import load_config
    from rayhet.sim.build import fleet_for
    from rayhet.sim.calibrate import calibrated, fit_pools
    from rayhet.sim.report import summarize
    from rayhet.sim.trace import load_trace, reshape

    cfg = load_config(args.config)
    d = json.load(open(args.run))
    cols = d["requests"]["columns"]
    slow = {k: float(v) for k, v in (x.split("=", 1) for x in args.host_slowdown)}
    if args.from_calibration:
        from rayhet.sim.calibrate import fit_contention
        from rayhet.sim.overhead import LoneRequest

        if not d.get("calibration"):
            ap.error(f"{args.run} has no calibration (run without --calibrate)")
        lone = [LoneRequest(**r) for r in d["calibration"]["requests"]]
        fitted = fit_pools(cfg, lone, f"calibration requests of {args.run}")
        busy = [LoneRequest(**r) for r in d["calibration"].get("beside_busy", [])]
        if busy and not args.no_neighbour_slowdown:
            slow.update({k: v["slowdown"] for k, v in fit_contention(cfg, busy, fitted, "h", "offline").items()})
    else:
        lone = lone_requests([dict(zip(cols, r)) for r in d["requests"]["real"]], args.horizon)
        fitted = fit_pools(cfg, lone, f"lone requests of {args.run} before {args.horizon:.0f} s")
    print(f"{len(lone)} lone requests; fitted: {fitted}")
    if args.no_overhead:
        fitted = {}
    if slow:
        print(f"host contention: {slow}")
    trace = reshape(load_trace(args.trace), speedup=d["speedup"], rate_scale=d["rate_scale"])
    real_periods = (d.get("decisions") or {}).get("real") or []
    period = cfg.controller.period_s
    phase = control_phase(real_periods, period)
    if phase is not None:
        print(f"control periods at {phase:.1f} s + k x {period:g} s, as the real run's")
    # how long the app was up before the trace: recorded since 2026-12-08; before, at least until the real
    # controller's first period (its periods start one period after it does)
    up_before = args.up_before if args.up_before is not None else d.get("app_up_before_trace_s")
    if up_before is None and real_periods:
        up_before = max(0.0, -min(x["at"] for x in real_periods) + period)
    up_before = up_before or 0.0
    print(f"the app up {up_before:.1f} s before the trace")
    for stack_ms in args.stack_ms if args.host_cpus else [None]:
        host = {"host": "validation-host", "slowdown": 0.0}
        if stack_ms is not None:
            host.update(cpus=args.host_cpus, stack_cpu_ms_per_token=stack_ms, base_cpus=args.base_cpus)
            print(f"\n== host of {args.host_cpus:g} cores, base {args.base_cpus:g}, stack {stack_ms:g} ms a token")
        cal = calibrated(cfg, fitted, {p.name: {**host, "slowdown": slow.get(p.name, 0.0)} for p in cfg.pools
                                       if p.name in slow or stack_ms is not None})
        cal = cal.model_copy(update={"pools": [p.model_copy(update={"min_replicas": max(p.min_replicas, 1)})
                                               if p.name in args.keep_up else p for p in cal.pools]})
        sim = summarize(fleet_for(cal, control_phase_s=phase, up_before_s=up_before).run(trace), cfg.slo, window_s=60,
                        name="simulated (calibrated)")
        for path in [args.run, *args.against]:
            print(f"\nagainst the real run of {path}:")
            print("\n".join(table(compare(json.load(open(path))["real"], sim, [p.name for p in cfg.pools]))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
