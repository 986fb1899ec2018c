"""Engine benchmark: rayhet's LlamaCppEngine against `python -m llama_cpp.server` on the same GGUF.

Output tokens/s and mean TPOT at several concurrent streams, both engines on the same model, threads and
machine, in one run: 128-token prompts (distinct, so the server's prefix cache cannot skip prefill),
128-token outputs forced (rayhet: ignore_eos; the server: its `min_tokens`), greedy.

    flock /tmp/rayhet-heavy.lock python benchmarks/engine_bench.py          # ~120M f16 model, made on demand
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import itertools
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from rayhet.engines.base import GenerationRequest, SamplingParams
from rayhet.engines.llama_cpp import LlamaCppEngine, LlamaCppSettings
from rayhet.profiling.report import cpu_model
from rayhet.testing.models import cached_gguf

LETTERS = "abcdefghijklmnopqrstuvwxyz"


_sent = itertools.count()


def prompt(n_tokens: int) -> str:
    """n_tokens (BOS included), never the same twice in a run (so no prefix cache skips a prefill)."""
    i = next(_sent)
    return f" {LETTERS[i % 26]} {LETTERS[i // 26 % 26]}" + " a" * (n_tokens - 3)


def summarize(name: str, streams: int, wall: float, runs: list[tuple[float, list[float]]]) -> dict:
    """runs: per request (start time, arrival time of each output token)."""
    tokens = sum(len(t) for _, t in runs)
    tpots = [(t[-1] - t[0]) / (len(t) - 1) for _, t in runs if len(t) > 1]
    return {"engine": name, "streams": streams, "output_tokens": tokens, "wall_s": round(wall, 3),
            "tokens_per_s": round(tokens / wall, 2), "mean_tpot_ms": round(1e3 * statistics.mean(tpots), 2),
            "mean_ttft_ms": round(1e3 * statistics.mean(t[0] - s for s, t in runs), 1)}


class Rayhet:
    """rayhet's engine, in this process (no HTTP in between)."""

    name = "rayhet"

    def __init__(self, model: Path, args):
        self.args = args
        self.engine = LlamaCppEngine(LlamaCppSettings(
            model_path=str(model), n_ctx=args.prompt_tokens + args.output_tokens, n_slots=max(args.streams),
            n_threads=args.threads, n_batch=args.n_batch, kv_unified=args.kv_unified))

    async def __aenter__(self):
        await self.engine.start()
        return self

    async def __aexit__(self, *exc):
        await self.engine.shutdown()

    async def one(self, i: int, max_tokens: int) -> tuple[float, list[float]]:
        start, times = time.monotonic(), []
        r = GenerationRequest(f"r{i}", prompt=prompt(self.args.prompt_tokens),
                              sampling=SamplingParams(max_tokens=max_tokens, temperature=0.0, ignore_eos=True))
        async for d in self.engine.generate(r):
            times.extend([time.monotonic()] * len(d.token_ids))
        return start, times


class Server:
    """`python -m llama_cpp.server` in a subprocess, driven over HTTP with streaming completions."""

    name = "llama_cpp.server"

    def __init__(self, model: Path, args):
        self.args = args
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(model), "--host", "127.0.0.1",
                    "--port", str(self.port), "--n_ctx", str(args.prompt_tokens + args.output_tokens),
                    "--n_threads", str(args.threads), "--n_threads_batch", str(args.threads),
                    "--n_batch", str(args.n_batch), "--verbose", "false",
                    "--interrupt_requests", "false"]  # default: a new request cuts the streaming one off

    async def __aenter__(self):
        log = open(Path(tempfile.gettempdir()) / "rayhet-engine-bench-server.log", "w")  # for failures
        self.proc = subprocess.Popen(self.cmd, stdout=log, stderr=subprocess.STDOUT)
        self.client = httpx.AsyncClient(base_url=f"http://127.0.0.1:{self.port}", timeout=600)
        deadline = time.monotonic() + 120
        while True:
            try:
                if (await self.client.get("/v1/models")).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError(f"llama_cpp.server did not come up: {' '.join(self.cmd)}")
            await asyncio.sleep(0.2)

    async def __aexit__(self, *exc):
        await self.client.aclose()
        self.proc.terminate()
        self.proc.wait(timeout=30)

    async def one(self, i: int, max_tokens: int) -> tuple[float, list[float]]:
        start, times = time.monotonic(), []
        body = {"prompt": prompt(self.args.prompt_tokens), "max_tokens": max_tokens,
                "min_tokens": max_tokens, "temperature": 0.0, "stream": True}
        async with self.client.stream("POST", "/v1/completions", json=body) as resp:
            resp.raise_for_status()
            async for line in resp.aiter_lines():
                if line.startswith("data: ") and line != "data: [DONE]":
                    if json.loads(line[6:])["choices"][0].get("finish_reason") is None:
                        times.append(time.monotonic())
        return start, times


async def run_all(model: Path, args) -> list[dict]:
    """Both engines up at once (each idle while the other runs), measured in turns at each concurrency,
    so that a drift in the machine's load touches both alike; each measurement `--repeat` times."""
    rows = []
    async with Rayhet(model, args) as a, Server(model, args) as b:
        for e in (a, b):
            await e.one(999, 8)  # warm-up
        for c in args.streams:
            for rep in range(args.repeat):
                for e in (a, b):
                    t0 = time.monotonic()
                    runs = await asyncio.gather(*(e.one(i, args.output_tokens) for i in range(c)))
                    rows.append({**summarize(e.name, c, time.monotonic() - t0, runs), "repeat": rep})
                    print(rows[-1], flush=True)
    return rows


def best(rows: list[dict]) -> list[dict]:
    """Per engine and concurrency, the run with the highest throughput (other jobs share this machine)."""
    top: dict[tuple, dict] = {}
    for r in rows:
        k = (r["engine"], r["streams"])
        if k not in top or r["tokens_per_s"] > top[k]["tokens_per_s"]:
            top[k] = r
    return list(top.values())


def table(rows: list[dict], streams: list[int]) -> str:
    by = {(r["engine"], r["streams"]): r for r in rows}
    out = ["| streams | rayhet tok/s | server tok/s | throughput ratio | rayhet TPOT ms | server TPOT ms |",
           "|---:|---:|---:|---:|---:|---:|"]
    for c in streams:
        a, b = by[("rayhet", c)], by[("llama_cpp.server", c)]
        out.append(f"| {c} | {a['tokens_per_s']:.1f} | {b['tokens_per_s']:.1f} | "
                   f"{a['tokens_per_s'] / b['tokens_per_s']:.2f}x | {a['mean_tpot_ms']:.1f} | {b['mean_tpot_ms']:.1f} |")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="120m", help="test model size (rayhet.testing.models.SIZES)")
    ap.add_argument("--dtype", default="f16", choices=["f32", "f16", "bf16", "q8_0"])
    ap.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    ap.add_argument("--streams", type=lambda s: [int(x) for x in s.split(",")], default=[1, 4, 8, 16])
    ap.add_argument("--prompt-tokens", type=int, default=128)
    ap.add_argument("--output-tokens", type=int, default=128)
    ap.add_argument("--n-batch", type=int, default=256)
    ap.add_argument("--repeat", type=int, default=2, help="runs per engine and concurrency; the best is kept")
    ap.add_argument("--kv-unified", action="store_true", help="rayhet: one KV stream for all slots")
    ap.add_argument("--out", default="benchmarks/results/engine", help="writes OUT.json and OUT.md")
    args = ap.parse_args()

    t = time.monotonic()
    model = cached_gguf(args.size, dtype=args.dtype)
    print(f"model {model} ({model.stat().st_size / 2**20:.0f} MiB, ready in {time.monotonic() - t:.1f} s)", flush=True)
    all_rows = asyncio.run(run_all(model, args))
    rows = best(all_rows)
    import llama_cpp

    meta = {"date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "machine": f"{platform.machine()}, {cpu_model()}, {os.cpu_count()} CPUs visible",
            "command": "python " + " ".join(sys.argv), "model": f"rayhet random-weight Llama {args.size} {args.dtype}",
            "threads": args.threads, "prompt_tokens": args.prompt_tokens, "output_tokens": args.output_tokens,
            "llama_cpp_python": llama_cpp.__version__, "repeat": args.repeat,
            "kv_unified": args.kv_unified}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out + ".json").write_text(json.dumps({**meta, "rows": rows, "all_runs": all_rows}, indent=2) + "\n")
    md = "\n".join(["# Engine benchmark: rayhet LlamaCppEngine vs llama_cpp.server", "",
                    *(f"- {k}: {v}" for k, v in meta.items()), "",
                    f"Best of {args.repeat} runs per engine and concurrency (every run is in the .json).", "",
                    table(rows, args.streams), ""])
    Path(args.out + ".md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
