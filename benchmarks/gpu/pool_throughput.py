"""The rayhet vLLM pool's throughput against vLLM's own `LLM.generate`: same model, requests, engine settings.

N LMSYS-sized requests (token-id prompts of exact length, `ignore_eos`, greedy), all at once. Each step runs
in its own process (one engine per GPU) and is appended to `--out` as it ends, so the steps may be split
over several calls on one warm machine, and repeated (the machine is noisy: interleave the peer):

  offline    vLLM's `LLM.generate` on the whole batch (bench_engine.py --mode offline): the peer
  engine     rayhet's VllmEngine driven in-process (bench_engine.py --mode engine)
  serve      an app with one vLLM pool on Ray Serve's default settings, then four measurements:
               http         non-streamed `/v1/completions` through Serve's proxy, the ingress and the pool
                            (the headline: what a client of rayhet gets)
               handle       the pool deployment called straight through a Serve handle (`complete`)
               http_stream  the same requests streamed (`stream: true`)
               http_again   non-streamed again (the first big batch may pay one-off costs)
  serve-opt  the same with RAY_SERVE_THROUGHPUT_OPTIMIZED=1 (Ray Serve's throughput mode, Ray >= 2.56:
             ingress replicas take HTTP themselves, gRPC between replicas, user code on the replica's loop)
  A serve step may name its ingress replicas: `serve:4` (default 1).

    python3 benchmarks/gpu/pool_throughput.py --steps offline,serve,serve:4,offline --out $OUT/pt.json

Each serve measurement is reported against the mean of the offline runs in the same file.
`--fake` runs the serve steps on the FakeEngine (no GPU, no model) to check the script on a laptop.
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

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench_engine import ENGINE, LMSYS, lmsys_requests  # noqa: E402
from run_app import APP, _machine, batch, summarise  # noqa: E402

STEPS = ("offline", "engine", "serve", "serve-opt")
PATHS = ("http", "handle", "http_stream", "http_again")


def app_config(n: int, fake: bool, ingress_replicas: int = 1) -> dict:
    """One pool, one replica, admitting all n requests (batch slots + a queue of n), no controller."""
    settings = ({"n_slots": 256, "tpot_s": 0.01, "max_context": 8192, "max_waiting": 4 * n} if fake else
                {**{k: v for k, v in ENGINE.items() if k != "seed"}, "max_waiting": n})
    pool = {"name": "h100", "engine": "fake" if fake else "vllm", "num_gpus": 0 if fake else 1,
            "num_cpus": 0.1 if fake else 1, "engine_settings": settings, "price_per_hour": 12.29,
            "min_replicas": 1, "max_replicas": 1, "queue_per_replica": n, "max_queued_requests": -1}
    model = {"id": "rayhet-1b"}
    model.update({"gguf": "embedded:tiny"} if fake else {"hf": os.environ["RAYHET_HF"], "tokenizer": os.environ["RAYHET_HF"]})
    return {"model": model, "pools": [pool], "routing": {"predictor": "max_tokens"},
            "server": {"ingress_max_ongoing_requests": 4 * n, "ingress_replicas": ingress_replicas},
            "controller": {"enabled": False}}


async def via_handle(reqs: list[tuple[list[int], int]]) -> tuple[list[dict], float]:
    """Every request straight to the pool deployment (`complete`, one unary call each), at once."""
    from ray import serve

    from rayhet.engines.base import GenerationRequest, SamplingParams
    from rayhet.serve.builder import pool_deployment_name

    h = serve.get_deployment_handle(pool_deployment_name("h100"), app_name=APP)

    async def one(k: int, ids: list[int], o: int) -> dict:
        t = time.monotonic()
        try:
            c = await h.complete.remote(GenerationRequest(
                f"h{k}", prompt_token_ids=ids, sampling=SamplingParams(max_tokens=o, ignore_eos=True, temperature=0)))
            return {"ok": True, "lag_s": 0.0, "e2e_s": time.monotonic() - t, "completion_tokens": c.usage.completion_tokens}
        except Exception as e:  # noqa: BLE001 - a failed request is a data point
            return {"ok": False, "lag_s": 0.0, "error": f"{type(e).__name__}: {e}"[:200]}

    t0 = time.monotonic()
    recs = await asyncio.gather(*(one(k, ids, o) for k, (ids, o) in enumerate(reqs)))
    return list(recs), time.monotonic() - t0


def serve_child(a: argparse.Namespace) -> dict:
    """One app, four measurements (runs in its own process: Serve's mode is fixed when Ray starts)."""
    import ray
    from ray import serve

    from rayhet.app import build

    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
    vocab = 512 if a.fake else json.loads((Path(os.environ["RAYHET_HF"]) / "config.json").read_text())["vocab_size"]
    reqs = lmsys_requests(a.n, a.seed, 8192, vocab, Path(a.lmsys))
    t0 = time.monotonic()
    serve.run(build({"config": app_config(a.n, a.fake, a.ingress_replicas)}), name=APP, route_prefix="/")
    out: dict = {"app_start_s": round(time.monotonic() - t0, 1), "ingress_replicas": a.ingress_replicas,
                 "throughput_optimized": os.environ.get("RAY_SERVE_THROUGHPUT_OPTIMIZED") == "1"}
    print(f"  app up in {out['app_start_s']} s", flush=True)
    url = "http://127.0.0.1:8000/v1/completions"
    asyncio.run(batch(url, reqs[:16]))  # warm-up
    for name, run in (("http", lambda: batch(url, reqs)), ("handle", lambda: via_handle(reqs)),
                      ("http_stream", lambda: batch(url, reqs, stream=True)), ("http_again", lambda: batch(url, reqs))):
        recs, wall = asyncio.run(run())
        out[name] = summarise(recs, wall, 1e9, 1e9)
        print(f"  {name}: {out[name]['output_tokens_per_s']} tok/s, {out[name]['ok']}/{len(recs)} ok, "
              f"errors {out[name]['errors']}", flush=True)
    return out


def wait_gpu_free(limit_s: float = 90.0, below_mib: int = 2048) -> float | None:
    """Wait until the GPU's memory is released by the last step's processes; MiB still used (None: no GPU)."""
    deadline, used = time.monotonic() + limit_s, None
    while True:
        try:
            q = subprocess.run(["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits"],
                               capture_output=True, text=True, timeout=30).stdout.split()
            used = max(int(x) for x in q) if q else None
        except (OSError, ValueError, subprocess.SubprocessError):
            return None
        if used is None or used < below_mib or time.monotonic() > deadline:
            return used
        time.sleep(2)


def run_step(step: str, a: argparse.Namespace, log) -> dict:
    """Run one step (`name` or `serve:K`) in a child process (its output to the log); its JSON result."""
    name, _, k = step.partition(":")
    part = Path(a.out).with_suffix(f".{name}.json")
    part.unlink(missing_ok=True)
    env = dict(os.environ)
    if name in ("offline", "engine"):
        cmd = [sys.executable, str(HERE / "bench_engine.py"), "--mode", step, "--n", str(a.n), "--seed", str(a.seed),
               "--model", os.environ["RAYHET_HF"], "--out", str(part)]
    else:
        env["RAY_SERVE_THROUGHPUT_OPTIMIZED"] = "1" if name == "serve-opt" else "0"
        cmd = [sys.executable, __file__, "--child", "--n", str(a.n), "--seed", str(a.seed), "--lmsys", a.lmsys,
               "--ingress-replicas", k or "1", "--out", str(part)] + (["--fake"] if a.fake else [])
    t0 = time.monotonic()
    try:
        p = subprocess.run(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, timeout=a.step_timeout)
        rc = p.returncode
    except subprocess.TimeoutExpired:
        rc = "timeout"
    res = json.loads(part.read_text()) if part.exists() else {"error": f"no result (exit {rc}); see the log"}
    res["step"], res["at"] = step, time.strftime("%H:%M:%S")
    res["step_wall_s"] = round(time.monotonic() - t0, 1)
    if not a.fake:
        res["gpu_mib_used_after"] = wait_gpu_free()
    return res


def ratios(runs: list[dict]) -> dict:
    """Output tokens/s of each serve measurement and of the engine over the mean of the offline runs (the peer)."""
    base = [r["output_tokens_per_s"] for r in runs if r.get("step") == "offline" and "output_tokens_per_s" in r]
    if not base:
        return {}
    mean = sum(base) / len(base)
    out: dict = {"llm_generate_tok_s": [round(b, 1) for b in base], "llm_generate_mean": round(mean, 1)}
    for k, r in enumerate(runs):
        tag = f"{k}:{r.get('step')}"
        if r.get("step") == "engine" and "output_tokens_per_s" in r:
            out[tag] = round(r["output_tokens_per_s"] / mean, 4)
        for path in PATHS:
            v = r.get(path, {}).get("output_tokens_per_s")
            if v:
                out[f"{tag}/{path}"] = round(v / mean, 4)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", default=",".join(STEPS), help=f"comma-separated, of {', '.join(STEPS)}")
    p.add_argument("--n", type=int, default=1000, help="requests (LMSYS sizes), all at once")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--lmsys", default=str(LMSYS))
    p.add_argument("--step-timeout", type=float, default=280.0, help="seconds each step may run")
    p.add_argument("--fake", action="store_true")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--ingress-replicas", type=int, default=1, help=argparse.SUPPRESS)
    p.add_argument("--out", required=True, help="JSON file; steps already in it are kept")
    a = p.parse_args()
    if a.child:
        Path(a.out).write_text(json.dumps(serve_child(a), indent=1) + "\n")
        from ray import serve

        try:  # the result is written; in throughput mode the driver's handles may be bound to a closed loop
            serve.shutdown()
        except RuntimeError as e:
            print(f"serve.shutdown: {e}", flush=True)
        return
    steps = [s for s in a.steps.split(",") if s]
    if bad := [s for s in steps if s.partition(":")[0] not in STEPS or (s.partition(":")[2] and not
                                                                         s.startswith("serve"))]:
        p.error(f"unknown steps {bad}; choose from {STEPS}")
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    result = json.loads(out.read_text()) if out.exists() else {}
    result.update(machine="fake" if a.fake else _machine(), date=time.strftime("%Y-%m-%d"), requests=a.n,
                  engine_settings=ENGINE)
    result.setdefault("commands", []).append(" ".join(sys.argv))
    with open(out.with_suffix(".log"), "a") as log:
        for step in steps:
            if a.fake and step in ("offline", "engine"):
                continue
            print(f"{step} ...", flush=True)
            result.setdefault("runs", []).append(run_step(step, a, log))
            result["vs_llm_generate"] = ratios(result["runs"])
            out.write_text(json.dumps(result, indent=1) + "\n")
            print(f"{step}: {json.dumps(result['runs'][-1])[:400]}", flush=True)
    print(json.dumps({"vs_llm_generate": result["vs_llm_generate"]}), flush=True)


if __name__ == "__main__":
    main()
