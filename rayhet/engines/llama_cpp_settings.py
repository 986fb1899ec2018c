"""Settings of a llama.cpp pool replica (what a user writes under a llama_cpp pool's `engine_settings`), and
its default thread count. Apart from the engine (rayhet.engines.llama_cpp) so that reading a config needs
neither llama.cpp nor the engine."""

from __future__ import annotations

import os
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


def default_threads() -> int:
    """The replica's CPU allotment: Ray sets OMP_NUM_THREADS to an actor's num_cpus; else the affinity."""
    env = os.environ.get("OMP_NUM_THREADS", "")
    if env.isdigit() and int(env) > 0:
        return int(env)
    return len(os.sched_getaffinity(0))


class LlamaCppSettings(BaseModel):
    """Settings of a llama.cpp replica: on the CPU, or split between a GPU and the CPU (n_gpu_layers)."""

    model_config = ConfigDict(extra="forbid")

    model_path: str = Field(description="Path of the GGUF model file on the node where the replica runs (checked "
                            "when the engine starts, not when the config is read: the Ray head may not have it).")
    n_ctx: int = Field(2048, ge=16, description="Context per sequence: prompt + max_tokens must fit in it.")
    n_slots: int = Field(8, ge=1, le=256, description="Sequences decoded together (the batch size).")
    n_threads: int | None = Field(None, ge=1, description="CPU threads; default: the replica's CPU allotment.")
    n_batch: int = Field(256, ge=1, description="Most tokens in one decode step (decode tokens first, then "
                         "prompt chunks): bounds how long a long prompt stalls the running sequences.")
    n_batch_decoding: int | None = Field(
        None, ge=1, description="Most tokens in a step while any sequence is decoding (their tokens first, then prompt "
        "chunks): smaller than n_batch, it keeps such steps, and so the decoding sequences' time per output token, "
        "short while a long prompt is prefilled (Sarathi-Serve's stall-free batching); a step with nothing decoding "
        "still takes n_batch. None: n_batch.")
    max_waiting: int = Field(64, ge=0, description="Requests that may wait for a slot; beyond it, overloaded.")
    prefill_allowance_s_per_1k: float = Field(
        0.0, ge=0, description="Prompt chunks go first to the sequence whose first token is due soonest: its arrival "
        "plus this many seconds per 1,000 prompt tokens (the SLO's TTFT allowance per 1k input tokens; the app fills "
        "it in from `slo.ttft_ms_per_1k_input`). A short prompt then no longer waits behind a long one's prefill. "
        "0: oldest request first.")
    kv_unified: bool = Field(False, description="One KV stream for all slots. Off: each slot has its own "
                             "stream, so a token attends only to its own sequence (cheaper at many slots), but "
                             "running slots with gaps between their ids decode in several passes.")
    flash_attn: bool = Field(False, description="Flash attention (off by default, as in llama-cpp-python: "
                             "on these CPUs it was no faster).")
    n_gpu_layers: int = Field(0, ge=-1, description="Transformer blocks kept in GPU memory (the last ones; one more "
                              "than the model has: the output head too; -1: all). 0: a CPU replica. Needs "
                              "llama-cpp-python built with CUDA and the pool's num_gpus (a hybrid pool: rayhet.hybrid).")
    main_gpu: int = Field(0, ge=0, description="The GPU (index among those Ray gives the replica) that holds the "
                          "offloaded layers.")
    tensor_split: list[float] | None = Field(None, description="With several GPUs: the share of the offloaded "
                                             "layers on each (llama.cpp's tensor_split); null: all on main_gpu.")
    seed: int | None = Field(None, description="Default sampling seed for requests without one (None: random).")
    verbose: bool = Field(False, description="Let llama.cpp log to stderr.")
    tool_call_parser: Literal["hermes", "llama3_json", "mistral"] | None = Field(
        None, description="The model family's own tool-call format (rayhet.engines.tool_formats): a request with "
        "tools and tool_choice auto gets the prompt the model's chat template makes with the tools, and its "
        "whole output is read into tool_calls. Unset: tools go through structured output (a grammar).")

    @model_validator(mode="after")
    def _check(self) -> "LlamaCppSettings":
        if self.tensor_split is not None and (not self.tensor_split or any(x < 0 for x in self.tensor_split)
                                              or sum(self.tensor_split) <= 0 or len(self.tensor_split) > 16):
            raise ValueError("tensor_split: one share >= 0 per GPU (at most 16), not all 0")
        if self.n_batch < self.n_slots:
            raise ValueError(f"n_batch ({self.n_batch}) must be >= n_slots ({self.n_slots}): every running "
                             "sequence feeds one token per step")
        if self.n_batch_decoding is not None and not self.n_slots <= self.n_batch_decoding <= self.n_batch:
            raise ValueError(f"n_batch_decoding ({self.n_batch_decoding}) must be between n_slots ({self.n_slots}) "
                             f"and n_batch ({self.n_batch}): every decoding sequence feeds one token per step")
        mp = self.model_path
        if not mp.strip() or mp != mp.strip() or mp.endswith(("/", "\\")) or "\0" in mp:
            raise ValueError(f"model_path {mp!r} is not a usable file path (empty, padded, a directory, or a NUL)")
        return self
