"""Engine model: measure a pool's step times on a designed set of batches, fit the step model, derive capacity.

The design runs, one after another on an idle engine, batches of B requests with P-token prompts and
O-token outputs submitted together: single long prompts (chunked prefill, attention over a growing
prefix), B from 1 to the batch slots with short and long contexts (decode steps of every width, over
short and long KV), and mixes of prompts arriving while others decode. The engine reports each step it
ran (its work and seconds; `LlamaCppEngine.step_log`), so every step is one sample of rayhet.perf's
linear model; the fit is non-negative least squares. Minutes, not hours: a few thousand steps.

After a first fit, a short live phase follows: Poisson arrivals of a mix of sizes at about half the
batch slots' worth of load, every step recorded too, and the model is fitted again on all of them. The
designed batches pin down each coefficient; the live steps are the compositions a loaded replica really
runs (sequences at different positions, slots freed in the middle, shapes changing every few steps),
which the designed batches alone under-predicted by 10-20 % on this machine.

Capacity then comes from rayhet.capacity (the replica model driven with Poisson arrivals, judged on the
SLO). A few buckets are still measured directly by the rate search as held-out checks.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass

import numpy as np

from rayhet.engines.base import GenerationRequest, SamplingParams
from rayhet.perf import EngineLimits, FitResult, StepWork, fit_step_model


@dataclass(frozen=True)
class Batch:
    """B requests of P prompt tokens and O output tokens, submitted together; with `long_p`, one of them has
    a `long_p`-token prompt (and 8 output tokens) instead: its chunks run in the same steps as the others'
    decode tokens, the mixed steps a loaded replica mostly runs."""

    b: int
    p: int
    o: int
    long_p: int = 0
    gapped: bool = False  # every other request stops after 4 tokens: the rest decode in slots with gaps

    @property
    def label(self) -> str:
        return f"B{self.b} P{self.p} O{self.o}" + (f" +P{self.long_p}" if self.long_p else "") + (" gapped" if self.gapped else "")

    def requests(self) -> list[tuple[int, int]]:
        """(prompt tokens, output tokens) of each request, in submission order."""
        if self.gapped:
            return [(self.p, self.o if k % 2 == 0 else 4) for k in range(self.b)]
        if not self.long_p:
            return [(self.p, self.o)] * self.b
        return [(self.p, self.o)] * (self.b - 1) + [(self.long_p, 8)]

    @property
    def tokens(self) -> int:
        return sum(p + o for p, o in self.requests())


def design(limits: EngineLimits, budget_tokens: int = 60_000) -> list[Batch]:
    """The batches to run: prompts from 16 tokens to the context, widths from 1 to the slots, outputs long
    enough for decode steps to dominate some batches. Trimmed to about `budget_tokens` generated+prefilled
    tokens (the biggest batches first to go), so a slow engine still profiles in minutes."""
    ctx = limits.max_context
    prompts = sorted({p for p in (16, 128, 512, 1024, 2048, 4096, 8192) if p + 32 <= ctx} | {max(16, ctx - 64)})
    widths = sorted({1, 2, max(1, limits.batch_slots // 2), limits.batch_slots})
    out: list[Batch] = [Batch(1, p, 8) for p in prompts]  # prefill: one prompt alone, chunked
    for b in widths:  # decode: every width over a short and a long context
        out.append(Batch(b, 16, 64))
        out.append(Batch(b, prompts[len(prompts) // 2], 32))
        out.append(Batch(b, prompts[-1], 16))
        if b > 2:  # gapped: slots 0, 2, 4... decode on alone, as they do under load when others finish first
            out.append(Batch(b, 16, 64, gapped=True))
            out.append(Batch(b, prompts[len(prompts) // 2], 32, gapped=True))
        if b > 1:  # mixed: b-1 sequences decode while a long prompt is prefilled in chunks beside them
            out.append(Batch(b, 16, 96, long_p=prompts[len(prompts) // 2]))
            out.append(Batch(b, 128, 96, long_p=prompts[-1]))
    out.sort(key=lambda x: x.tokens)
    kept, total = [], 0
    for x in out:
        cost = x.tokens
        if total + cost > budget_tokens and kept:
            continue
        kept.append(x)
        total += cost
    return kept


async def generate_one(engine, p: int, o: int, vocab: list[int], rng: np.random.Generator) -> None:
    """One request of p random prompt ids and exactly o output tokens, to the end."""
    ids = [int(t) for t in rng.choice(vocab, size=p)]
    req = GenerationRequest(request_id=f"em-{uuid.uuid4().hex[:10]}", prompt_token_ids=ids,
                            sampling=SamplingParams(max_tokens=o, temperature=1.0, ignore_eos=True), stream=False)
    async for _ in engine.generate(req):
        pass


async def run_batch(engine, batch: Batch, vocab: list[int], rng: np.random.Generator) -> None:
    """Submit the batch's requests at once and wait for all (random prompt ids, exact output length)."""
    await asyncio.gather(*[generate_one(engine, p, o, vocab, rng) for p, o in batch.requests()])


async def measure_steps(engine, batches: list[Batch], vocab: list[int], seed: int = 0,
                        on_batch=None) -> list[tuple[str, StepWork, float]]:
    """Run the batches on `engine` (which must keep a `step_log`) and return (label, work, seconds) per step."""
    if not hasattr(engine, "step_log"):
        raise TypeError(f"{type(engine).__name__} does not record its steps (step_log); the engine model needs "
                        "an engine that does (llama_cpp in process)")
    rng = np.random.default_rng(seed)
    limits = limits_of(engine)
    await run_batch(engine, Batch(min(2, engine.max_batch), 64, 4), vocab, rng)  # warm-up, not recorded
    samples: list[tuple[str, StepWork, float]] = []
    for k, batch in enumerate(batches):
        engine.step_log = []
        await run_batch(engine, batch, vocab, rng)
        log, engine.step_log = engine.step_log, None
        samples += logged_steps(log, limits, batch.label)
        if on_batch is not None:
            on_batch(k, batch)
    return samples


def logged_steps(log, limits: EngineLimits, label: str) -> list[tuple[str, StepWork, float]]:
    """(label, work, seconds) samples from the entries of an engine's `step_log`."""
    return [(label, StepWork(1, prefill, dec, ctx, pairs, passes, multi, float(limits.offloaded(prefill + dec))), sec)
            for prefill, pairs, dec, ctx, passes, multi, sec in log]


def probe_batches(limits: EngineLimits) -> list[Batch]:
    """A few short batches of the design (decode alone and at full width, one prefill): a few seconds, run
    again when the held-out buckets are measured to see whether the host still runs at the fitted speed."""
    return [Batch(1, 16, 64), Batch(limits.batch_slots, 16, 64), Batch(1, min(512, limits.max_context - 32), 8)]


DRIFT_KINDS = ("prefill", "decode")  # steps with prompt tokens, and steps of decoding sequences only


def speed_ratio(model, samples: list[tuple[str, StepWork, float]], labels: set[str] | None = None,
                kind: str | None = None) -> float | None:
    """Measured over predicted time of these steps (of those with `labels`; of one DRIFT_KINDS `kind`): 1.2 =
    20 % slower than fitted."""
    chosen = [(w, sec) for label, w, sec in samples if (labels is None or label in labels)
              and (kind is None or (w.prefill_tokens > 0) == (kind == "prefill"))]
    predicted = sum(model.time(w) for w, _ in chosen)
    return sum(sec for _, sec in chosen) / predicted if predicted > 0 else None


def drift(model, fitted: list[tuple[str, StepWork, float]], now: list[tuple[str, StepWork, float]]) -> dict[str, float]:
    """How much slower (> 1) or faster (< 1) the engine runs now than when its steps were fitted, for prefill
    and decode steps apart (they drift apart: on this 2-vCPU host, prompts ran 1.17x and decode steps 1.34x
    slower an hour after a fit): the probe's measured/predicted ratio now over the same ratio in the fitted
    steps of the same labels, so the fit's own residual on those steps cancels out."""
    labels = {label for label, _, _ in now}
    out = {}
    for kind in DRIFT_KINDS:
        then, at_check = speed_ratio(model, fitted, labels, kind), speed_ratio(model, now, None, kind)
        if then and at_check:
            out[kind] = at_check / then
    return out


async def speed_drift(engine, model, fitted: list[tuple[str, StepWork, float]], vocab: list[int],
                      seed: int = 0) -> dict[str, float]:
    """`drift` for an engine that logs its steps: the probe batches run again now. A held-out check is only
    a check of the model at equal speed."""
    now_steps = await measure_steps(engine, probe_batches(limits_of(engine)), vocab, seed=seed)
    return drift(model, fitted, now_steps)


def live_mix(limits: EngineLimits) -> list[tuple[int, int]]:
    """(prompt, output) sizes of the live phase: short to long prompts, short to long outputs, that fit."""
    return [(p, o) for p in (16, 128, 512) for o in (16, 64, 256) if p + o <= limits.max_context]


def live_rate(model, limits: EngineLimits, mix: list[tuple[int, int]], busy_share: float = 0.5) -> float:
    """Arrivals per second that keep about `busy_share` of the slots running (Little's law on the requests'
    latency alone under `model`: batching makes them slower, so the real share is somewhat higher)."""
    from rayhet.sim.replica import SimRequest, simulate

    alone = [simulate(model, limits, [SimRequest(0.0, p, o, rid=1)])[0].e2e for p, o in mix]
    return busy_share * limits.batch_slots / float(np.mean(alone))


async def live_steps(engine, mix: list[tuple[int, int]], rate: float, seconds: float, vocab: list[int],
                     rng: np.random.Generator, on_tick=None) -> list[tuple[str, StepWork, float]]:
    """Poisson arrivals at `rate` for `seconds`, sizes drawn from `mix`; every step until all have finished."""
    import time

    engine.step_log = []
    tasks = []
    t0 = time.monotonic()
    at = float(rng.exponential(1.0 / rate))
    try:
        while at < seconds:
            delay = t0 + at - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            p, o = mix[int(rng.integers(len(mix)))]
            tasks.append(asyncio.ensure_future(_shed_overload(generate_one(engine, p, o, vocab, rng))))
            if on_tick is not None:
                on_tick(at)
            at += float(rng.exponential(1.0 / rate))
        await asyncio.gather(*tasks)
    finally:
        for t in tasks:
            t.cancel()
        log, engine.step_log = engine.step_log, None
    return logged_steps(log, limits_of(engine), "live")


async def _shed_overload(coro) -> None:
    """A live-phase request the engine refuses (its queue is full: the first fit's rate was too high for a
    noisy machine) is dropped; the steps that did run are still samples."""
    from rayhet.engines.base import EngineOverloadedError

    try:
        await coro
    except EngineOverloadedError:
        pass


def fit_samples(samples: list[tuple[str, StepWork, float]]) -> FitResult:
    return fit_step_model([w for _, w, _ in samples], [s for _, _, s in samples])


def limits_of(engine) -> EngineLimits:
    """The limits a rayhet engine runs under (llama.cpp: n_slots, n_batch, one full context per slot; vLLM:
    max_num_seqs, max_num_batched_tokens, its KV blocks x block size, read from the started engine)."""
    s = engine.settings
    if hasattr(s, "n_slots"):
        return EngineLimits(batch_slots=s.n_slots, step_tokens=s.n_batch, kv_tokens=s.n_ctx * s.n_slots,
                            max_context=s.n_ctx, max_waiting=s.max_waiting, passes_per_slot_run=not s.kv_unified,
                            offload_min_batch=op_offload_min_batch(),
                            prefill_allowance_s_per_1k=s.prefill_allowance_s_per_1k,
                            decode_step_tokens=s.n_batch_decoding)
    cfg = engine._llm.vllm_config  # a started VllmEngine
    blocks = getattr(cfg.cache_config, "num_gpu_blocks", None) or 0
    kv = int(blocks * cfg.cache_config.block_size) or int(cfg.model_config.max_model_len) * engine.max_batch
    return EngineLimits(batch_slots=int(cfg.scheduler_config.max_num_seqs),
                        step_tokens=int(cfg.scheduler_config.max_num_batched_tokens), kv_tokens=kv,
                        max_context=int(cfg.model_config.max_model_len), max_waiting=s.max_waiting)


def op_offload_min_batch() -> int | None:
    """Tokens from which this llama.cpp runs a step's host-layer products on the GPU, or None for a build without
    a GPU backend. ggml's CUDA backend offloads a matrix product whose weights sit in host memory once its batch
    has GGML_OP_OFFLOAD_MIN_BATCH tokens (default 32; ggml-cuda.cu), copying those weights over PCIe for every
    such step: measured on the lent H200, a hybrid 7B replica's 16-token step took 0.18 s, its 32-token one 1.0 s
    (0.3 and 1.9 s with 3 of 32 layers on the GPU). Even n_gpu_layers=0 offloads with such a build."""
    import os

    import llama_cpp

    if not llama_cpp.llama_supports_gpu_offload():
        return None
    env = os.environ.get("GGML_OP_OFFLOAD_MIN_BATCH", "")
    return int(env) if env.isdigit() and int(env) > 0 else 32


def held_out_buckets(n_in: int, n_out: int, fits, k: int = 3, usable=None) -> list[tuple[int, int]]:
    """k buckets spread over those for which `fits(i, j)` (the profiler passes: the model predicts a
    capacity that does not hinge on the machine's speed): ordered from (short input, long output) to (long
    input, short output) and picked evenly along that order, extremes included, so they differ in what
    bounds them (decode or prefill). Where a pick is not `usable` (the profiler: its check cannot be decisive
    in the time a check may take), the nearest usable bucket along the order stands in for it."""
    cells = [(i, j) for i in range(n_in) for j in range(n_out) if fits(i, j)]
    if k <= 0 or not cells:
        return []
    cells.sort(key=lambda c: (c[0] / max(n_in - 1, 1) - c[1] / max(n_out - 1, 1), c))
    if k == 1:  # one check: the middle of the order, neither extreme (and quick to measure directly)
        targets = [len(cells) // 2]
    else:
        targets = list(dict.fromkeys(np.linspace(0, len(cells) - 1, min(k, len(cells))).round().astype(int).tolist()))
    picks: list[tuple[int, int]] = []
    for t in targets:
        for d in sorted(range(-len(cells), len(cells)), key=lambda d: (abs(d), -d if t == 0 else d)):
            c = cells[t + d] if 0 <= t + d < len(cells) else None
            if c is not None and c not in picks and (usable is None or usable(*c)):
                picks.append(c)
                break
    return picks
