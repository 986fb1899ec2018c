"""Load: drive a target open-loop with Poisson arrivals at one rate, and time every request."""

from __future__ import annotations

import asyncio
import time

import numpy as np

from rayhet.profiling.measure import PointPlan, RequestTiming
from rayhet.profiling.targets import Target


def arrival_times(rate: float, plan: PointPlan, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Scheduled arrivals of the warm-up and of the measurement window.

    A Poisson process conditioned on its count in each interval (the arrivals are uniform order
    statistics): inter-arrival gaps are as bursty as Poisson, but the window holds exactly
    `plan.num_requests` requests, so the offered rate is what was asked and points are comparable.
    """
    warm = np.sort(rng.uniform(0.0, plan.warmup_s, size=round(rate * plan.warmup_s)))
    window = plan.warmup_s + np.sort(rng.uniform(0.0, plan.window_s, size=plan.num_requests))
    return warm, window


def random_prompt(token_ids: list[int], n: int, rng: np.random.Generator) -> list[int]:
    """`n` random tokens: every prompt differs from its first token on, so no prefix cache shortens a prefill."""
    return [int(x) for x in rng.choice(token_ids, size=n)]


async def run_point(
    target: Target,
    input_tokens: int,
    output_tokens: int,
    rate: float,
    plan: PointPlan,
    rng: np.random.Generator,
) -> list[RequestTiming]:
    """Send warm-up, measured and tail requests; return the timings of all of them.

    After the window, arrivals go on at the same rate (unmeasured tail) until the measured requests have
    finished, so that they finish under the load they started under; tail requests are then cancelled.
    Measured requests still running `plan.drain_s` after the window are cancelled and count as failed.
    """
    ids = target.token_ids()
    warm, window = arrival_times(rate, plan, rng)
    timings = [RequestTiming(float(a), measured=False) for a in warm]
    timings += [RequestTiming(float(a), measured=True) for a in window]
    t0 = time.monotonic()
    tasks: list[asyncio.Task] = []
    measured_tasks: list[asyncio.Task] = []

    def launch(t: RequestTiming) -> asyncio.Task:
        task = asyncio.ensure_future(target.send(random_prompt(ids, input_tokens, rng), output_tokens, t, t0))
        tasks.append(task)
        return task

    try:
        for t in timings:
            await _sleep_until(t0 + t.arrival)
            task = launch(t)
            if t.measured:
                measured_tasks.append(task)
        window_end = plan.warmup_s + plan.window_s
        all_measured = asyncio.gather(*measured_tasks, return_exceptions=True)
        next_tail = window_end
        deadline = t0 + window_end + plan.drain_s
        while not all_measured.done() and time.monotonic() < deadline:
            next_tail += rng.exponential(1.0 / rate)
            wake = min(t0 + next_tail, deadline)
            await asyncio.wait([all_measured], timeout=max(0.0, wake - time.monotonic()))
            if not all_measured.done() and time.monotonic() >= t0 + next_tail and next_tail < window_end + plan.drain_s:
                tail = RequestTiming(next_tail, measured=False)
                timings.append(tail)
                launch(tail)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    for t in timings:
        if t.measured and t.end is None and t.error is None:
            t.error = f"not finished {plan.drain_s:.0f} s after the window"
    return timings


async def single_request(target: Target, input_tokens: int, output_tokens: int, rng: np.random.Generator) -> RequestTiming:
    """One request alone on an idle target: the latency a rate search starts from."""
    t = RequestTiming(0.0, measured=True)
    await target.send(random_prompt(target.token_ids(), input_tokens, rng), output_tokens, t, time.monotonic())
    return t


async def _sleep_until(when: float) -> None:
    delay = when - time.monotonic()
    if delay > 0:
        await asyncio.sleep(delay)
