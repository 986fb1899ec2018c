"""Serving overhead: what the deployed stack adds to a pool's in-process engine model.

A pool's engine model times its engine's steps in process. Deployed, a request first crosses Serve's proxy,
the ingress and a handle call, and every streamed token is a message out of the replica: on the GPU machine's
cores (benchmarks/results/sim-validation-16c-full*.md) a request alone on its replica saw its first token
~55 ms later than its pool's model said, and decoded at the model's speed within the host's noise. Two
numbers per pool carry that into the simulator (rayhet.config.ServingOverhead):

    request_s    = median over lone requests of (measured TTFT - the model's TTFT for the same sizes)
    per_token_s  = median over lone requests of (measured TPOT - the model's TPOT for the same sizes)

A lone request is one that had its replica to itself, so nothing but the stack separates the two numbers;
medians, because one request delayed by a garbage collection must not move them. Negative medians (a host
faster than the profile's) are clipped to 0: the simulator never makes a step faster than its model.

A third number, for pools that share a host (rayhet.config.HostContention), comes from the same requests
sent again while the host's other pools are kept busy: two llama.cpp processes on one socket share its
memory bandwidth and caches, and on the GPU machine's cores one pool's steps took 1.1-1.35x as long while
its neighbour decoded. Measured before a trace, beside the overhead, so that neither carries the other:

    slowdown     = median over those requests of (measured time - request_s) / (the model's time with
                   per_token_s) - 1, clipped at 0
"""

from __future__ import annotations

from dataclasses import dataclass

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


def fit_overhead(samples: list[LoneRequest], step: StepModel, limits: EngineLimits) -> tuple[float, float]:
    """(request_s, per_token_s) of one pool from its lone requests (see the module's docstring)."""
    if not samples:
        raise ValueError("no lone requests to fit a serving overhead on")
    ttft_gap, tpot_gap = [], []
    for s in samples:
        ttft, tpot = model_times(step, limits, s.input_tokens, s.output_tokens)
        ttft_gap.append(s.ttft_s - ttft)
        if s.output_tokens > 1:
            tpot_gap.append(s.tpot_s - tpot)
    request_s = max(0.0, float(np.median(ttft_gap)))
    per_token_s = max(0.0, float(np.median(tpot_gap))) if tpot_gap else 0.0
    return request_s, per_token_s


def with_overhead(step: StepModel, per_token_s: float) -> StepModel:
    """The engine model as deployed: each decoding sequence costs a step `per_token_s` more."""
    return step if per_token_s == 0 else step.model_copy(update={"c_decode": step.c_decode + per_token_s})


def fit_slowdown(samples: list[LoneRequest], step: StepModel, limits: EngineLimits, request_s: float,
                 per_token_s: float) -> float:
    """A pool's host_contention slowdown from requests it served alone while its neighbours were busy (see the
    module's docstring): the share by which its steps ran longer than the engine model with the stack's
    overhead, which the pool's lone requests with its neighbours idle measured (`fit_overhead`)."""
    if not samples:
        raise ValueError("no requests measured beside busy neighbours to fit a slowdown on")
    model = with_overhead(step, per_token_s)
    ratios = []
    for s in samples:
        ttft, tpot = model_times(model, limits, s.input_tokens, s.output_tokens)
        steps_s = ttft + tpot * max(s.output_tokens - 1, 0)
        if steps_s > 0:
            ratios.append((s.ttft_s - request_s + s.tpot_s * max(s.output_tokens - 1, 0)) / steps_s)
    return max(0.0, float(np.median(ratios)) - 1.0) if ratios else 0.0
