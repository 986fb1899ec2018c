"""Twin: a directly measured point replayed through the replica model on the very same arrivals.

A held-out bucket's direct measurement is a small sample. At a bucket's capacity, a point of 15 requests
fails about half the time under the model itself (250/25 here: its TPOT mean over 15 requests ranges 31-71
ms, p10-p90, around a 50 ms limit), so one pass or fail says little about the model, and a capacity read
off a handful of them carries the draw's noise. The twin takes the draw out of the comparison: the same
arrival times as sent (warm-up, window and tail), the same sizes, the same rules (`measure.summarize`),
only the engine replaced by the replica model timed by the fitted step model. Where the model is right,
the twin's latencies and verdict match the measured point's whatever the draw; where they differ, the model
(or the machine's speed during that point) is off on exactly the load the engine ran.

Pure: no engine, no clock.
"""

from __future__ import annotations

from rayhet.perf import EngineLimits, StepModel
from rayhet.profiles import SLO, SweepPoint
from rayhet.profiling.grid import Bucket
from rayhet.profiling.measure import PointPlan, RequestTiming, summarize
from rayhet.sim.replica import SimRequest, simulate


def twin_point(model: StepModel, limits: EngineLimits, bucket: Bucket, rate: float, plan: PointPlan,
               timings: list[RequestTiming], slo: SLO) -> SweepPoint:
    """The SweepPoint the replica model gives for the requests of `timings` (their arrivals and which were
    measured), judged as the measured point was."""
    reqs = [SimRequest(t.arrival, bucket.input_tokens, bucket.output_tokens, rid=k + 1) for k, t in enumerate(timings)]
    done = {r.rid: r for r in simulate(model, limits, reqs)}
    deadline = plan.warmup_s + plan.window_s + plan.drain_s  # the measurement gives up on a request then
    twins = []
    for k, t in enumerate(timings):
        r = done[k + 1]
        twin = RequestTiming(t.arrival, measured=t.measured)
        if r.refused:
            twin.error = "refused: the replica's queue was full"
        elif r.end is None or r.end > deadline:
            twin.error = f"not finished {plan.drain_s:.0f} s after the window"
        else:
            twin.first_token, twin.end, twin.output_tokens = r.first_token, r.end, bucket.output_tokens
        twins.append(twin)
    return summarize(twins, bucket, rate, plan, slo)


def draw_point(model: StepModel, limits: EngineLimits, bucket: Bucket, rate: float, plan: PointPlan, slo: SLO,
               rng) -> SweepPoint:
    """A point as `rayhet profile` measures it under `plan` (warm-up, the window's arrivals, a tail until the
    measured requests are done), drawn afresh and simulated: the twin of a point nobody measured. How such
    draws scatter at one rate is what a direct measurement can resolve (rayhet.profiling.power)."""
    import numpy as np

    from rayhet.profiling.load import arrival_times

    warm, window = arrival_times(rate, plan, rng)
    # the tail: arrivals go on after the window, as run_point sends them while measured requests finish
    tail = plan.warmup_s + plan.window_s + np.cumsum(rng.exponential(1.0 / rate, size=max(4, plan.num_requests // 2)))
    timings = [RequestTiming(float(a), measured=m) for part, m in ((warm, False), (window, True), (tail, False))
               for a in part]
    return twin_point(model, limits, bucket, rate, plan, timings, slo)
