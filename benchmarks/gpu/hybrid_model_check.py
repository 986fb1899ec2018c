"""Issue 18: the 7B profiles' engine models against the bench run beside them (hybrid_bench.py), out of sample.

The profiles' step models were fitted on the profiler's designed batches; the bench measured other things on the
same machine the same hour: a prompt alone (TTFT of 500 and 2,000 tokens), one stream (128-token prompt, 64
tokens), eight such streams at once. This replays each of those in the replica model (rayhet.sim.replica) with
the profile's step model and limits, and prints predicted against measured.
    python benchmarks/gpu/hybrid_model_check.py [--out benchmarks/results/hybrid-7b-h200/model-vs-bench.json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rayhet.profiles import load_profile
from rayhet.sim.replica import SimRequest, simulate

ROOT = Path(__file__).resolve().parents[2]
PAIRS = {  # profile -> the bench row it is checked against (label, budget)
    "cpu16-q4.json": ("CPU-only build, Q4_K_M", 0.0),
    "h200-4gb.json": ("CUDA build, f16", 4.0),
    "h200-16gb.json": ("CUDA build, f16", 16.0),
    "h200.json": ("vLLM, whole H200", None),
}


def predicted(profile) -> dict:
    em = profile.engine_model
    model, limits = em.step_model(), em.engine_limits()
    ttft = {p: simulate(model, limits, [SimRequest(0.0, p, 1)])[0].ttft for p in (500, 2000)}
    one = simulate(model, limits, [SimRequest(0.0, 128, 64)])[0]
    eight = simulate(model, limits, [SimRequest(0.0, 128, 64, rid=k) for k in range(8)])
    wall = max(r.end for r in eight)
    return {"ttft_500_s": ttft[500], "ttft_2000_s": ttft[2000],
            "single_decode_tok_s": 63 / (one.end - one.first_token),
            "streams8_total_tok_s": 8 * 64 / wall}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profiles", default=str(ROOT / "profiles" / "rayhet-7b"))
    ap.add_argument("--bench", default=str(ROOT / "benchmarks" / "results" / "hybrid-7b-h200" / "bench.json"))
    ap.add_argument("--out")
    a = ap.parse_args()
    rows = [r for run in json.loads(Path(a.bench).read_text())["runs"] for r in run["rows"]]
    out = []
    for name, (label, budget) in PAIRS.items():
        bench = next(r for r in rows if r["label"] == label and r.get("budget_gb") == budget)
        pred = predicted(load_profile(Path(a.profiles) / name))
        meas = {"ttft_500_s": min(bench["ttft_500_s"]), "ttft_2000_s": min(bench["ttft_2000_s"]),
                "single_decode_tok_s": bench["single_decode_tok_s"], "streams8_total_tok_s": bench["streams8_total_tok_s"]}
        row = {"profile": name, "bench": f"{label}" + (f", {budget:g} GiB" if budget else ""),
               **{k: {"predicted": round(pred[k], 3), "measured": meas[k], "ratio": round(pred[k] / meas[k], 3)}
                  for k in pred}}
        out.append(row)
        print(f"{name:16s} " + "  ".join(f"{k} {v['predicted']:.3g}/{v['measured']:.3g} ({v['ratio']:.2f})"
                                         for k, v in row.items() if isinstance(v, dict)))
    if a.out:
        Path(a.out).write_text(json.dumps({"what": __doc__.splitlines()[0], "rows": out}, indent=1))


if __name__ == "__main__":
    main()
