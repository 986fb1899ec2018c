"""A hybrid llama.cpp replica on a real GPU (issue 18): some layers (or all, -1) offloaded, the rest on the CPU
threads, generating exact lengths of valid tokens beside the same model all on the CPU. (Greedy tokens are not
compared: on random weights the logits nearly tie, and two backends' arithmetic may break a tie apart.)

Skipped, saying why, without an NVIDIA GPU or without a llama-cpp-python built with CUDA (the default build is
CPU-only; `HYBRID=1 benchmarks/gpu/setup.sh` builds one on the GPU machine).
"""

from __future__ import annotations

import asyncio
import subprocess

import pytest

from rayhet.engines.base import GenerationRequest, SamplingParams


def _skip_reason() -> str | None:
    try:
        found = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        found = ""
    if "GPU" not in found:
        return "no NVIDIA GPU visible (nvidia-smi -L lists none)"
    import llama_cpp

    if not llama_cpp.llama_supports_gpu_offload():
        return "this llama-cpp-python has no GPU backend (build it with CMAKE_ARGS=-DGGML_CUDA=on)"
    return None


_REASON = _skip_reason()
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(_REASON is not None, reason=_REASON or "")]


async def _generate(model_path: str, n_gpu_layers: int, prompt: list[int], n: int) -> list[int]:
    from rayhet.engines.llama_cpp import LlamaCppEngine, LlamaCppSettings

    eng = LlamaCppEngine(LlamaCppSettings(model_path=model_path, n_gpu_layers=n_gpu_layers, n_ctx=512, n_slots=2,
                                          n_threads=2))
    await eng.start()
    try:
        ids = []
        async for d in eng.generate(GenerationRequest(
                request_id=f"h{n_gpu_layers}", prompt_token_ids=prompt,
                sampling=SamplingParams(max_tokens=n, temperature=0.0, ignore_eos=True))):
            ids += d.token_ids
        return ids
    finally:
        await eng.shutdown()


@pytest.mark.parametrize("n_gpu_layers", [1, -1])
def test_a_split_replica_generates_on_the_gpu(tmp_path, n_gpu_layers):
    from rayhet.testing.models import write_gguf

    path = str(write_gguf(tmp_path / "m.gguf", "tiny", seed=0, dtype="f16"))
    prompt = list(range(3, 40))
    on_gpu = asyncio.run(_generate(path, n_gpu_layers, prompt, 24))
    on_cpu = asyncio.run(_generate(path, 0, prompt, 24))
    assert len(on_gpu) == len(on_cpu) == 24
    assert all(0 <= t < 512 for t in on_gpu)  # the tiny model's vocabulary
