"""Make the ~1B random-weight Llama in both formats (same weights and tokenizer): HF for vLLM, GGUF for llama.cpp."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from rayhet.testing.models import SIZES, write_gguf, write_hf


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--out", default="/tmp/models")
    p.add_argument("--size", default="1b", choices=sorted(SIZES))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--hf-only", action="store_true", help="only the HF copy (vLLM runs; no llama.cpp needed)")
    p.add_argument("--q4km", action="store_true", help="also the GGUF quantized to Q4_K_M (llama.cpp's quantizer)")
    a = p.parse_args()
    out = Path(a.out)
    hf, gg = out / f"rayhet-{a.size}-hf", out / f"rayhet-{a.size}-f16.gguf"
    t0 = time.monotonic()
    if not (hf / "model.safetensors").exists():
        write_hf(hf, a.size, seed=a.seed, dtype="float16")
    if not a.hf_only and not gg.exists():
        write_gguf(gg, a.size, seed=a.seed, dtype="f16")
    print(f"model {a.size}: {SIZES[a.size].n_params() / 1e9:.2f} B parameters; {hf} and {gg} "
          f"in {time.monotonic() - t0:.0f} s")
    q4 = out / f"rayhet-{a.size}-q4_k_m.gguf"
    if a.q4km and not q4.exists():
        import ctypes
        import os

        import llama_cpp as lc

        params = lc.llama_model_quantize_default_params()
        params.ftype, params.nthread = lc.LLAMA_FTYPE_MOSTLY_Q4_K_M, os.cpu_count() or 1
        t0 = time.monotonic()
        if lc.llama_model_quantize(str(gg).encode(), str(q4).encode(), ctypes.byref(params)) != 0:
            raise SystemExit(f"llama.cpp could not quantize {gg}")
        print(f"{q4}: Q4_K_M, {q4.stat().st_size / 2**20:.0f} MiB, in {time.monotonic() - t0:.0f} s")


if __name__ == "__main__":
    main()
