"""Throughput of rayhet's VllmEngine against vLLM's own LLM.generate: same model, requests and engine settings.

The requests are LMSYS-sized (input, output) pairs sampled with a fixed seed, sent as token ids of exactly
the input length with `ignore_eos`, so both sides do the same work. `--mode offline` runs LLM.generate on
the whole batch; `--mode engine` submits the same batch at once to a started VllmEngine and streams every
request to the end. Run each mode in its own process (one engine per GPU); `--mode both` does that.
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
ROOT = HERE.parents[1]
LMSYS = ROOT / ".gpu-carry" / "lmsys-chat-1m.csv"

# The engine settings both sides use. max_num_batched_tokens is pinned because vLLM's default differs
# between LLM (16384 on an H100) and an AsyncLLM built from engine args; the comparison is of the
# serving path, not of the defaults.
ENGINE = {"max_model_len": 8192, "max_num_seqs": 256, "max_num_batched_tokens": 8192,
          "gpu_memory_utilization": 0.85, "seed": 0}


def lmsys_requests(n: int, seed: int, max_len: int, vocab: int, path: Path = LMSYS) -> list[tuple[list[int], int]]:
    """n (prompt token ids, output tokens) pairs with LMSYS sizes; sizes clipped so each fits `max_len`."""
    from rayhet.workload import read_workload

    sizes = read_workload(path).samples
    rng = np.random.default_rng(seed)
    pick = sizes[rng.choice(len(sizes), size=n, replace=False)]
    out = []
    for i, o in pick:
        o = int(max(1, min(o, 2048)))
        i = int(max(1, min(i, max_len - o)))
        # ordinary tokens only (the specials are the vocabulary's last ids)
        out.append((rng.integers(0, vocab - 8, size=i).tolist(), o))
    return out


def _vocab(model: str) -> int:
    return json.loads((Path(model) / "config.json").read_text())["vocab_size"]


def run_offline(model: str, reqs: list[tuple[list[int], int]]) -> dict:
    from vllm import LLM, SamplingParams, TokensPrompt

    t0 = time.monotonic()
    llm = LLM(model=model, **ENGINE)
    start_s = time.monotonic() - t0
    params = [SamplingParams(max_tokens=o, ignore_eos=True, temperature=0) for _, o in reqs]
    prompts = [TokensPrompt(prompt_token_ids=ids) for ids, _ in reqs]
    llm.generate(prompts[:16], params[:16], use_tqdm=False)  # warm-up (compiles, graphs)
    t0 = time.monotonic()
    outs = llm.generate(prompts, params, use_tqdm=False)
    dt = time.monotonic() - t0
    gen = sum(len(o.outputs[0].token_ids) for o in outs)
    return {"mode": "offline (vllm.LLM.generate)", "start_s": start_s, "wall_s": dt, "output_tokens": gen}


async def _engine(model: str, reqs: list[tuple[list[int], int]]) -> dict:
    from rayhet.engines.base import GenerationRequest, SamplingParams
    from rayhet.engines.vllm import VllmEngine, VllmSettings

    t0 = time.monotonic()
    eng = VllmEngine(VllmSettings(model=model, max_waiting=None, **ENGINE))
    await eng.start()
    start_s = time.monotonic() - t0

    async def one(k: int, ids: list[int], o: int, tag: str) -> tuple[int, float, float]:
        t = time.monotonic()
        first, n = None, 0
        async for d in eng.generate(GenerationRequest(f"{tag}{k}", prompt_token_ids=ids,
                                                      sampling=SamplingParams(max_tokens=o, ignore_eos=True, temperature=0))):
            n += len(d.token_ids)
            if first is None and d.token_ids:
                first = time.monotonic()
        return n, (first or t) - t, time.monotonic() - t

    await asyncio.gather(*(one(k, ids, o, "w") for k, (ids, o) in enumerate(reqs[:16])))  # warm-up
    t0 = time.monotonic()
    res = await asyncio.gather(*(one(k, ids, o, "r") for k, (ids, o) in enumerate(reqs)))
    dt = time.monotonic() - t0
    st = eng.stats()
    await eng.shutdown()
    return {"mode": "engine (rayhet VllmEngine over AsyncLLM)", "start_s": start_s, "wall_s": dt,
            "output_tokens": sum(r[0] for r in res), "stats_after": vars(st)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--model", default=os.environ.get("RAYHET_HF", "/tmp/models/rayhet-1b-hf"))
    p.add_argument("--mode", choices=["offline", "engine", "both"], default="both")
    p.add_argument("--n", type=int, default=1000, help="requests (LMSYS sizes)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="JSON file to write (both: one file with both results)")
    a = p.parse_args()
    if a.mode == "both":
        results = []
        for mode in ("offline", "engine"):
            part = Path(a.out).with_suffix(f".{mode}.json")
            subprocess.run([sys.executable, __file__, "--model", a.model, "--mode", mode, "--n", str(a.n),
                            "--seed", str(a.seed), "--out", str(part)], check=True)
            results.append(json.loads(part.read_text()))
        off, eng = results
        summary = {"requests": a.n, "engine_settings": ENGINE, "model": a.model, "results": results,
                   "engine_vs_offline": eng["output_tokens_per_s"] / off["output_tokens_per_s"]}
        Path(a.out).write_text(json.dumps(summary, indent=1) + "\n")
        print(json.dumps({k: summary[k] for k in ("requests", "engine_vs_offline")}))
        return
    reqs = lmsys_requests(a.n, a.seed, ENGINE["max_model_len"], _vocab(a.model))
    r = run_offline(a.model, reqs) if a.mode == "offline" else asyncio.run(_engine(a.model, reqs))
    r["requests"] = len(reqs)
    r["input_tokens"] = sum(len(ids) for ids, _ in reqs)
    r["output_tokens_per_s"] = r["output_tokens"] / r["wall_s"]
    r["total_tokens_per_s"] = (r["output_tokens"] + r["input_tokens"]) / r["wall_s"]
    r["requests_per_s"] = len(reqs) / r["wall_s"]
    Path(a.out).write_text(json.dumps(r, indent=1) + "\n")
    print(json.dumps({k: v for k, v in r.items() if k != "stats_after"}))


if __name__ == "__main__":
    main()
