"""Where a validation's real run and its simulation disagree, request by request (benchmarks/sim_validation.py
writes both runs under "requests"): TTFT and end-to-end time of the same trace request in each, by pool and by
window of the trace, and the requests that met the SLO in one run only.

    python benchmarks/sim/per_request.py benchmarks/results/sim-validation-16c.json
"""

from __future__ import annotations

import json
import sys

import numpy as np


def main(path: str) -> int:
    d = json.load(open(path))
    cols = d["requests"]["columns"]
    real = [dict(zip(cols, r)) for r in d["requests"]["real"]]
    sim = [dict(zip(cols, r)) for r in d["requests"]["simulated"]]
    pairs = [(r, s) for r, s in zip(real, sim) if r["ttft_s"] is not None and s["ttft_s"] is not None]
    print(f"{len(pairs)} of {len(real)} requests with a first token in both runs")
    print("pool (real) | n | TTFT real p50/p90 s | sim p50/p90 s | median sim/real | same pool")
    for pool in sorted({r["pool"] for r, _ in pairs}):
        ps = [(r, s) for r, s in pairs if r["pool"] == pool]
        tr = np.array([r["ttft_s"] for r, _ in ps])
        ts = np.array([s["ttft_s"] for _, s in ps])
        same = sum(r["pool"] == s["pool"] for r, s in ps)
        print(f"{pool} | {len(ps)} | {np.percentile(tr, 50):.2f}/{np.percentile(tr, 90):.2f} | "
              f"{np.percentile(ts, 50):.2f}/{np.percentile(ts, 90):.2f} | {np.median(ts / np.maximum(tr, 1e-3)):.2f} | "
              f"{same}/{len(ps)}")
    window = d.get("real", {}).get("window_s", 60.0) or 60.0
    print("window | n | TTFT p90 real / sim | decode s/token median real / sim")
    for w in sorted({int(r["arrival_s"] // window) for r, _ in pairs}):
        ps = [(r, s) for r, s in pairs if int(r["arrival_s"] // window) == w]
        per_tok = lambda x: (x["end_s"] - x["arrival_s"] - x["ttft_s"]) / max(x["output_tokens"] - 1, 1)  # noqa: E731
        print(f"{w * window:.0f}s | {len(ps)} | {np.percentile([r['ttft_s'] for r, _ in ps], 90):.2f} / "
              f"{np.percentile([s['ttft_s'] for _, s in ps], 90):.2f} | "
              f"{1000 * np.median([per_tok(r) for r, _ in ps]):.0f} / {1000 * np.median([per_tok(s) for _, s in ps]):.0f} ms")
    alone_vs_busy(pairs)
    cmd = d["command"].split()
    if "--config" in cmd:
        from rayhet.config import load_config

        slo = load_config(cmd[cmd.index("--config") + 1]).slo

        def met(x) -> bool:
            limit = (slo.ttft_ms or float("inf")) + (slo.ttft_ms_per_1k_input or 0) * x["input_tokens"] / 1000
            tpot = (x["end_s"] - x["arrival_s"] - x["ttft_s"]) / max(x["output_tokens"] - 1, 1)
            return 1000 * x["ttft_s"] <= limit and (slo.tpot_ms is None or 1000 * tpot <= slo.tpot_ms)

        only_sim = [(r, s) for r, s in pairs if met(s) and not met(r)]
        only_real = [(r, s) for r, s in pairs if met(r) and not met(s)]
        print(f"within the SLO (TTFT and mean TPOT per request) in the simulation only: {len(only_sim)}; "
              f"in the real run only: {len(only_real)}")
        for r, s in only_sim:
            print(f"  t={r['arrival_s']:.0f}s in {r['input_tokens']} out {r['output_tokens']} on {r['pool']}/{s['pool']}: "
                  f"TTFT {r['ttft_s']:.2f} / {s['ttft_s']:.2f} s, end {r['end_s'] - r['arrival_s']:.1f} / "
                  f"{s['end_s'] - s['arrival_s']:.1f} s")
    return 0


def alone_vs_busy(pairs) -> None:
    """Requests that had their pool to themselves in the real run against those that shared it: a gap that is
    there alone too is a fixed cost of the serving stack, one that grows with the batch is per token."""
    real = [r for r, _ in pairs]

    def concurrent(i: int) -> int:  # other requests in flight on the same pool at some point of this one's life
        r = real[i]
        return sum(1 for j, o in enumerate(real) if j != i and o["pool"] == r["pool"]
                   and o["arrival_s"] < r["end_s"] and o["end_s"] > r["arrival_s"])

    def per_tok(x) -> float:
        return (x["end_s"] - x["arrival_s"] - x["ttft_s"]) / max(x["output_tokens"] - 1, 1)

    print("real run's concurrency | n | TTFT real - sim, median ms | decode real / sim, median")
    groups = {"alone": [], "1-3 others": [], "4+ others": []}
    for i, (r, s) in enumerate(pairs):
        if r["output_tokens"] > 5:
            k = concurrent(i)
            groups["alone" if k == 0 else "1-3 others" if k <= 3 else "4+ others"].append((r, s))
    for name, ps in groups.items():
        if ps:
            print(f"{name} | {len(ps)} | {1000 * np.median([r['ttft_s'] - s['ttft_s'] for r, s in ps]):.0f} | "
                  f"{np.median([per_tok(r) / per_tok(s) for r, s in ps]):.2f}")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
