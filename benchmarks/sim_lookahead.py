"""Start-up-aware control on a ramp (issue 14): SLO attainment and $ with the controller's lookahead on and off.

Pools: the measured 120M CPU pool `cpu2` (llama.cpp, 10 s start-up) and the synthetic `fast` pool of
benchmarks/sim_bench.py standing in for a GPU type (its step model is cpu2's / 20; a 90 s start-up, as a
vLLM replica's). Trace: LMSYS sizes whose rate climbs linearly from 1 to 40 req/s over 20 minutes, holds
10 minutes, falls back over 10 (Poisson, seeded). Each run is the same trace and config but
`controller.lookahead`.

    python benchmarks/sim_lookahead.py --out benchmarks/results/sim-lookahead.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sim_bench import LMSYS, ROOT, fast_profile  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)

    from rayhet.config import parse_config
    from rayhet.sim.build import fleet_for
    from rayhet.sim.report import summarize
    from rayhet.sim.trace import from_sizes
    from rayhet.workload import read_workload

    tmp = Path(tempfile.mkdtemp())
    sizes = read_workload(LMSYS).samples
    sizes = sizes[(sizes[:, 0] + sizes[:, 1]) <= 2000]  # what both pools fit
    t = np.array([0, 1200, 1800, 2400.0])
    r = np.array([1.0, 40.0, 40.0, 1.0])
    trace = from_sizes(sizes, t, r, 2400.0, seed=1, source="ramp 1 -> 40 -> 1 req/s")
    out = {"trace": trace.source, "requests": len(trace), "runs": []}
    for lookahead in (False, True):
        cfg = parse_config({
            "model": {"id": "rayhet-120m", "gguf": "/nonexistent.gguf", "hf": "/nonexistent-hf"},
            "pools": [
                {"name": "cpu2", "engine": "llama_cpp", "profile": str(ROOT / "profiles/rayhet-120m/cpu2.json"),
                 "engine_settings": {"n_ctx": 2048, "n_slots": 8, "n_threads": 2}, "max_replicas": 16,
                 "startup_s": 10},
                {"name": "fast", "engine": "vllm", "profile": fast_profile(tmp / "fast.json"),
                 "engine_settings": {"max_model_len": 16384, "max_num_seqs": 16}, "max_replicas": 16,
                 "startup_s": 90},
            ],
            "slo": {"ttft_ms": 2000, "ttft_ms_per_1k_input": 1000, "ttft_quantile": 0.9, "tpot_ms": 100},
            "planner": {"expected_rate": 0.5},
            "controller": {"period_s": 15, "lookahead": lookahead},
        })
        res = fleet_for(cfg).run(trace)
        s = summarize(res, cfg.slo, window_s=60, name=f"lookahead {'on' if lookahead else 'off'}")
        tot = s["total"]
        ramp = [w for w in s["windows"] if w["start_s"] < 1200 and w["slo_attainment"] is not None]
        row = {"lookahead": lookahead, "cost_usd": tot["cost_usd"], "slo_attainment": tot["slo_attainment"],
               "slo_attainment_during_ramp": float(np.mean([w["slo_attainment"] for w in ramp])),
               "refused": tot["refused"], "failed": tot["failed"], "plans": tot["plans"], "scale_ups": tot["scale_ups"],
               "ttft_p90_s": tot["ttft_s"]["p90"] if tot["ttft_s"] else None}
        out["runs"].append(row)
        print(row, flush=True)
    Path(args.out).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
