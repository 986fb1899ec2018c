"""Observe: an engine's step times seen from outside — for engines whose steps rayhet cannot log (vLLM,
any server behind `--url`).

The step model is linear in the work, so a sum of steps is a sample as good as one step (rayhet.perf). A
client sees sums of steps whenever it knows which steps happened between two moments. Three designed
experiments give it that knowledge, on an otherwise idle engine whose scheduler is the one the replica
model assumes (decode tokens first, then prompt chunks oldest first up to `step_tokens`):

1. **Prefill**: one request of P prompt tokens alone. Its time to first token is its prefill steps (P in
   chunks of `step_tokens`), attention over the growing prefix included.
2. **Decode**: B identical requests together. Once the last of them has its first token all B decode in
   lock-step; between two streamed deltas of it carrying k tokens lie k steps of B decoding sequences
   whose contexts are known. (vLLM's `stream_interval` of 16 gives k = 16: still k known steps.)
3. **Mixed**: B-1 requests decoding, then a long prompt: its time to first token is the steps that ran
   its chunks beside the B-1 decode tokens.

Each interval becomes one (StepWork summed over its steps, seconds) sample for rayhet.perf's fit. Less
exact than an engine's own step log (an interval starts when a request is sent, not at a step boundary:
half a step of error on a TTFT), which is why the in-process llama.cpp engine keeps using its log.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import numpy as np

from rayhet.perf import EngineLimits, StepWork, attention_pairs, micro_batches, pass_features


@dataclass
class Timed:
    """One request as a client saw it: when it was sent, and (time, tokens) of every delta."""

    sent: float
    deltas: list[tuple[float, int]]

    @property
    def first(self) -> float:
        return self.deltas[0][0]


def _passes(limits: EngineLimits, fed: list[tuple[int, int]]) -> tuple[int, int]:
    if not limits.passes_per_slot_run:
        return 0, 0
    return pass_features(micro_batches(sorted(fed), limits.step_tokens))


def prefill_work(p: int, limits: EngineLimits) -> StepWork:
    """The steps that prefill one P-token prompt alone (its first token comes out of the last)."""
    w = StepWork()
    fed = 0
    while fed < p:
        take = min(limits.step_tokens, p - fed)
        w.add(StepWork(1, take, 0, 0, attention_pairs(fed, take), *_passes(limits, [(0, take)])))
        fed += take
    return w


def decode_work(b: int, context: int, k: int, limits: EngineLimits) -> StepWork:
    """k decode steps of b sequences whose contexts sum to `context` before the first of them."""
    passes = _passes(limits, [(s, 1) for s in range(b)])
    return StepWork(k, 0, k * b, k * context + b * k * (k - 1) // 2, 0, k * passes[0], k * passes[1])


def mixed_work(p: int, decoders: int, context: int, limits: EngineLimits) -> StepWork:
    """The steps that prefill a P-token prompt in chunks beside `decoders` decode tokens per step."""
    w = StepWork()
    fed, ctx = 0, context
    budget = max(1, limits.step_tokens - decoders)
    while fed < p:
        take = min(budget, p - fed)
        fedlist = [(s, 1) for s in range(decoders)] + [(decoders, take)]
        w.add(StepWork(1, take, decoders, ctx, attention_pairs(fed, take), *_passes(limits, fedlist)))
        fed += take
        ctx += decoders
    return w


def decode_samples(runs: list[Timed], p: int, limits: EngineLimits, label: str) -> list[tuple[str, StepWork, float]]:
    """Intervals of lock-step decoding of a batch of identical requests (see the module doc)."""
    b = len(runs)
    ref = max(runs, key=lambda r: r.first)  # the last to start: after its first token, everyone decodes
    # ... until the first of them ends: past that fewer than b decode. With long prompts the batch's prefill
    # takes many steps, and requests that started early could end before the last one started (the H200's
    # 256 x 4096-token decode "ran" faster than 256 x 16 on 2026-11-30: most had finished)
    until = min(r.deltas[-1][0] for r in runs)
    out = []
    got = ref.deltas[0][1]
    for (t0, _), (t1, k) in zip(ref.deltas[:-2], ref.deltas[1:-1]):  # the last delta: others may have ended
        if k <= 0 or t1 <= t0 or t1 >= until:
            continue
        # every request has its prompt and `got` generated tokens in the KV cache (the last one sampled is
        # fed in the next step), as the reference does; others started a step or two earlier: close enough
        context = b * (p + got)
        out.append((label, decode_work(b, context, k, limits), t1 - t0))
        got += k
    return out


def _prompts(limits: EngineLimits) -> list[int]:
    ctx = limits.max_context
    return sorted({p for p in (16, 128, 512, 1024, 2048, 4096, 8192) if p + 32 <= ctx} | {max(16, ctx - 64)})


def decode_output(b: int, p: int, measured: int, limits: EngineLimits) -> int:
    """Output tokens for a decode experiment of b P-token prompts: `measured` tokens of lock-step decoding after
    the last request's first token, plus the steps the whole batch's prefill takes (the first requests decode
    that long before the last one starts, and must not end before the measured steps do)."""
    prefill_steps = -(-b * p // max(1, limits.step_tokens - b))
    return measured + prefill_steps


def observed_plan(limits: EngineLimits) -> list[tuple[str, tuple]]:
    """The experiments, in order: (kind, args) with kind prefill (P,), decode (B, P, O) or mixed (B, P)."""
    prompts = _prompts(limits)
    widths = sorted({1, 2, max(1, limits.batch_slots // 2), limits.batch_slots, min(limits.batch_slots, 32)})
    widths = [b for b in widths if b <= limits.batch_slots]
    plan: list[tuple[str, tuple]] = []
    for p in prompts:
        plan += [("prefill", (p,))] * 3
    # decode at three context lengths, the longest a long prompt's: the attention/KV-read term is fitted from
    # how a step grows with the context. With contexts of at most ~1k tokens it fitted to 0 on the H200, whose
    # 256-sequence steps at 4-5k tokens then took 17.5 ms where the model said ~6 (README "The engine model")
    long_p = prompts[-2] if len(prompts) > 1 else prompts[-1]
    mid_p = prompts[len(prompts) // 2]
    for b in widths:
        plan.append(("decode", (b, 16, decode_output(b, 16, 64, limits))))
        plan.append(("decode", (b, mid_p, decode_output(b, mid_p, 48, limits))))
        o = decode_output(b, long_p, 32, limits)
        if long_p > mid_p and b * (long_p + o) <= limits.kv_tokens:
            plan.append(("decode", (b, long_p, o)))
    for b in widths:
        if b > 1:
            plan.append(("mixed", (b, prompts[-1])))
            plan.append(("mixed", (b, prompts[len(prompts) // 2])))
    return plan


def probe_plan(limits: EngineLimits) -> list[tuple[str, tuple]]:
    """A few of `observed_plan`'s experiments (a mid-size prompt twice, decode alone and at full width): a few
    seconds, run again when held-out buckets are measured, to see whether the engine still runs at the
    fitted speed (rayhet.profiling.engine_model.drift compares samples of the same labels)."""
    p = _prompts(limits)[len(_prompts(limits)) // 2]
    return [("prefill", (p,))] * 2 + [("decode", (b, 16, 64)) for b in sorted({1, limits.batch_slots})]


async def observed_drift(target, limits: EngineLimits, model, fitted: list[tuple[str, StepWork, float]],
                         vocab: list[int], rng: np.random.Generator) -> dict[str, float]:
    """The speed probe for an engine seen from outside: `probe_plan` now, against the fitted samples."""
    from rayhet.profiling.engine_model import drift

    return drift(model, fitted, await run_observed(target, limits, vocab, rng, plan=probe_plan(limits)))


async def run_observed(target, limits: EngineLimits, vocab: list[int], rng: np.random.Generator, *,
                       plan: list[tuple[str, tuple]] | None = None, on_batch=None) -> list[tuple[str, StepWork, float]]:
    """The experiments (`observed_plan` unless given) on `target` (a rayhet.profiling.targets Target with
    `timed()`); samples."""
    ctx = limits.max_context
    plan = observed_plan(limits) if plan is None else plan

    def ids(n: int) -> list[int]:
        return [int(t) for t in rng.choice(vocab, size=n)]

    samples: list[tuple[str, StepWork, float]] = []
    await target.timed(ids(32), 4)  # warm-up, not recorded
    for k, (kind, args) in enumerate(plan):
        if kind == "prefill":
            (p,) = args
            r = await target.timed(ids(p), 2)
            samples.append((f"prefill P{p}", prefill_work(p, limits), r.first - r.sent))
        elif kind == "decode":
            b, p, o = args
            runs = await asyncio.gather(*[target.timed(ids(p), o) for _ in range(b)])
            samples += decode_samples(list(runs), p, limits, f"decode B{b} P{p}")
        else:
            b, p_long = args
            n_dec, p_dec = b - 1, 16
            started = asyncio.Event()
            counts = [0] * n_dec

            async def decoder(i: int) -> Timed:
                # long enough to outlast the long prompt's prefill (a generous upper bound: its tokens / 1)
                return await target.timed(ids(p_dec), min(ctx - p_dec - 1, 64 + p_long // max(1, limits.step_tokens - n_dec) * 2 + 64),
                                          on_delta=lambda n, i=i: _bump(counts, i, n, started, n_dec))

            tasks = [asyncio.ensure_future(decoder(i)) for i in range(n_dec)]
            await started.wait()  # every decoder has its first tokens: they decode in every step from here
            context = sum(p_dec + c for c in counts)
            r = await target.timed(ids(p_long), 2)
            samples.append((f"mixed B{b} +P{p_long}", mixed_work(p_long, n_dec, context, limits), r.first - r.sent))
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await target.wait_idle(30.0)
        if on_batch is not None:
            on_batch(k, f"{kind} {args}")
    return samples


def _bump(counts: list[int], i: int, n: int, started: asyncio.Event, total: int) -> None:
    counts[i] += n
    if sum(1 for c in counts if c >= 2) == total:
        started.set()

