"""Serve path: tokens/s of a FakeEngine pool through HTTP -> ingress -> pool, against the same engine in-process.

The FakeEngine is made fast (`--tokens-per-step` tokens every `--step-s` for each of `--concurrency`
requests at once, as vLLM's stream_interval sends them), so Ray Serve, not the engine, is the limit. In one
run, closed-loop for `--seconds` each:
  1. direct: `--concurrency` requests at a time on a FakeEngine in this process (the engine's own rate);
  2. HTTP non-streamed `/v1/completions` with `--concurrency` clients;
  3. HTTP streamed (`stream: true`), same;
and (2, 3) once per `--access-log` setting (pool and ingress replicas' Serve access logs on / off).
Ratio = HTTP tokens/s over direct tokens/s.

    flock /tmp/rayhet-heavy.lock python benchmarks/serve_path_bench.py --label after --out /tmp/after.json

To measure an older serving path, run the same script with that commit first on the path (a
`git worktree` at /tmp/old, with this FakeEngine copied in: it is the test double, not the path measured):
    cd /tmp/old && PYTHONPATH=/tmp/old python /work/main/benchmarks/serve_path_bench.py --label before ...
"""

import argparse
import asyncio
import json
import os
import platform
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

PROMPT = "The quick brown fox jumps over the lazy dog. " * 2  # 90 byte-tokens


def engine_settings(args) -> dict:
    return {"n_slots": args.concurrency, "max_waiting": 4 * args.concurrency, "tpot_s": args.step_s,
            "tokens_per_step": args.tokens_per_step}


async def closed_loop(one, concurrency: int, seconds: float) -> dict:
    """`concurrency` workers calling `one()` (-> tokens) until `seconds` are up; tokens/s and requests/s."""
    tokens, done, errors = 0, 0, 0
    stop = time.perf_counter() + seconds

    async def worker():
        nonlocal tokens, done, errors
        while time.perf_counter() < stop:
            try:
                n = await one()  # (not `tokens += await one()`: that reads `tokens` before awaiting)
                tokens += n
                done += 1
            except Exception:  # noqa: BLE001 - counted; a benchmark keeps going
                errors += 1

    t = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    dt = time.perf_counter() - t
    return {"tokens_per_s": round(tokens / dt, 1), "requests_per_s": round(done / dt, 1), "requests": done,
            "errors": errors, "seconds": round(dt, 2)}


async def direct(args) -> dict:
    from rayhet.engines.base import GenerationRequest, SamplingParams
    from rayhet.testing.fake_engine import FakeEngine, FakeEngineSettings

    engine = FakeEngine(FakeEngineSettings(**engine_settings(args)))
    await engine.start()
    n = [0]

    async def one() -> int:
        n[0] += 1
        req = GenerationRequest(request_id=str(n[0]), prompt=PROMPT, sampling=SamplingParams(max_tokens=args.max_tokens))
        out = 0
        async for d in engine.generate(req):
            out += len(d.token_ids)
        return out

    await closed_loop(one, args.concurrency, 1.0)
    return await closed_loop(one, args.concurrency, args.seconds)


async def http(url: str, args, stream: bool) -> dict:
    import aiohttp

    body = {"model": "fake", "prompt": PROMPT, "max_tokens": args.max_tokens, "stream": stream}
    if stream:
        body["stream_options"] = {"include_usage": True}
    conn = aiohttp.TCPConnector(limit=args.concurrency + 8)
    async with aiohttp.ClientSession(connector=conn, timeout=aiohttp.ClientTimeout(total=120)) as session:

        async def one() -> int:
            async with session.post(url, json=body) as r:
                if r.status != 200:
                    raise RuntimeError(f"HTTP {r.status}: {await r.text()}")
                if not stream:
                    return (await r.json())["usage"]["completion_tokens"]
                n = 0
                async for line in r.content:
                    if line.startswith(b"data: {") and b'"usage": {' in line:
                        n = json.loads(line[6:])["usage"]["completion_tokens"]
                return n

        await closed_loop(one, args.concurrency, 2.0)  # warm up: replicas, connections
        return await closed_loop(one, args.concurrency, args.seconds)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--concurrency", type=int, default=256, help="requests in flight (clients)")
    ap.add_argument("--max-tokens", type=int, default=256, help="output tokens per request")
    ap.add_argument("--tokens-per-step", type=int, default=16, help="FakeEngine tokens per step (= per delta)")
    ap.add_argument("--step-s", type=float, default=0.02, help="FakeEngine seconds per step")
    ap.add_argument("--seconds", type=float, default=10.0, help="seconds per measurement")
    ap.add_argument("--access-log", choices=["on", "off", "both", "serve-default"], default="both",
                    help="Serve access logs on pool and ingress replicas (serve-default: a config without the knob)")
    ap.add_argument("--label", default="after", help="name of this serving path in the results")
    ap.add_argument("--out", required=True, help="JSON file to write")
    args = ap.parse_args(argv)

    import ray
    from ray import serve

    import rayhet
    from rayhet.app import build
    from rayhet.profiling.report import cpu_model
    from rayhet.serve.pool import PoolServer

    unary = hasattr(PoolServer, "complete")
    print(f"rayhet from {Path(rayhet.__file__).parent}; unary non-streamed path: {unary}", flush=True)
    res: dict = {"direct": asyncio.run(direct(args))}
    print("direct", res["direct"], flush=True)

    port = 8766
    ray.init(num_cpus=8, logging_level="warning", log_to_driver=False, include_dashboard=False)
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    settings = ["on", "off"] if args.access_log == "both" else [args.access_log]
    try:
        for log_setting in settings:
            pool = {"name": "fake", "engine": "fake", "num_cpus": 0, "engine_settings": engine_settings(args),
                    "max_queued_requests": -1, "initial_replicas": 1}
            server = {"ingress_num_cpus": 0, "ingress_max_ongoing_requests": 4 * args.concurrency}
            if log_setting != "serve-default":
                pool["access_log"] = server["access_log"] = log_setting == "on"
            config = {"model": {"id": "fake"}, "pools": [pool], "server": server}
            serve.run(build({"config": config}), name="rayhet", route_prefix="/")
            url = f"http://127.0.0.1:{port}/v1/completions"
            for stream in (False, True):
                key = f"http_{'stream' if stream else 'unary'}_log_{log_setting}"
                r = asyncio.run(http(url, args, stream))
                r["ratio_to_direct"] = round(r["tokens_per_s"] / res["direct"]["tokens_per_s"], 3)
                res[key] = r
                print(key, r, flush=True)
            serve.delete("rayhet")
    finally:
        serve.shutdown()
        ray.shutdown()

    here = Path(rayhet.__file__).resolve().parent.parent
    commit = subprocess.run(["git", "-C", str(here), "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    dirty = bool(subprocess.run(["git", "-C", str(here), "status", "--porcelain", "rayhet"], capture_output=True,
                                text=True).stdout.strip())
    meta = {"label": args.label, "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "commit": commit + ("+uncommitted" if dirty else ""), "rayhet_path": str(here),
            "unary_nonstreamed_path": unary,
            "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {cpu_model()}",
            "python": platform.python_version(), "ray": ray.__version__,
            "command": "python " + " ".join([sys.argv[0]] + (argv if argv is not None else sys.argv[1:])),
            **{k: getattr(args, k) for k in ("concurrency", "max_tokens", "tokens_per_step", "step_s", "seconds")}}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"meta": meta, "results": res}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
