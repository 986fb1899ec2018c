"""How much a busy neighbour slowed each pool's decoding in a validation's real run (benchmarks/sim_validation.py's
JSON): per pool, each request's real/simulated time per output token against the share of its decode time in which
another pool on the host held a request; the least-squares line's slope over its intercept is the pool's
`host_contention.slowdown` (README "Simulating a day").

    python benchmarks/sim/contention_fit.py benchmarks/results/sim-validation-16c-full1.json
"""

from __future__ import annotations

import json
import sys

import numpy as np

from rayhet.sim.calibrate import busy_share


def fit(path: str) -> dict[str, dict]:
    d = json.load(open(path))
    cols = d["requests"]["columns"]
    real = [dict(zip(cols, r)) for r in d["requests"]["real"]]
    sim = [dict(zip(cols, r)) for r in d["requests"]["simulated"]]
    spans = {}
    for r in real:
        if r["pool"] and r["end_s"] is not None:
            spans.setdefault(r["pool"], []).append((r["arrival_s"], r["end_s"]))
    rows: dict[str, list[tuple[float, float]]] = {}
    for r, s in zip(real, sim):
        if r["ttft_s"] is None or s["ttft_s"] is None or r["output_tokens"] <= 5 or r["pool"] is None:
            continue
        per_tok = lambda x: (x["end_s"] - x["arrival_s"] - x["ttft_s"]) / (x["output_tokens"] - 1)  # noqa: E731
        others = [iv for p, ivs in spans.items() if p != r["pool"] for iv in ivs]
        x = busy_share(r["arrival_s"] + r["ttft_s"], r["end_s"], others)
        rows.setdefault(r["pool"], []).append((x, per_tok(r) / per_tok(s)))
    out = {}
    for pool, xy in sorted(rows.items()):
        x, y = np.array(xy).T
        a, b = np.linalg.lstsq(np.vstack([np.ones_like(x), x]).T, y, rcond=None)[0]
        out[pool] = {"requests": len(x), "ratio_alone": round(float(a), 3), "ratio_neighbour_busy": round(float(a + b), 3),
                     "slowdown": round(max(0.0, float(b / a)), 3)}
    return out


if __name__ == "__main__":
    for path in sys.argv[1:]:
        print(path, json.dumps(fit(path)))
