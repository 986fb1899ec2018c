"""The rayhet app on one GPU machine with two pools, `h100` (vLLM, the GPU) and `cpu` (llama.cpp, the cores).

`--rates R1,R2`: for each rate, start the app with the start-up plan solved for that rate (LMSYS size
distribution, the two measured profiles, market prices), drive it with open-loop Poisson arrivals whose
(input, output) sizes are sampled from the LMSYS sample (prompts of exact token length, `ignore_eos`,
streamed), then read the ingress's per-pool counters. Also solves the H100-only plan at the same rate.
(The pool's throughput against LLM.generate is pool_throughput.py; session 2's runs used this script's
former `--pool-throughput`, at commit 2575099.)
`--fake`: both pools on the FakeEngine (no GPU, no model) to check the script itself on a laptop.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench_engine import ENGINE, LMSYS, lmsys_requests  # noqa: E402

APP = "rayhet"


def _pct(values: list[float]) -> dict | None:
    if not values:
        return None
    v = np.asarray(values)
    return {"mean": round(float(v.mean()), 2), **{f"p{q}": round(float(np.percentile(v, q)), 2) for q in (50, 90, 99)}}


def _stream_interval() -> dict:
    """STREAM_INTERVAL=N: tokens per delta after the first (VllmSettings.stream_interval; the runs of
    2026-11-21 passed it as engine_args before it became a setting, same effect)."""
    n = os.environ.get("STREAM_INTERVAL")
    return {"stream_interval": int(n)} if n else {}


def config_for(a: argparse.Namespace, rate: float, pools: list[str]) -> dict:
    """The rayhet config of one run (pools: a subset of h100, cpu)."""
    fake = a.fake
    h100 = {
        "name": "h100", "engine": "fake" if fake else "vllm",
        "accelerator_type": None if fake else os.environ.get("GPU_ACCEL", "H100"), "num_gpus": 0 if fake else 1, "num_cpus": 0.1 if fake else 1,
        "engine_settings": ({"n_slots": 64, "tpot_s": 0.005, "max_context": 8192} if fake else
                            {**{k: v for k, v in ENGINE.items() if k != "seed"}, **_stream_interval()}),
        "profile": str(Path(a.profiles) / "h100.json"), "price_per_hour": a.h100_price,
        "min_replicas": 0, "max_replicas": 1,
    }
    cpu = {
        "name": "cpu", "engine": "fake" if fake else "llama_cpp", "num_cpus": 0.1 if fake else a.threads,
        "engine_settings": ({"n_slots": 4, "tpot_s": 0.03, "max_context": 8192} if fake else
                            {"n_threads": a.threads, "n_ctx": 8192, "n_slots": a.cpu_slots}),
        "profile": str(Path(a.profiles) / "cpu16.json"), "price_per_hour": a.vcpu_price * a.threads,
        "min_replicas": 0, "max_replicas": 1,
    }
    chosen = [p for p in (h100, cpu) if p["name"] in pools]
    if len(chosen) == 1:
        chosen[0]["min_replicas"] = 1
    model = {"id": "rayhet-1b"}
    if not fake:
        model.update(hf=os.environ["RAYHET_HF"], gguf=os.environ["RAYHET_GGUF"], tokenizer=os.environ["RAYHET_HF"])
    else:
        model.update(gguf="embedded:tiny")
    return {
        "model": model,
        "pools": chosen,
        "slo": {"tpot_ms": a.slo_tpot_ms, "ttft_ms": a.slo_ttft_ms},
        # the load sends exact max_tokens (ignore_eos): route on it
        "routing": {"predictor": "max_tokens"},
        "planner": {"expected_rate": rate, "workload": str(a.lmsys), "headroom": a.headroom},
        "server": {"traffic_window_s": 3600.0, "ingress_max_ongoing_requests": 4000},
        "controller": {"enabled": False},
    }


def plans(cfg: dict, rate: float) -> dict:
    """The start-up plan of `cfg` and the H100-only plan (no replica cap) at the same rate, with costs."""
    from rayhet.app import startup_plan
    from rayhet.config import parse_config
    from rayhet.planner import PoolOption, common_grid, solve
    from rayhet.profiles import load_profile
    from rayhet.workload import bucketize, read_workload

    config = parse_config(cfg, "run_app")
    out: dict = {"rate": rate}
    plan = startup_plan(config)
    out["plan"] = {"replicas": plan.replicas, "cost_per_hour": plan.cost_per_hour, "status": plan.status,
                   "dropped_buckets": plan.dropped_buckets, "utilisation": plan.utilisation}
    profiles = {p.name: load_profile(p.profile) for p in config.pools}
    grid = common_grid(list(profiles.values()))
    dist = bucketize(read_workload(cfg["planner"]["workload"]).samples, *grid)
    for label, names in (("h100_only", ["h100"]), ("mixed_uncapped", list(profiles))):
        if any(n not in profiles for n in names):
            continue
        opts = [PoolOption(n, profiles[n], next(p.price_per_hour for p in config.pools if p.name == n)) for n in names]
        try:
            pl = solve(opts, dist, rate, headroom=config.planner.headroom, drop_unservable=True)
            out[label] = {"replicas": pl.replicas, "cost_per_hour": pl.cost_per_hour, "status": pl.status,
                          "dropped_buckets": pl.dropped_buckets}
        except Exception as e:  # noqa: BLE001 - reported, not fatal
            out[label] = {"error": f"{type(e).__name__}: {e}"}
    return out


# -- load ----------------------------------------------------------------------------------------
async def _one(session, url: str, ids: list[int], out_tokens: int, t_sched: float, stream: bool) -> dict:
    body = {"model": "rayhet-1b", "prompt": ids, "max_tokens": out_tokens, "ignore_eos": True,
            "temperature": 0, "stream": stream}
    if stream:
        body["stream_options"] = {"include_usage": True}
    t0 = time.monotonic()
    rec = {"input": len(ids), "output": out_tokens, "lag_s": t0 - t_sched, "ok": False}
    try:
        async with session.post(url, json=body) as r:
            if r.status != 200:
                rec["error"] = f"HTTP {r.status}: {(await r.text())[:200]}"
                return rec
            if not stream:
                js = await r.json()
                rec.update(ok=True, e2e_s=time.monotonic() - t0, completion_tokens=js["usage"]["completion_tokens"])
                return rec
            first = None
            n_out = None
            async for raw in r.content:
                line = raw.strip()
                if not line.startswith(b"data: ") or line == b"data: [DONE]":
                    continue
                js = json.loads(line[6:])
                if "error" in js:
                    rec["error"] = str(js["error"])[:200]
                    return rec
                if first is None and js.get("choices"):
                    first = time.monotonic()
                if js.get("usage"):
                    n_out = js["usage"]["completion_tokens"]
            end = time.monotonic()
            rec.update(ok=True, ttft_s=(first or end) - t0, e2e_s=end - t0, completion_tokens=n_out)
            if n_out and n_out > 1 and first is not None:
                rec["tpot_s"] = (end - first) / (n_out - 1)
            return rec
    except Exception as e:  # noqa: BLE001 - a failed request is a data point
        rec["error"] = f"{type(e).__name__}: {e}"[:200]
        return rec


async def open_loop(url: str, reqs: list[tuple[list[int], int]], rate: float, seed: int) -> tuple[list[dict], float]:
    """Poisson arrivals at `rate`; every request is sent at its time whatever the server does (open loop)."""
    import aiohttp

    gaps = np.random.default_rng(seed + 1).exponential(1.0 / rate, size=len(reqs))
    t0 = time.monotonic()
    when = t0 + np.cumsum(gaps)
    timeout = aiohttp.ClientTimeout(total=1800)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0), timeout=timeout) as s:
        tasks = []
        for (ids, o), t in zip(reqs, when):
            await asyncio.sleep(max(0.0, t - time.monotonic()))
            tasks.append(asyncio.create_task(_one(s, url, ids, o, t, stream=True)))
        recs = await asyncio.gather(*tasks)
    return list(recs), time.monotonic() - t0


async def batch(url: str, reqs: list[tuple[list[int], int]], stream: bool = False) -> tuple[list[dict], float]:
    """Every request at once (throughput), non-streamed unless `stream`."""
    import aiohttp

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0),
                                     timeout=aiohttp.ClientTimeout(total=1800)) as s:
        t0 = time.monotonic()
        recs = await asyncio.gather(*(_one(s, url, ids, o, t0, stream=stream) for ids, o in reqs))
    return list(recs), time.monotonic() - t0


def summarise(recs: list[dict], wall_s: float, slo_tpot_ms: float, slo_ttft_ms: float) -> dict:
    ok = [r for r in recs if r["ok"]]
    met = [r for r in ok if r.get("ttft_s", 0) * 1000 <= slo_ttft_ms and r.get("tpot_s", 0) * 1000 <= slo_tpot_ms]
    errors: dict[str, int] = {}
    for r in recs:
        if not r["ok"]:
            key = r.get("error", "?")[:60]
            errors[key] = errors.get(key, 0) + 1
    return {
        "sent": len(recs), "ok": len(ok), "errors": errors, "wall_s": round(wall_s, 2),
        "slo_attainment": round(len(met) / len(recs), 4) if recs else None,
        "ttft_ms": _pct([r["ttft_s"] * 1000 for r in ok if "ttft_s" in r]),
        "tpot_ms": _pct([r["tpot_s"] * 1000 for r in ok if "tpot_s" in r]),
        "e2e_s": _pct([r["e2e_s"] for r in ok]),
        "output_tokens": int(sum(r.get("completion_tokens") or 0 for r in ok)),
        "output_tokens_per_s": round(sum(r.get("completion_tokens") or 0 for r in ok) / wall_s, 1),
        "max_send_lag_s": round(max((r["lag_s"] for r in recs), default=0.0), 3),
    }


# -- runs ----------------------------------------------------------------------------------------
def _start(cfg: dict) -> str:
    from ray import serve

    from rayhet.app import build

    t0 = time.monotonic()
    serve.run(build({"config": cfg}), name=APP, route_prefix="/")
    print(f"  app up in {time.monotonic() - t0:.0f} s", flush=True)
    return "http://127.0.0.1:8000/v1/completions"


def _snapshot():
    from rayhet.messages import TrafficSnapshot
    from rayhet.serve.builder import INGRESS_NAME
    from rayhet.testing.driver import call_deployment

    return TrafficSnapshot.model_validate(call_deployment(APP, INGRESS_NAME, "traffic_snapshot"))


def max_capped_rate(a: argparse.Namespace) -> float:
    """The highest rate a plan within the pools' max_replicas (one h100, one cpu: this machine) serves."""
    from rayhet.app import startup_plan
    from rayhet.config import parse_config
    from rayhet.errors import ConfigError

    def ok(r: float) -> bool:
        try:
            startup_plan(parse_config(config_for(a, r, ["h100", "cpu"]), "run_app"))
            return True
        except ConfigError:
            return False

    lo, hi = 0.0, 1.0
    while ok(hi) and hi < 1e4:
        lo, hi = hi, hi * 2
    for _ in range(12):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if ok(mid) else (lo, mid)
    return lo


def run_rate(a: argparse.Namespace, rate: float, vocab: int) -> dict:
    from ray import serve

    cfg = config_for(a, rate, ["h100", "cpu"])
    res = plans(cfg, rate)
    print(f"rate {rate}: plan {res['plan']['replicas']} ${res['plan']['cost_per_hour']:.2f}/h; "
          f"H100-only {res.get('h100_only', {}).get('replicas')} ${res.get('h100_only', {}).get('cost_per_hour', float('nan')):.2f}/h",
          flush=True)
    n = max(1, int(round(rate * a.duration)))
    # sizes clipped to the profiled grid, as the planner's distribution clips them
    grid_in, grid_out = _grid(a)
    reqs = [(ids[:grid_in], min(o, grid_out)) for ids, o in lmsys_requests(n, a.seed, 8192, vocab, Path(a.lmsys))]
    # A pool the plan gives no replica is left out of the app: Serve refuses a deployment of 0 replicas
    # when no controller scales it (and with the plan, it would serve nothing anyway).
    started = [name for name, k in res["plan"]["replicas"].items() if k > 0]
    res["pools_started"] = started
    if len(started) < len(cfg["pools"]):
        cfg = config_for(a, rate, started)
    url = _start(cfg)
    recs, wall = asyncio.run(open_loop(url, reqs, rate, a.seed))
    res["client"] = summarise(recs, wall, a.slo_tpot_ms, a.slo_ttft_ms)
    snap = _snapshot()
    res["ingress"] = snap.model_dump(mode="json")
    for name, p in snap.pools.items():
        res["ingress"]["pools"][name]["slo_attainment"] = (
            round(p.slo_ok / p.ok, 4) if p.ok and p.slo_ok is not None else None)
    print(json.dumps({"client": res["client"], "pools": res["ingress"]["pools"]}, indent=None)[:3000], flush=True)
    serve.delete(APP)
    return res


def _grid(a: argparse.Namespace) -> tuple[int, int]:
    from rayhet.profiles import load_profile

    ps = [load_profile(Path(a.profiles) / f) for f in ("h100.json", "cpu16.json")]
    return max(p.input_edges[-1] for p in ps), max(p.output_edges[-1] for p in ps)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--profiles", default=str(HERE.parents[1] / "profiles" / "rayhet-1b"))
    p.add_argument("--rates", default="", help="comma-separated req/s; 'low' and 'high' are LOW_FRAC and "
                   "HIGH_FRAC of the highest rate one h100 + one cpu replica serve by the plan")
    p.add_argument("--low-frac", type=float, default=0.25)
    p.add_argument("--high-frac", type=float, default=0.97)
    p.add_argument("--max-rate", type=float, default=150.0, help="cap on 'high' (the load generator's reach)")
    p.add_argument("--duration", type=float, default=60.0, help="seconds of arrivals per rate")
    p.add_argument("--h100-price", type=float, default=12.29)
    p.add_argument("--vcpu-price", type=float, default=0.0425)
    p.add_argument("--threads", type=int, default=12, help="llama.cpp threads (and vCPUs) of the cpu pool")
    p.add_argument("--cpu-slots", type=int, default=8)
    p.add_argument("--slo-tpot-ms", type=float, default=100.0)
    p.add_argument("--slo-ttft-ms", type=float, default=2000.0)
    p.add_argument("--headroom", type=float, default=0.1)
    p.add_argument("--lmsys", default=str(LMSYS))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--fake", action="store_true")
    p.add_argument("--out", required=True)
    a = p.parse_args()
    import ray

    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=True)
    vocab = 512 if a.fake else json.loads((Path(os.environ["RAYHET_HF"]) / "config.json").read_text())["vocab_size"]
    result = {"machine": "fake" if a.fake else _machine(), "date": time.strftime("%Y-%m-%d"),
              "command": " ".join(sys.argv), "prices": {"h100_per_hour": a.h100_price, "vcpu_per_hour": a.vcpu_price,
                                                         "cpu_pool_per_hour": a.vcpu_price * a.threads},
              "slo": {"tpot_ms": a.slo_tpot_ms, "ttft_ms": a.slo_ttft_ms}, "runs": []}
    out = Path(a.out)
    rates = []
    for tok in filter(None, a.rates.split(",")):
        if tok in ("low", "high"):
            if "max_capped_rate" not in result:
                result["max_capped_rate"] = max_capped_rate(a)
                print(f"highest rate one h100 + one cpu replica serve by the plan: {result['max_capped_rate']:.2f} req/s")
            top = min(result["max_capped_rate"] * a.high_frac, a.max_rate)
            rates.append(round(top if tok == "high" else result["max_capped_rate"] * a.low_frac, 2))
        else:
            rates.append(float(tok))
    for rate in rates:
        result["runs"].append(run_rate(a, rate, vocab))
        out.write_text(json.dumps(result, indent=1) + "\n")
    out.write_text(json.dumps(result, indent=1) + "\n")
    from ray import serve

    serve.shutdown()


def _machine() -> str:
    try:
        gpu = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True,
                             text=True).stdout.strip()
    except OSError:
        gpu = "no GPU"
    return f"{gpu}, {os.cpu_count()} cores"


if __name__ == "__main__":
    main()
