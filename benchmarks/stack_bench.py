"""HTTP stack capacity: how many streamed requests per second Serve's proxy + rayhet's ingress carry, with one
or more ingress replicas, when the engine is never the limit.

Why: on the GPU machine's compressed day (benchmarks/results/day-h200-real-2.md) the H200 engine never had a
request waiting, yet 17 % of requests were refused: one ingress replica (1.6 cores) and Serve's proxy (1.0
core) fell behind at ~50 streamed req/s. This measures that ceiling without a GPU: a FakeEngine pool shaped like
the day's traffic (token-id prompts, `--output-tokens` streamed, `--tokens-per-step` tokens per delta as vLLM's
stream_interval, one step every `--step-s`) with more slots than requests in flight, so any queueing is the
stack's. For each ingress replica count, an open loop of Poisson arrivals at each `--rates` for `--seconds`:
requests ok per s, refused, TTFT p50/p90 at the client, and the cores each process used (rayhet.procstat).

    python benchmarks/stack_bench.py --replicas 1 4 --rates 20 40 80 120 --out /tmp/stack.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from rayhet.procstat import cpu_share, cpu_times  # noqa: E402


def _pct(ordered: list[float], p: float) -> float | None:
    """The p-quantile of sorted values (None for none)."""
    return round(ordered[min(len(ordered) - 1, int(p * len(ordered)))], 4) if ordered else None


async def open_loop(url: str, rate: float, seconds: float, args, seed: int) -> dict:
    import aiohttp

    rng = random.Random(seed)
    ok, refused, failed, ttft, late, refusal_s = 0, 0, 0, [], [], []

    async def one(session) -> None:
        nonlocal ok, refused, failed
        body = {"model": "fake", "prompt": [rng.randrange(1, 250) for _ in range(args.input_tokens)],
                "max_tokens": args.output_tokens, "ignore_eos": True, "stream": True,
                "stream_options": {"include_usage": True}}
        t0 = time.perf_counter()
        first = None
        try:
            async with session.post(url, json=body) as r:
                if r.status in (429, 503):
                    refused += 1
                    await r.read()
                    refusal_s.append(time.perf_counter() - t0)
                    return
                if r.status != 200:
                    failed += 1
                    await r.read()
                    return
                async for line in r.content:
                    if first is None and line.startswith(b"data: {"):
                        first = time.perf_counter() - t0
            ok += 1
            ttft.append(first if first is not None else float("nan"))
        except Exception:  # noqa: BLE001 - counted: a benchmark keeps going
            failed += 1

    conn = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=conn, timeout=aiohttp.ClientTimeout(total=300)) as session:
        tasks = []
        start = time.perf_counter()
        due = start
        look = cpu_times()
        while due < start + seconds:
            due += rng.expovariate(rate)
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
            late.append(time.perf_counter() - due)
            tasks.append(asyncio.create_task(one(session)))
        busy = cpu_share(look, cpu_times(), time.perf_counter() - start)
        await asyncio.gather(*tasks)
    t = sorted(x for x in ttft if x == x)
    late.sort()
    refusal_s.sort()
    return {"offered_rate": rate, "sent": len(tasks), "ok": ok, "refused": refused, "failed": failed,
            "refusal_p50_s": _pct(refusal_s, 0.5), "refusal_p99_s": _pct(refusal_s, 0.99),
            "ok_per_s": round(ok / seconds, 2), "ttft_p50_s": _pct(t, 0.5), "ttft_p90_s": _pct(t, 0.9),
            "client_late_p99_s": round(late[int(0.99 * (len(late) - 1))], 4) if late else None,
            "cores": {k: round(v, 2) for k, v in sorted(busy.items(), key=lambda kv: -kv[1])[:6]}}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--replicas", type=int, nargs="+", default=[1, 2], help="ingress replica counts to measure")
    ap.add_argument("--rates", type=float, nargs="+", default=[10, 20, 40], help="offered req/s, in order")
    ap.add_argument("--seconds", type=float, default=20.0, help="arrivals per rate")
    ap.add_argument("--input-tokens", type=int, default=1000, help="token-id prompt length (the day's mean ~1k)")
    ap.add_argument("--output-tokens", type=int, default=200, help="streamed output tokens (the day's mean ~200)")
    ap.add_argument("--tokens-per-step", type=int, default=16, help="tokens per delta (vLLM's stream_interval)")
    ap.add_argument("--step-s", type=float, default=0.19, help="seconds per delta (16 tokens at ~12 ms TPOT)")
    ap.add_argument("--num-cpus", type=int, default=None, help="Ray's CPUs (default: this machine's)")
    ap.add_argument("--shed-lag-ms", default="default",
                    help="server.shed_lag_ms: a number, 'none' (never shed) or 'default' (the config's default)")
    ap.add_argument("--out", required=True, help="JSON file to write")
    args = ap.parse_args(argv)

    import ray
    from ray import serve

    from rayhet.app import build

    port = 8767
    ray.init(num_cpus=args.num_cpus, logging_level="warning", log_to_driver=False, include_dashboard=False)
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    slots = 4096  # never the limit
    results = []
    try:
        for n in args.replicas:
            pool = {"name": "fake", "engine": "fake", "num_cpus": 0, "initial_replicas": 1, "max_queued_requests": -1,
                    "engine_settings": {"n_slots": slots, "max_waiting": slots, "tpot_s": args.step_s,
                                        "tokens_per_step": args.tokens_per_step, "max_context": 8192}}
            config = {"model": {"id": "fake"}, "pools": [pool],
                      "server": {"ingress_num_cpus": 0, "ingress_replicas": n,
                                 **({} if args.shed_lag_ms == "default" else
                                    {"shed_lag_ms": None if args.shed_lag_ms == "none" else float(args.shed_lag_ms)})}}
            serve.run(build({"config": config}), name="rayhet", route_prefix="/")
            url = f"http://127.0.0.1:{port}/v1/completions"
            asyncio.run(open_loop(url, 2.0, 3.0, args, seed=0))  # warm up
            for i, rate in enumerate(args.rates):
                r = {"ingress_replicas": n, **asyncio.run(open_loop(url, rate, args.seconds, args, seed=i + 1))}
                print(json.dumps(r), flush=True)
                results.append(r)
            serve.delete("rayhet")
    finally:
        serve.shutdown()
        ray.shutdown()
    meta = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "machine": f"{platform.node()}, {os.cpu_count()} CPUs", "python": platform.python_version(),
            "ray": ray.__version__, "throughput_optimized": os.environ.get("RAY_SERVE_THROUGHPUT_OPTIMIZED", "0"),
            "command": "python " + " ".join([sys.argv[0]] + (argv if argv is not None else sys.argv[1:])),
            **{k: getattr(args, k) for k in ("seconds", "input_tokens", "output_tokens", "tokens_per_step", "step_s",
                                             "shed_lag_ms")}}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"meta": meta, "results": results}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
