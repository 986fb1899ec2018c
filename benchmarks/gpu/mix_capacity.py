"""The request rate one replica of a pool serves of a size mix, as the planner sees it (its profile for the
config's SLO, held-out scaling included): the rate R at which the replica's load, sum over buckets of
R * share_b / capacity_b, reaches 1. Buckets the pool cannot serve are left out of the mix (as
`rayhet plan --drop-unservable`). Prints R x --share (benchmarks/gpu/day.sh sets its peak with it).

    python benchmarks/gpu/mix_capacity.py --config benchmarks/sim/day-h200.yaml --pool h200 --sizes lmsys-8k.csv
"""

from __future__ import annotations

import argparse
import sys

import numpy as np


def mix_capacity(capacity: np.ndarray, shares: np.ndarray) -> tuple[float, float]:
    """(rate one replica serves of the mix, share of the mix it cannot serve at all)."""
    ok = np.nan_to_num(capacity, nan=0.0) > 0
    served = shares[ok].sum()
    if served <= 0:
        return 0.0, 1.0
    load_per_req = (shares[ok] / served / capacity[ok]).sum()  # replica-seconds per request of the served mix
    return 1.0 / load_per_req, 1.0 - served


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", required=True)
    ap.add_argument("--pool", required=True)
    ap.add_argument("--sizes", required=True, help="input,output pairs (any `rayhet plan --workload` file)")
    ap.add_argument("--share", type=float, default=1.0, help="print this share of the capacity (default 1)")
    args = ap.parse_args()
    from rayhet.capacity import service_profile
    from rayhet.config import load_config
    from rayhet.planner import capacity_on_grid
    from rayhet.workload import bucketize, read_workload

    config = load_config(args.config)
    pool = next(p for p in config.pools if p.name == args.pool)
    prof = service_profile(pool.profile, config.slo, config.planner.held_out)
    dist = bucketize(read_workload(args.sizes).samples, prof.input_edges, prof.output_edges)
    cap = capacity_on_grid(prof, prof.input_edges, prof.output_edges).astype(float)
    rate, unserved = mix_capacity(cap, np.asarray(dist.fractions, dtype=float))
    print(f"{args.pool}: one replica serves {rate:.2f} req/s of this mix ({100 * unserved:.2f} % of it unservable)",
          file=sys.stderr)
    print(f"{rate * args.share:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
