"""How decisive is one directly measured point? The replica model's own answer (issue 13).

A held-out point judges a few requests (15, or 8 for long outputs) against the SLO. Near a bucket's capacity
that verdict is a draw: the TPOT mean of 15 requests swings with how their arrivals happened to cluster.
This replays many independent draws of such a point through the replica model (a profile's step model) and
prints, per rate, how often the point fails and the spread of its TPOT mean and TTFT quantile. Where a
perfect model's own points fail 30-50 % of the time at the rates a check measures, a capacity read off a
handful of points cannot confirm or refute ±15 %; the twins (rayhet.profiling.twin) compare the model and the
engine on the same draw instead.

    python benchmarks/held_out_noise.py --profile profiles/rayhet-120m/cpu2.json --bucket 250/25 \
        --rates 0.56,0.667,0.793 --requests 15 --warmup 3
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from rayhet.profiles import load_profile
from rayhet.profiling.capacity import quantile_key
from rayhet.profiling.grid import buckets
from rayhet.profiling.power import point_plan
from rayhet.profiling.twin import draw_point


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", required=True, help="a version-2 profile (with an engine model)")
    ap.add_argument("--bucket", required=True, help="INPUT/OUTPUT tokens, e.g. 250/25")
    ap.add_argument("--rates", required=True, help="comma-separated req/s")
    ap.add_argument("--requests", type=int, default=15, help="measured requests per point (default 15)")
    ap.add_argument("--warmup", type=float, default=3.0, help="warm-up seconds before the window (default 3)")
    ap.add_argument("--draws", type=int, default=300)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    prof = load_profile(args.profile)
    if prof.engine_model is None:
        print(f"{args.profile}: no engine model (schema version 1)", file=sys.stderr)
        return 2
    model, limits = prof.engine_model.step_model(), prof.engine_model.engine_limits()
    n_in, n_out = (int(x) for x in args.bucket.split("/"))
    (bucket,), _ = buckets([n_in], [n_out], limits.max_context)
    key = quantile_key(prof.slo.ttft_quantile)
    print(f"{args.profile}: bucket {n_in}/{n_out}, {args.requests} measured requests a point, {args.draws} draws; "
          f"SLO {prof.slo.model_dump(exclude_defaults=True)}")
    print(f"{'req/s':>8} {'fails':>6}   TPOT mean p10/p50/p90 (ms)   TTFT {key} p10/p50/p90 (ms)")
    for rate in (float(r) for r in args.rates.split(",")):
        rng = np.random.default_rng(args.seed)
        plan = point_plan(rate, args.requests, max(args.warmup, 0.0))
        pts = [draw_point(model, limits, bucket, rate, plan, prof.slo, rng) for _ in range(args.draws)]
        tpot = np.array([p.tpot_ms.get("mean", np.nan) for p in pts])
        ttft = np.array([p.ttft_ms.get(key, np.nan) for p in pts])
        fails = np.mean([not p.meets_slo for p in pts])
        print(f"{rate:8.4g} {fails:6.0%}   {'/'.join(f'{v:.0f}' for v in np.nanpercentile(tpot, [10, 50, 90])):>26}"
              f"   {'/'.join(f'{v:.0f}' for v in np.nanpercentile(ttft, [10, 50, 90])):>26}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
