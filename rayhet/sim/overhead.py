"""Serving overhead: what the deployed stack and host add to a pool's in-process engine model.

A pool's engine model times its engine's steps in process, on the host where it was profiled. Deployed, a
request first crosses Serve's proxy, the ingress and a handle call, and the replica may run on a host that
is slower or faster than that one. Lone requests (each with its replica to itself) measure both, as the
numbers the simulator takes (rayhet.config.ServingOverhead):

    step_scale    = median over lone requests of (measured TPOT / the model's TPOT for the same sizes)
    request_s, prefill_scale = the robust line (Theil-Sen) through the lone requests' points
                    (the model's TTFT share that grows with the prompt, measured TTFT - step_scale x the rest):
                    its intercept (clipped at 0) and slope; with one prompt size, prefill_scale = step_scale

A host's speed need not be one number: prompts are compute-bound and decoding memory-bound, and a host with
wider vector units speeds up the first more. On this project's 2-vCPU VM when it came up on an Intel Xeon
(AVX-512, AMX; 2026-12-08) against the AMD EPYC the validation pools were profiled on, lone requests decoded at
0.69-0.74x the model and their prompts ran at 0.56-0.63x; one scale for both made the simulated TTFT p90 40 %
too long.

Between hosts of one kind, one scale does for both: on one lent GPU machine (2026-12-01,
benchmarks/results/sim-validation-16c-cont*.md) lone requests decoded at 1.33x the model and their prompts'
first tokens came 1.3-1.4x as late, 722 prompt tokens +0.7 s and 52 tokens +0.07 s; an earlier machine of the
same kind ran at the model's speed (1.02-1.05x) and added a fixed ~55 ms. An overhead per decoded token
(`per_token_s`, the first form of this fit) cannot tell the two apart on lone requests, where every step
decodes one sequence, and counts a slow host once per sequence in a batch: the simulation it gave of the
first machine's run was 19 points of SLO attainment too pessimistic. Medians, because one request delayed
by a garbage collection must not move them.

For pools that share a host (rayhet.config.HostContention), the same requests are sent again while the
host's other pools are kept busy: two llama.cpp processes on one socket may share its memory bandwidth and
caches (one pool's steps took 1.1-1.35x as long while its neighbour decoded on an earlier machine; none was
seen on the later one). Measured before a trace, beside the overhead, so that neither carries the other:

    slowdown     = median over those requests of (measured time - request_s) / (the model's time with the
                   pool's overhead) - 1, clipped at 0
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from rayhet.perf import EngineLimits, StepModel
from rayhet.sim.replica import SimRequest, simulate


@dataclass(frozen=True)
class LoneRequest:
    """One request measured alone on a pool's replica, as a client saw it."""

    pool: str
    input_tokens: int
    output_tokens: int
    ttft_s: float
    tpot_s: float  # (end - first token) / (output tokens - 1)


def model_times(step: StepModel, limits: EngineLimits, input_tokens: int, output_tokens: int) -> tuple[float, float]:
    """(TTFT, TPOT) the engine model gives a request alone on an idle replica."""
    (r,) = simulate(step, limits, [SimRequest(0.0, input_tokens, output_tokens)])
    return r.ttft, (r.tpot if r.tpot is not None else 0.0)


class Overhead(NamedTuple):
    """One pool's fitted serving overhead (rayhet.config.ServingOverhead's fields)."""

    request_s: float
    step_scale: float
    prefill_scale: float


PROMPT_TERMS = ("c_prefill", "c_attn")  # the step model's terms that grow with prompt tokens


def theil_sen(x: np.ndarray, y: np.ndarray) -> tuple[float, float] | None:
    """(intercept, slope): the median of pairwise slopes and the median intercept under it, which one outlier
    cannot move (a request delayed by a garbage collection); None without two distinct x."""
    i, j = np.triu_indices(len(x), k=1)
    dx = x[j] - x[i]
    keep = np.abs(dx) > 1e-9 * max(float(np.abs(x).max()), 1e-12)
    if not keep.any():
        return None
    slope = float(np.median((y[j] - y[i])[keep] / dx[keep]))
    return float(np.median(y - slope * x)), slope


def fit_overhead(samples: list[LoneRequest], step: StepModel, limits: EngineLimits) -> Overhead:
    """request_s, step_scale and prefill_scale of one pool from its lone requests (see the module's docstring)."""
    if not samples:
        raise ValueError("no lone requests to fit a serving overhead on")
    times = [(s, *model_times(step, limits, s.input_tokens, s.output_tokens)) for s in samples]
    ratios = [s.tpot_s / tpot for s, _, tpot in times if s.output_tokens > 1 and tpot > 0]
    step_scale = float(np.median(ratios)) if ratios else 1.0
    # each TTFT as the stack's delay + the step's fixed part (at step_scale) + its prompt part (at prefill_scale)
    no_prompt = step.model_copy(update={k: 0.0 for k in PROMPT_TERMS})
    fixed = np.array([model_times(no_prompt, limits, s.input_tokens, s.output_tokens)[0] for s in samples])
    prompt = np.array([ttft for _, ttft, _ in times]) - fixed
    y = np.array([s.ttft_s for s in samples]) - step_scale * fixed
    line = theil_sen(prompt, y) if len(samples) >= 3 else None
    if line is None or line[1] <= 0:  # one prompt size (or nonsense): prompts at the decode's scale
        prefill_scale = step_scale
        request_s = float(np.median(y - prefill_scale * prompt))
    else:
        request_s, prefill_scale = line
        if request_s < 0:  # no negative delay: the line through the origin, again robustly
            request_s, prefill_scale = 0.0, float(np.median(y[prompt > 0] / prompt[prompt > 0]))
    return Overhead(max(0.0, request_s), step_scale, prefill_scale)


def with_overhead(step: StepModel, per_token_s: float = 0.0, step_scale: float = 1.0,
                  prefill_scale: float | None = None) -> StepModel:
    """The engine model as deployed: every step `step_scale` times as long (its prompt terms `prefill_scale`
    times, where given), and each decoding sequence costs a step `per_token_s` more."""
    prefill_scale = step_scale if prefill_scale is None else prefill_scale
    if step_scale == 1.0 and prefill_scale == 1.0 and per_token_s == 0:
        return step
    scaled = {k: v * (prefill_scale if k in PROMPT_TERMS else step_scale)
              for k, v in step.model_dump().items() if k.startswith("c_")}
    scaled["c_decode"] += per_token_s
    return step.model_copy(update=scaled)


def fit_slowdown(samples: list[LoneRequest], step: StepModel, limits: EngineLimits, request_s: float,
                 per_token_s: float = 0.0, step_scale: float = 1.0, prefill_scale: float | None = None) -> float:
    """A pool's host_contention slowdown from requests it served alone while its neighbours were busy (see the
    module's docstring): the share by which its steps ran longer than the engine model with the pool's serving
    overhead, which its lone requests with the neighbours idle measured (`fit_overhead`)."""
    if not samples:
        raise ValueError("no requests measured beside busy neighbours to fit a slowdown on")
    model = with_overhead(step, per_token_s, step_scale, prefill_scale)
    ratios = []
    for s in samples:
        ttft, tpot = model_times(model, limits, s.input_tokens, s.output_tokens)
        steps_s = ttft + tpot * max(s.output_tokens - 1, 0)
        if steps_s > 0:
            ratios.append((s.ttft_s - request_s + s.tpot_s * max(s.output_tokens - 1, 0)) / steps_s)
    return max(0.0, float(np.median(ratios)) - 1.0) if ratios else 0.0
