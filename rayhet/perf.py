"""Perf: the engine step-time model — how long one continuous-batching step takes for the work in it.

One engine step (a llama.cpp `llama_decode`, a vLLM scheduler iteration) runs a token of every decoding
sequence and prompt chunks up to the step's token budget. Its time is modelled as linear in the work,
as Vidur and BLIS do for one iteration (both with a few more terms per operator; AIConfigurator looks
operators up in measured tables instead):

    t(step) = c_step                                  fixed cost of a step (launch, sampling set-up)
            + c_prefill  * prefill tokens             the MLP/projection work of prompt tokens
            + c_decode   * decoding sequences         the same for one new token each, plus its sampling
            + c_kv_read  * context of decoding seqs   attention reads of their KV (tokens)
            + c_attn     * prefill attention pairs    / 1000: a chunk of n tokens after p cached ones
                                                       attends n*p + n*(n+1)/2 pairs
            + c_pass     * extra passes               llama.cpp with a KV stream per slot splits a batch
                                                       into passes (runs of consecutive slot ids, equal
                                                       tokens per sequence): each past the first costs
            + c_multi    * passes over several sequences  batched attention over several KV streams

Coefficients are non-negative (non-negative least squares), so no fitted term can make a step faster.
The same five numbers hold for any batch, which is what lets capacity be derived for any SLO by
simulating a replica (rayhet.sim.replica) instead of measuring every (bucket, rate) point.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

FEATURES = ("step", "prefill_tokens", "decode_seqs", "decode_context", "prefill_attention_k", "extra_passes",
            "multi_seq_passes", "offload_steps")


def micro_batches(seqs, max_tokens: int) -> list[int]:
    """The passes llama.cpp with a KV stream per sequence runs for one batch: sequences in each pass.

    `seqs`: (sequence id, tokens it feeds in this step) in batch order. Such a batch is split into
    micro-batches (llama_batch_allocr::split_equal, sequential): each takes, scanning in batch order, a run
    of sequences whose ids rise by one, and the same number of tokens from each of them (until one runs out,
    or `max_tokens` would be passed). Every micro-batch is a full pass over the weights. So decoding slots
    0, 1, 3 take two passes (a gap), and a long prompt chunk next to decode tokens takes a second pass for
    all its tokens but the first.
    """
    left = [[sid, n] for sid, n in seqs if n > 0]
    passes = []
    while left:
        run = [left[0]]
        for item in left[1:]:
            if item[0] == run[-1][0] + 1:
                run.append(item)
        k = min(min(n for _, n in run), max(1, max_tokens // len(run)))
        for item in run:
            item[1] -= k
        left = [item for item in left if item[1] > 0]
        passes.append(len(run))
    return passes


def pass_features(passes: list[int]) -> tuple[int, int]:
    """(passes past the first, passes of more than one sequence): a pass costs a step's fixed cost again, and
    one over several KV streams costs more than one over a single stream (batched attention views)."""
    return max(0, len(passes) - 1), sum(1 for n in passes if n > 1)


def extra_passes(seqs, max_tokens: int) -> int:
    """Passes past the first of micro_batches (0 for an empty batch)."""
    return pass_features(micro_batches(seqs, max_tokens))[0]


def slot_runs(slots) -> list[int]:
    """Lengths of the runs of consecutive ids among `slots`: the passes of a decode-only step in slot order."""
    ids = sorted(set(slots))
    runs, n = [], 0
    for k, sid in enumerate(ids):
        if k and sid != ids[k - 1] + 1:
            runs.append(n)
            n = 0
        n += 1
    return runs + [n] if ids else []


def attention_pairs(cached: int, chunk: int) -> int:
    """Query-key pairs of a prefill chunk of `chunk` tokens after `cached` tokens of the same sequence."""
    return chunk * cached + chunk * (chunk + 1) // 2


@dataclass
class StepWork:
    """The work of one step (or, summed, of several: the model is linear, so sums of steps fit too)."""

    steps: float = 0.0
    prefill_tokens: float = 0.0
    decode_seqs: float = 0.0
    decode_context: float = 0.0
    prefill_pairs: float = 0.0
    extra_passes: float = 0.0
    multi_passes: float = 0.0
    offload_steps: float = 0.0

    def vector(self) -> np.ndarray:
        return np.array([self.steps, self.prefill_tokens, self.decode_seqs, self.decode_context,
                         self.prefill_pairs / 1000.0, self.extra_passes, self.multi_passes, self.offload_steps])

    def add(self, other: "StepWork") -> None:
        self.steps += other.steps
        self.prefill_tokens += other.prefill_tokens
        self.decode_seqs += other.decode_seqs
        self.decode_context += other.decode_context
        self.prefill_pairs += other.prefill_pairs
        self.extra_passes += other.extra_passes
        self.multi_passes += other.multi_passes
        self.offload_steps += other.offload_steps


class EngineLimits(BaseModel):
    """What bounds a replica's batch: the engine's settings, recorded with its model."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    batch_slots: int = Field(..., ge=1, description="Sequences decoded together (llama.cpp n_slots, vLLM max_num_seqs).")
    step_tokens: int = Field(..., ge=1, description="Most tokens in one step: decode tokens first, then prompt chunks "
                             "(llama.cpp n_batch, vLLM max_num_batched_tokens).")
    kv_tokens: int = Field(..., ge=1, description="KV cache capacity in tokens; a request is admitted only when its "
                           "prompt + max_tokens fit in what is free.")
    max_context: int = Field(..., ge=1, description="Prompt + output tokens one request may have.")
    max_waiting: int | None = Field(None, ge=0, description="Requests that may wait for a slot (None: unbounded); "
                                    "beyond it the replica refuses.")
    passes_per_slot_run: bool = Field(False, description="A step is split into passes of consecutive slot ids with "
                                      "equal tokens per sequence (llama.cpp with a KV stream per slot; "
                                      "rayhet.perf.extra_passes); slots are then taken lowest id first.")
    offload_min_batch: int | None = Field(None, ge=1, description="llama.cpp built with a GPU backend runs a step of "
                                          "at least this many tokens on the GPU, copying the weights of the layers "
                                          "kept on the host there first (ggml's op offload): a fixed cost per such "
                                          "step, c_offload. None: the engine has no such steps.")
    decode_step_tokens: int | None = Field(None, ge=1, description="Most tokens in a step while any sequence "
                                           "decodes (llama.cpp pools' n_batch_decoding); None: step_tokens.")
    prefill_allowance_s_per_1k: float = Field(0.0, ge=0, description="Prompt chunks go first to the request "
                                              "due soonest: arrival + this many seconds per 1,000 prompt tokens "
                                              "(llama.cpp pools: the setting of that name). 0: oldest first.")

    def offloaded(self, tokens: int) -> bool:
        """Whether a step of `tokens` tokens (prompt chunks + decoding sequences) is an offloaded one."""
        return self.offload_min_batch is not None and tokens >= self.offload_min_batch


class StepModel(BaseModel):
    """Fitted coefficients (seconds per unit of each feature) and how well they fit."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    c_step: float = Field(..., ge=0, description="Seconds per step.")
    c_prefill: float = Field(..., ge=0, description="Seconds per prefill token.")
    c_decode: float = Field(..., ge=0, description="Seconds per decoding sequence in a step.")
    c_kv_read: float = Field(..., ge=0, description="Seconds per context token of a decoding sequence.")
    c_attn: float = Field(..., ge=0, description="Seconds per 1000 prefill attention pairs.")
    c_pass: float = Field(0.0, ge=0, description="Seconds per extra pass of a step (runs of consecutive slot ids "
                          "past the first; 0 for engines that run a batch in one pass).")
    c_multi: float = Field(0.0, ge=0, description="Seconds per pass over more than one sequence (llama.cpp with a "
                           "KV stream per slot; 0 elsewhere).")
    c_offload: float = Field(0.0, ge=0, description="Seconds per offloaded step: one of at least the engine's "
                             "`offload_min_batch` tokens, for which llama.cpp built with a GPU backend copies the "
                             "host layers' weights to the GPU and runs them there (a hybrid replica; 0 elsewhere).")

    def coefficients(self) -> np.ndarray:
        return np.array([self.c_step, self.c_prefill, self.c_decode, self.c_kv_read, self.c_attn, self.c_pass,
                         self.c_multi, self.c_offload])

    def time(self, work: StepWork) -> float:
        return float(self.coefficients() @ work.vector())

    def step_time(self, prefill_tokens: int, prefill_pairs: int, decode_seqs: int, decode_context: int,
                  extra_passes: int = 0, multi_passes: int = 0, offloaded: bool = False) -> float:
        """One step's seconds (the replica model's hot path: plain arithmetic, no arrays)."""
        return (self.c_step + self.c_prefill * prefill_tokens + self.c_decode * decode_seqs
                + self.c_kv_read * decode_context + self.c_attn * prefill_pairs / 1000.0 + self.c_pass * extra_passes
                + self.c_multi * multi_passes + (self.c_offload if offloaded else 0.0))


@dataclass(frozen=True)
class FitResult:
    model: StepModel
    mean_abs_rel_error: float  # over the samples, |predicted - measured| / measured
    max_abs_rel_error: float
    n_samples: int


def fit_step_model(work: list[StepWork], seconds: list[float]) -> FitResult:
    """Non-negative least squares of the measured times on the work, each sample weighted by 1/time so that
    short intervals (one decode step) count as much as long ones (a whole prefill): the error that matters
    for latency is relative."""
    from scipy.optimize import nnls

    if len(work) != len(seconds) or not work:
        raise ValueError(f"need as many measured times as work samples, and at least one (got {len(work)}, "
                         f"{len(seconds)})")
    X = np.stack([w.vector() for w in work])
    y = np.asarray(seconds, dtype=float)
    if np.any(y <= 0) or not np.all(np.isfinite(y)):
        raise ValueError("measured times must be finite and > 0")
    wts = 1.0 / y
    scale = np.maximum(np.abs(X * wts[:, None]).max(axis=0), 1e-12)  # column scaling: features differ by 1e6
    coef_scaled, _ = nnls((X * wts[:, None]) / scale, y * wts)
    coef = coef_scaled / scale
    pred = X @ coef
    rel = np.abs(pred - y) / y
    names = ("c_step", "c_prefill", "c_decode", "c_kv_read", "c_attn", "c_pass", "c_multi", "c_offload")
    model = StepModel(**dict(zip(names, map(float, coef))))
    return FitResult(model, float(rel.mean()), float(rel.max()), len(y))
