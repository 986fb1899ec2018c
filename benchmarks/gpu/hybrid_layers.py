"""Issue 18: one llama.cpp stream's speed against the layers offloaded to the GPU (a hybrid replica's split).

For each n_gpu_layers: load the GGUF, eval a 512-token prompt, then 64 single-token steps; print the prefill
time and the decode time per token. Run on the GPU machine with the CUDA build first on the path:
    PYTHONPATH=/tmp/site-llama-cuda:$PYTHONPATH python3 benchmarks/gpu/hybrid_layers.py --model m.gguf
(benchmarks/results/hybrid-1b-h200.md was measured with this loop, typed inline on 2026-11-30.)
"""

from __future__ import annotations

import argparse
import time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="/tmp/models/rayhet-1b-f16.gguf")
    ap.add_argument("--layers", default="0,4,8,12,16,17", help="n_gpu_layers values, comma-separated")
    ap.add_argument("--threads", type=int, default=12)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    import llama_cpp

    for rep in range(args.repeats):
        for k in (int(x) for x in args.layers.split(",")):
            m = llama_cpp.Llama(args.model, n_gpu_layers=k, n_ctx=2048, n_threads=args.threads, verbose=False)
            t = time.perf_counter()
            m.eval(list(range(10, 522)))
            pre = time.perf_counter() - t
            t = time.perf_counter()
            for i in range(64):
                m.eval([100 + i])
            dec = (time.perf_counter() - t) / 64
            print(f"k={k} rep={rep} prefill512={pre * 1000:.1f}ms decode={dec * 1000:.2f}ms/token", flush=True)
            del m


if __name__ == "__main__":
    main()
