"""Hybrid pools: one llama.cpp replica split between a slice of a GPU and the host (HeteGen's idea, llama.cpp's
partial offload), planned like any other pool.

llama.cpp keeps `n_gpu_layers` of a model's transformer blocks in GPU memory — the *last* ones: block i is on the
GPU when i >= n_layer - n_gpu_layers — with their KV cache (offload_kqv), and the output head (norm + lm_head)
too once n_gpu_layers exceeds n_layer; the token embeddings always stay on the host. The rest runs on the
replica's CPU threads. So what fits in a GPU memory budget follows from the GGUF file alone:

    gpu_bytes(k) = weights of the last k blocks (+ the output head when k > n_layer)
                 + k * kv_bytes_per_token_per_layer * kv_tokens            (f16 K and V)
                 + reserve                                                 (CUDA context, compute buffers)

and `layers_that_fit` is the largest k with gpu_bytes(k) <= budget. More layers on the GPU is faster (each
one moved takes its weights' memory traffic off the host), so the largest split that fits is the one served.
A replica is priced as its share of the GPU plus its vCPUs (`hybrid_price`); `place_layers` applies a pool's
split to llama.cpp's model parameters.
"""

from __future__ import annotations

import ctypes
import re
from dataclasses import dataclass
from pathlib import Path

from rayhet.engines.base import EngineError

GIB = 1024**3
# a CUDA context and llama.cpp's compute buffers: measured on the lent H200 (see the README's hybrid section);
# a guess to stay clear of, not a bound: the profiler reports the split it used
DEFAULT_RESERVE_BYTES = 768 * 1024**2
_BLOCK = re.compile(r"^blk\.(\d+)\.")
_HEAD = ("output.weight", "output_norm.weight")


@dataclass(frozen=True)
class ModelLayers:
    """What a GGUF model puts where, in bytes."""

    n_layers: int
    block_bytes: tuple[int, ...]  # per transformer block, in order
    head_bytes: int  # output norm + lm_head (offloaded with k > n_layers)
    embedding_bytes: int  # token embeddings (always on the host)
    kv_bytes_per_token_per_layer: int  # K and V, f16

    @property
    def total_bytes(self) -> int:
        return sum(self.block_bytes) + self.head_bytes + self.embedding_bytes


def read_layers(path: str | Path) -> ModelLayers:
    """The layer sizes of a GGUF model (a llama-family file: `<arch>.block_count`, head counts, `blk.N.*`)."""
    import gguf

    r = gguf.GGUFReader(str(path))

    def meta(key: str) -> int | None:
        arch = _str(r, "general.architecture")
        f = r.fields.get(f"{arch}.{key}")
        return int(f.parts[f.data[0]][0]) if f is not None else None

    n_layers = meta("block_count")
    if not n_layers:
        raise ValueError(f"{path}: no block_count in the GGUF metadata: not a model llama.cpp splits by layer")
    blocks = [0] * n_layers
    head = emb = 0
    for t in r.tensors:
        m = _BLOCK.match(t.name)
        if m:
            blocks[int(m.group(1))] += int(t.n_bytes)
        elif t.name in _HEAD:
            head += int(t.n_bytes)
        elif t.name == "token_embd.weight":
            emb += int(t.n_bytes)
    if "output.weight" not in {t.name for t in r.tensors}:
        head += emb  # tied embeddings: llama.cpp puts a copy of them on the GPU as the output head
    heads, heads_kv, embd = meta("attention.head_count"), meta("attention.head_count_kv"), meta("embedding_length")
    head_dim = meta("attention.key_length") or (embd // heads if embd and heads else 0)
    kv = 2 * (heads_kv or heads or 0) * head_dim * 2  # K and V, f16
    return ModelLayers(n_layers, tuple(blocks), head, emb, kv)


def _str(r, key: str) -> str:
    f = r.fields[key]
    return bytes(f.parts[f.data[0]]).decode()


def gpu_bytes(m: ModelLayers, k: int, kv_tokens: int, reserve_bytes: int = DEFAULT_RESERVE_BYTES) -> int:
    """GPU memory of a replica with `k` layers offloaded (k = n_layers + 1: the output head too)."""
    if not 0 <= k <= m.n_layers + 1:
        raise ValueError(f"n_gpu_layers must be in [0, {m.n_layers + 1}] for a model of {m.n_layers} layers")
    if k == 0:
        return 0
    blocks = min(k, m.n_layers)
    weights = sum(m.block_bytes[m.n_layers - blocks:]) + (m.head_bytes if k > m.n_layers else 0)
    return weights + blocks * m.kv_bytes_per_token_per_layer * kv_tokens + reserve_bytes


def layers_that_fit(m: ModelLayers, budget_bytes: int, kv_tokens: int,
                    reserve_bytes: int = DEFAULT_RESERVE_BYTES) -> int:
    """The most layers (0 .. n_layers + 1) whose GPU memory stays within `budget_bytes`."""
    best = 0
    for k in range(1, m.n_layers + 2):
        if gpu_bytes(m, k, kv_tokens, reserve_bytes) <= budget_bytes:
            best = k
        else:
            break  # each layer more only adds bytes
    return best


def gpu_share(budget_bytes: int, gpu_total_bytes: int) -> float:
    """The fraction of one GPU a replica asks Ray for: its memory budget over the GPU's memory, so that Ray
    places no more replicas on a GPU than fit in its memory."""
    if gpu_total_bytes <= 0 or not 0 < budget_bytes <= gpu_total_bytes:
        raise ValueError("the GPU memory budget must be > 0 and at most the GPU's memory")
    return round(budget_bytes / gpu_total_bytes, 4)


def hybrid_price(gpu_price_per_hour: float, share: float, vcpu_price_per_hour: float, vcpus: float) -> float:
    """USD per replica-hour: its share of the GPU's price plus its vCPUs."""
    if min(gpu_price_per_hour, share, vcpu_price_per_hour, vcpus) < 0:
        raise ValueError("prices, share and vCPUs must be >= 0")
    return gpu_price_per_hour * share + vcpu_price_per_hour * vcpus


def place_layers(lc, mp, settings):
    """Put a llama.cpp engine's layers where its settings say (model params `mp`; `lc` the bindings); returns the
    tensor-split array, which llama.cpp reads through a pointer and the caller keeps alive. llama.cpp's default
    offloads every layer when it was built with a GPU backend, so a CPU replica says 0; asking a CPU-only build
    for GPU layers is an error, not a silent CPU run."""
    if settings.n_gpu_layers != 0 and not lc.llama_supports_gpu_offload():
        raise EngineError(f"n_gpu_layers={settings.n_gpu_layers}, but this llama-cpp-python has no GPU backend: build "
                          "it with CUDA (CMAKE_ARGS=\"-DGGML_CUDA=on\" pip install llama-cpp-python --no-binary "
                          "llama-cpp-python), or set n_gpu_layers: 0")
    mp.n_gpu_layers = settings.n_gpu_layers if settings.n_gpu_layers >= 0 else 2**31 - 1
    mp.main_gpu = settings.main_gpu
    if not settings.tensor_split:
        return None
    split = (ctypes.c_float * max(lc.llama_max_devices(), len(settings.tensor_split)))(*settings.tensor_split)
    mp.tensor_split = split
    return split
