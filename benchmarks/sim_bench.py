"""Simulator speed (issue 14 targets): the Azure conversation hour with every --compare policy, and a day of a
million requests with one policy, on this machine.

Pools: the three measured 120M CPU profiles (`profiles/rayhet-120m/cpu2.json`, `benchmarks/sim/profiles/
{small,large}.json`) and one **synthetic** pool, `fast`: cpu2's engine model with every coefficient divided
by 20 and a 16k context (so the Azure trace's long prompts fit somewhere). The synthetic pool is here for
speed only: its $ and SLO numbers mean nothing.

    python benchmarks/sim_bench.py --out benchmarks/results/sim-speed.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
AZURE = ROOT.parent / "shared" / "anchors" / "traces" / "AzureLLMInferenceTrace_conv.csv"
LMSYS = ROOT.parent / "shared" / "anchors" / "melange" / "lmsys-chat-1m.csv"


def fast_profile(dst: Path) -> str:
    from rayhet.profiles import load_profile, save_profile

    p = load_profile(ROOT / "profiles/rayhet-120m/cpu2.json")
    em = p.engine_model
    step = {k: v / 20 for k, v in em.step.items()}
    limits = dict(em.limits, max_context=16384, kv_tokens=16384 * 16, batch_slots=16, passes_per_slot_run=False)
    q = p.model_copy(update={"pool": "fast", "price_per_hour": 2.0, "engine": "vllm", "sweep": [],
                             "engine_model": em.model_copy(update={"step": step, "limits": limits, "points": [],
                                                                   "held_out": []})})
    save_profile(q, dst)
    return str(dst)


def config(tmp: Path, *, controller: bool = True) -> Path:
    cfg = {
        "model": {"id": "rayhet-120m", "gguf": "/nonexistent.gguf", "hf": "/nonexistent-hf"},
        "pools": [
            {"name": "cpu2", "engine": "llama_cpp", "profile": str(ROOT / "profiles/rayhet-120m/cpu2.json"),
             "engine_settings": {"n_ctx": 2048, "n_slots": 8, "n_threads": 2}, "max_replicas": 64},
            {"name": "small", "engine": "llama_cpp", "profile": str(ROOT / "benchmarks/sim/profiles/small.json"),
             "engine_settings": {"n_ctx": 1024, "n_slots": 4, "n_threads": 1}, "price_per_hour": 0.0247,
             "max_replicas": 64},
            {"name": "large", "engine": "llama_cpp", "profile": str(ROOT / "benchmarks/sim/profiles/large.json"),
             "engine_settings": {"n_ctx": 2048, "n_slots": 4, "n_threads": 1}, "price_per_hour": 0.045,
             "max_replicas": 64},
            {"name": "fast", "engine": "vllm", "profile": fast_profile(tmp / "fast.json"),
             "engine_settings": {"max_model_len": 16384, "max_num_seqs": 16}, "max_replicas": 64},
        ],
        "slo": {"ttft_ms": 2000, "ttft_ms_per_1k_input": 1000, "ttft_quantile": 0.9, "tpot_ms": 100},
        "planner": {"expected_rate": 5.0},
        "controller": {"enabled": controller, "period_s": 30},
    }
    path = tmp / "bench.json"
    path.write_text(json.dumps(cfg))
    return path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--day-requests", type=int, default=1_000_000)
    args = ap.parse_args(argv)

    from rayhet.config import load_config
    from rayhet.sim.build import fleet_for
    from rayhet.sim.policies import policies
    from rayhet.sim.report import summarize
    from rayhet.sim.trace import diurnal_curve, from_azure, from_sizes
    from rayhet.workload import read_workload

    tmp = Path(tempfile.mkdtemp())
    cfg = load_config(config(tmp))
    out = {"machine": f"{platform.node()} ({os.cpu_count()} CPUs), Python {platform.python_version()}",
           "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
           "command": "python benchmarks/sim_bench.py " + " ".join(sys.argv[1:])}

    hour = from_azure(AZURE)
    t0 = time.perf_counter()
    runs, bound = policies(cfg, hour, window_s=60)
    rows = []
    for pol in runs:
        if pol.make is None:
            continue
        t1 = time.perf_counter()
        res = pol.make().run(hour)
        s = summarize(res, cfg.slo, window_s=60, name=pol.name)["total"]
        rows.append({"policy": pol.name, "seconds": round(time.perf_counter() - t1, 2), "requests": s["requests"],
                     "cost_usd": s["cost_usd"], "slo_attainment": s["slo_attainment"]})
        print(rows[-1], flush=True)
    out["azure_hour"] = {"requests": len(hour), "pools": 4, "policies": rows,
                         "total_seconds": round(time.perf_counter() - t0, 2), "target_seconds": 60}
    print(out["azure_hour"]["total_seconds"], "s for the Azure hour, all policies", flush=True)

    sizes = read_workload(LMSYS).samples
    mean = args.day_requests / 86400.0
    t, r = diurnal_curve(mean_rate=mean, peak_to_trough=4.0, bursts=3, seed=0)
    t_gen = time.perf_counter()
    day = from_sizes(sizes, t, r, 86400.0, seed=0, source="diurnal day")
    gen_s = time.perf_counter() - t_gen
    t1 = time.perf_counter()
    res = fleet_for(cfg).run(day)
    s = summarize(res, cfg.slo, window_s=600, name="rayhet online")["total"]
    out["day"] = {"requests": len(day), "generate_seconds": round(gen_s, 2),
                  "simulate_seconds": round(time.perf_counter() - t1, 2), "target_seconds": 600,
                  "cost_usd": s["cost_usd"], "slo_attainment": s["slo_attainment"]}
    print(out["day"], flush=True)
    Path(args.out).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
