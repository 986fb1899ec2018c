"""llama.cpp on this machine's cores: load the 1B GGUF, check tokenization matches the HF twin, time decoding."""

from __future__ import annotations

import argparse
import os
import time


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--gguf", default=os.environ.get("RAYHET_GGUF", "/tmp/models/rayhet-1b-f16.gguf"))
    p.add_argument("--hf", default=os.environ.get("RAYHET_HF", "/tmp/models/rayhet-1b-hf"))
    p.add_argument("--threads", type=int, nargs="+", default=[8, 12, 16])
    a = p.parse_args()
    import faulthandler

    faulthandler.enable()
    from llama_cpp import Llama
    from tokenizers import Tokenizer  # not transformers: keep torch out of this process

    text = "The quick brown fox jumps over the lazy dog. 12345 ünïcödé"
    hf = Tokenizer.from_file(f"{a.hf}/tokenizer.json").encode(text).ids
    for n in a.threads:
        m = Llama(a.gguf, n_threads=n, n_threads_batch=n, n_ctx=2048, verbose=n == a.threads[0])
        same = m.tokenize(text.encode()) == hf
        t0 = time.monotonic()
        m.eval(m.tokenize(b"hello " * 200))
        prefill = 200 / (time.monotonic() - t0)
        m.reset()
        t0 = time.monotonic()
        out = m("hello", max_tokens=64, temperature=0, ignore_eos=True) if "ignore_eos" in m.__call__.__code__.co_varnames \
            else m("hello", max_tokens=64, temperature=0)
        dt = time.monotonic() - t0
        n_out = out["usage"]["completion_tokens"]
        print(f"threads {n}: tokenizer matches HF: {same}; prefill {prefill:.0f} tok/s; decode {n_out / dt:.1f} tok/s "
              f"({n_out} tokens, one stream)")
        del m


if __name__ == "__main__":
    main()
