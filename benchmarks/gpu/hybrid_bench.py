"""Issue 18: one model's speed on the three kinds of pool, through rayhet's own engines.

For each configuration, in a process of its own (GPU memory is returned when it exits): start the engine, then
  - TTFT of a 500- and a 2,000-token prompt, each alone (max_tokens 1; --repeats times, all kept),
  - one stream: a 128-token prompt and --out-tokens tokens (ignore_eos): decode tokens/s after the first token,
  - 8 streams: 8 such requests at once: output tokens/s of all together, and each stream's decode tokens/s,
and the GPU memory the process held (nvidia-smi, after the start and after the streams).
Configurations:
  --llama GGUF --budgets 0,4,8,16   llama.cpp (LlamaCppEngine): 0 = the CPU only; B > 0 = a hybrid replica with
                                    the layers that fit B GiB (rayhet.hybrid.layers_that_fit, as `rayhet profile
                                    --gpu-memory-gb B` picks them). Budgets > 0 need the CUDA build first on the path.
  --vllm HF_DIR                     vLLM (VllmEngine) on the whole GPU.
Prints one JSON line per configuration and writes them all to --out.
    PYTHONPATH=/tmp/site-llama-cuda:$PYTHONPATH python3 benchmarks/gpu/hybrid_bench.py \
        --llama /tmp/models/rayhet-7b-f16.gguf --budgets 4,8,16 --out $OUT/hybrid-bench.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time

GIB = 1024**3


def gpu_used_mib() -> float | None:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=20).stdout
        return float(out.split()[0])
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return None


def make_engine(spec: dict):
    if spec["kind"] == "vllm":
        from rayhet.engines.vllm import VllmEngine, VllmSettings

        return VllmEngine(VllmSettings(model=spec["model"], max_waiting=None, max_model_len=spec["n_ctx"],
                                       max_num_seqs=256, gpu_memory_utilization=0.85, seed=0))
    from rayhet.engines.llama_cpp import LlamaCppEngine, LlamaCppSettings

    return LlamaCppEngine(LlamaCppSettings(model_path=spec["model"], n_gpu_layers=spec["n_gpu_layers"],
                                           n_ctx=spec["n_ctx"], n_slots=spec["n_slots"], n_threads=spec["threads"]))


async def one_config(spec: dict) -> dict:
    import numpy as np

    from rayhet.engines.base import GenerationRequest, SamplingParams

    rng = np.random.default_rng(0)
    before = gpu_used_mib()
    t0 = time.monotonic()
    eng = make_engine(spec)
    await eng.start()
    res = {**spec, "start_s": round(time.monotonic() - t0, 1)}
    after = gpu_used_mib()
    res["gpu_mib_after_start"] = None if before is None or after is None else round(after - before)

    async def request(tag: str, p: int, o: int) -> tuple[float, float, int]:
        ids = [int(x) for x in rng.integers(300, 31000, size=p)]
        t = time.monotonic()
        first, n = None, 0
        async for d in eng.generate(GenerationRequest(f"{tag}-{rng.integers(1 << 30)}", prompt_token_ids=ids,
                                                      sampling=SamplingParams(max_tokens=o, ignore_eos=True,
                                                                              temperature=0.0))):
            n += len(d.token_ids)
            if first is None and d.token_ids:
                first = time.monotonic()
        return (first or t) - t, time.monotonic() - t, n

    await request("warm", 64, 8)
    for p in (500, 2000):
        res[f"ttft_{p}_s"] = [round((await request(f"t{p}", p, 1))[0], 3) for _ in range(spec["repeats"])]
    o = spec["out_tokens"]
    ttft, e2e, n = await request("single", 128, o)
    res["single_decode_tok_s"] = round((n - 1) / (e2e - ttft), 2)
    t = time.monotonic()
    runs = await asyncio.gather(*(request(f"s8-{k}", 128, o) for k in range(8)))
    wall = time.monotonic() - t
    res["streams8_total_tok_s"] = round(sum(r[2] for r in runs) / wall, 2)
    res["streams8_decode_tok_s_median"] = round(statistics.median((r[2] - 1) / (r[1] - r[0]) for r in runs), 2)
    res["streams8_ttft_s_max"] = round(max(r[0] for r in runs), 3)
    used = gpu_used_mib()
    res["gpu_mib_after_streams"] = None if before is None or used is None else round(used - before)
    await eng.shutdown()
    return res


def specs(a: argparse.Namespace) -> list[dict]:
    out = []
    common = {"n_ctx": a.n_ctx, "repeats": a.repeats, "out_tokens": a.out_tokens}
    if a.llama:
        from rayhet.hybrid import layers_that_fit, read_layers

        layers = read_layers(a.llama)
        for b in (float(x) for x in a.budgets.split(",")):
            k = layers_that_fit(layers, int(b * GIB), a.n_ctx * a.n_slots) if b > 0 else 0
            out.append({"kind": "llama_cpp", "model": a.llama, "budget_gb": b, "n_gpu_layers": k,
                        "n_layers": layers.n_layers, "threads": a.threads, "n_slots": a.n_slots, **common})
    if a.vllm:
        out.append({"kind": "vllm", "model": a.vllm, **common})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--llama", help="GGUF model for llama.cpp configurations")
    ap.add_argument("--budgets", default="0", help="GPU memory budgets in GiB, comma-separated (0: CPU only)")
    ap.add_argument("--vllm", help="HF model directory for the vLLM configuration")
    ap.add_argument("--threads", type=int, default=12)
    ap.add_argument("--n-ctx", type=int, default=4096)
    ap.add_argument("--n-slots", type=int, default=8)
    ap.add_argument("--out-tokens", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--label", default="", help="written into every row (e.g. which llama.cpp build)")
    ap.add_argument("--out", required=False)
    ap.add_argument("--one", help=argparse.SUPPRESS)  # internal: run one configuration (JSON) in this process
    a = ap.parse_args()
    if a.one:
        print("RESULT " + json.dumps(asyncio.run(one_config(json.loads(a.one)))), flush=True)
        return
    rows = []
    for spec in specs(a):
        spec["label"] = a.label
        t = time.monotonic()
        p = subprocess.run([sys.executable, __file__, "--one", json.dumps(spec)], capture_output=True, text=True,
                           env=os.environ)
        line = [x for x in p.stdout.splitlines() if x.startswith("RESULT ")]
        row = json.loads(line[-1][7:]) if line else {**spec, "error": (p.stderr or p.stdout)[-1500:]}
        row["wall_s"] = round(time.monotonic() - t, 1)
        print(json.dumps(row), flush=True)
        rows.append(row)
        if a.out:
            with open(a.out, "w") as f:
                json.dump({"machine": os.uname().nodename, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                           "command": " ".join(sys.argv), "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
