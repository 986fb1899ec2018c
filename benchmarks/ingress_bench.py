"""Ingress overhead: rayhet's ingress against a bare Ray Serve FastAPI deployment forwarding to the same pool.

Both ingresses send to the same pool deployment (one replica of the FakeEngine test double, which answers
at once), so the difference is what rayhet's ingress adds: auth, body checks, validation, exact token
counting, routing, traffic recording, OpenAI response bodies. One run, in one Ray instance:

  1. latency: `--sequential` requests one at a time, alternating rayhet / bare; p50 / p99 of each and the
     difference (rayhet - bare) = added latency;
  2. throughput: `--concurrency` closed-loop clients for `--seconds` against each, alternating twice;
     the best req/s of each.

    python benchmarks/ingress_bench.py --out benchmarks/results/ingress
"""

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from fastapi import FastAPI, Request  # no `from __future__ import annotations` here: FastAPI must see the class
from fastapi.responses import JSONResponse

BODY = {"model": "fake", "prompt": "The quick brown fox jumps over the lazy dog. " * 4, "max_tokens": 16}


def bare_ingress_class():
    """A minimal FastAPI ingress: parse JSON, forward the prompt to the pool, return text (no checks).

    Its app is built in the replica (`__serve_build_asgi_app__`, as rayhet's ingress does): with FastAPI
    0.165 and Ray 2.60, `@serve.ingress(app)` on an app made inside a function fails to pickle (RecursionError).
    """
    from ray import serve

    from rayhet.engines.base import GenerationRequest, SamplingParams

    class Bare:
        def __init__(self, app_name: str):
            self.pool = serve.get_deployment_handle("pool-fake", app_name).options(stream=True)
            self.n = 0

        def __serve_build_asgi_app__(self):
            api = FastAPI()

            @api.post("/v1/completions")
            async def completions(request: Request):
                body = await request.json()
                self.n += 1
                req = GenerationRequest(request_id=str(self.n), prompt=body["prompt"],
                                        sampling=SamplingParams(max_tokens=body["max_tokens"]))
                text, usage = [], None
                async for d in self.pool.generate.remote(req):
                    text.append(d.text)
                    usage = d.usage or usage
                return JSONResponse({"choices": [{"text": "".join(text)}],
                                     "usage": {"prompt_tokens": usage.prompt_tokens,
                                               "completion_tokens": usage.completion_tokens}})

            return api

    return serve.deployment(serve.ingress()(Bare), name="bare", max_ongoing_requests=1000,
                            ray_actor_options={"num_cpus": 0})


async def sequential(client, urls: dict[str, str], n: int) -> dict[str, list[float]]:
    lat: dict[str, list[float]] = {k: [] for k in urls}
    for _ in range(n):
        for name, url in urls.items():
            t = time.perf_counter()
            r = await client.post(url, json=BODY)
            lat[name].append((time.perf_counter() - t) * 1000)
            assert r.status_code == 200, r.text
    return lat


async def closed_loop(client, url: str, concurrency: int, seconds: float) -> tuple[float, int]:
    done, errors = 0, 0
    stop = time.perf_counter() + seconds

    async def worker():
        nonlocal done, errors
        while time.perf_counter() < stop:
            r = await client.post(url, json=BODY)
            if r.status_code == 200:
                done += 1
            else:
                errors += 1

    t = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return done / (time.perf_counter() - t), errors


def pct(values: list[float], q: float) -> float:
    v = sorted(values)
    return v[min(len(v) - 1, int(q * len(v)))]


async def measure(base: str, args) -> dict:
    import httpx

    urls = {"rayhet": f"{base}/rayhet/v1/completions", "bare": f"{base}/bare/v1/completions"}
    limits = httpx.Limits(max_connections=args.concurrency + 4, max_keepalive_connections=args.concurrency + 4)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:
        await sequential(client, urls, 50)  # warm up both paths
        lat = await sequential(client, urls, args.sequential)
        tput: dict[str, list[float]] = {k: [] for k in urls}
        errs = 0
        for _ in range(2):
            for name, url in urls.items():
                rps, e = await closed_loop(client, url, args.concurrency, args.seconds)
                tput[name].append(rps)
                errs += e
    res = {k: {"p50_ms": round(pct(v, 0.5), 3), "p99_ms": round(pct(v, 0.99), 3),
               "mean_ms": round(statistics.fmean(v), 3), "max_rps": round(max(tput[k]), 1),
               "rps_runs": [round(x, 1) for x in tput[k]]} for k, v in lat.items()}
    res["added_p50_ms"] = round(res["rayhet"]["p50_ms"] - res["bare"]["p50_ms"], 3)
    res["added_p99_ms"] = round(res["rayhet"]["p99_ms"] - res["bare"]["p99_ms"], 3)
    res["throughput_ratio"] = round(res["rayhet"]["max_rps"] / res["bare"]["max_rps"], 3)
    res["errors"] = errs
    return res


def run_meta(command: str, **extra) -> dict:
    """When, at which commit, on what machine, by which command: every result file's header."""
    from rayhet.profiling.report import cpu_model

    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    return {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "commit": commit,
            "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {cpu_model()}", "command": command, **extra}


LONG_CHARS = 100_000  # a long prompt: ~50-100 ms of llama.cpp tokenization on a 2-vCPU host


async def long_prompt_stall(base: str, apps: list[str], args) -> dict:
    """Short requests' latency while other clients send long prompts back to back, per app, alternating:
    what a long prompt's tokenization on the event loop costs everyone else."""
    import httpx

    long_body = {**BODY, "prompt": ("The quick brown fox jumps over the lazy dog. " * 3000)[:LONG_CHARS]}
    out: dict[str, dict] = {a: {"short_ms": [], "long_done": 0, "seconds": 0.0} for a in apps}
    async with httpx.AsyncClient(timeout=120) as client:
        for a in apps:  # warm up
            await client.post(f"{base}/{a}/v1/completions", json=long_body)
        for _ in range(2):
            for a in apps:
                url = f"{base}/{a}/v1/completions"
                stop = False

                async def hammer():
                    while not stop:
                        r = await client.post(url, json=long_body)
                        assert r.status_code == 200, r.text
                        out[a]["long_done"] += 1

                t_phase = time.perf_counter()
                bg = [asyncio.ensure_future(hammer()) for _ in range(args.long_clients)]
                await asyncio.sleep(0.5)
                for _ in range(args.sequential // 2):
                    t = time.perf_counter()
                    r = await client.post(url, json=BODY)
                    out[a]["short_ms"].append((time.perf_counter() - t) * 1000)
                    assert r.status_code == 200, r.text
                stop = True
                await asyncio.gather(*bg)
                out[a]["seconds"] += time.perf_counter() - t_phase
    return {a: {"short_p50_ms": round(pct(v["short_ms"], 0.5), 2), "short_p99_ms": round(pct(v["short_ms"], 0.99), 2),
                "short_mean_ms": round(statistics.fmean(v["short_ms"]), 2), "long_requests": v["long_done"],
                "long_per_s": round(v["long_done"] / v["seconds"], 2)}
            for a, v in out.items()}


def main_long_prompts(args) -> int:
    import ray
    from ray import serve

    from rayhet.app import build
    from rayhet.models import cached_gguf

    port = 8765
    ray.init(num_cpus=4, logging_level="warning", log_to_driver=False, include_dashboard=False)
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    tok = str(cached_gguf("120m", dtype="f16"))
    apps = {"inline": 10**9, "threads": None}  # every prompt on the loop (before) / the default (after)
    try:
        for name, inline in apps.items():
            server = {"ingress_num_cpus": 0, **({"tokenize_inline_chars": inline} if inline else {})}
            config = {"model": {"id": "fake", "tokenizer": tok},
                      "pools": [{"name": "fake", "engine": "fake", "num_cpus": 0, "max_queued_requests": -1,
                                 "engine_settings": {"n_slots": 256, "max_waiting": 1024, "max_context": 131072}}],
                      "server": server}
            serve.run(build({"config": config}), name=name, route_prefix=f"/{name}")
        res = asyncio.run(long_prompt_stall(f"http://127.0.0.1:{port}", list(apps), args))
    finally:
        serve.shutdown()
        ray.shutdown()
    meta = run_meta("python " + " ".join(sys.argv), long_chars=LONG_CHARS, long_clients=args.long_clients,
                    short_requests=args.sequential, tokenizer="rayhet-120m GGUF (llama.cpp)")
    commit = meta["commit"]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out + ".json").write_text(json.dumps({"meta": meta, "results": res}, indent=1) + "\n")
    md = [f"# Long prompts and everyone else's latency ({meta['date']}, commit {commit})", "",
          f"Machine: {meta['machine']}. Command: `{meta['command']}`.",
          f"{args.long_clients} clients send {LONG_CHARS:,}-character prompts back to back while one client sends "
          f"{args.sequential // 2} short requests at a time, per app, twice, alternating; FakeEngine pool; the ingress "
          "tokenizes with the 120M model's llama.cpp vocabulary.", "",
          "| ingress | short p50 ms | short p99 ms | long prompts served per second |", "|---|---|---|---|"]
    for a, label in (("inline", "every prompt tokenized on the event loop (before)"),
                     ("threads", "long prompts in the thread pool (after, the default)")):
        md.append(f"| {label} | {res[a]['short_p50_ms']} | {res[a]['short_p99_ms']} | {res[a]['long_per_s']} |")
    Path(args.out + ".md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sequential", type=int, default=300, help="sequential requests per ingress (latency)")
    ap.add_argument("--concurrency", type=int, default=16, help="closed-loop clients (throughput)")
    ap.add_argument("--seconds", type=float, default=8.0, help="seconds per throughput run")
    ap.add_argument("--out", default="benchmarks/results/ingress", help="output path without extension")
    ap.add_argument("--long-prompts", action="store_true",
                    help="instead: short requests' latency while other clients send long prompts, with every prompt "
                         "tokenized on the event loop against long ones in the thread pool")
    ap.add_argument("--long-clients", type=int, default=2)
    args = ap.parse_args(argv)
    if args.long_prompts:
        return main_long_prompts(args)

    import ray
    from ray import serve

    from rayhet.app import build

    port = 8765
    ray.init(num_cpus=4, logging_level="warning", log_to_driver=False, include_dashboard=False)
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    config = {"model": {"id": "fake"},
              "pools": [{"name": "fake", "engine": "fake", "num_cpus": 0,
                         "engine_settings": {"n_slots": 256, "max_waiting": 1024}, "max_queued_requests": -1}],
              "server": {"ingress_num_cpus": 0}}
    try:
        serve.run(build({"config": config}), name="rayhet", route_prefix="/rayhet")
        serve.run(bare_ingress_class().bind("rayhet"), name="bare", route_prefix="/bare")
        res = asyncio.run(measure(f"http://127.0.0.1:{port}", args))
    finally:
        serve.shutdown()
        ray.shutdown()

    meta = run_meta("python " + " ".join([sys.argv[0]] + (argv if argv is not None else sys.argv[1:])),
                    python=platform.python_version(), ray=ray.__version__, body=BODY, sequential=args.sequential,
                    concurrency=args.concurrency, seconds=args.seconds)
    commit = meta["commit"]
    out = {"meta": meta, "results": res}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out + ".json").write_text(json.dumps(out, indent=1) + "\n")
    r, b = res["rayhet"], res["bare"]
    md = [
        f"# Ingress overhead ({meta['date']}, commit {commit})", "",
        f"Machine: {meta['machine']}; Python {meta['python']}, Ray {meta['ray']}. Command: `{meta['command']}`.",
        f"FakeEngine pool (answers at once), 16 output tokens, non-streaming. Latency: {args.sequential} sequential "
        f"requests per ingress, alternating; throughput: {args.concurrency} closed-loop clients, "
        f"{args.seconds:.0f} s per run, best of 2.", "",
        "| ingress | p50 ms | p99 ms | max req/s |", "|---|---|---|---|",
        f"| bare Serve FastAPI | {b['p50_ms']} | {b['p99_ms']} | {b['max_rps']} |",
        f"| rayhet | {r['p50_ms']} | {r['p99_ms']} | {r['max_rps']} |",
        f"| **rayhet - bare** | **{res['added_p50_ms']:+}** | **{res['added_p99_ms']:+}** | "
        f"**{res['throughput_ratio']:.0%} of bare** |", "",
        "Targets: < 2 ms added at p50; >= 90% of the bare throughput.",
    ]
    Path(args.out + ".md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
