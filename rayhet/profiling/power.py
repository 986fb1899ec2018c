"""Power: how many requests a held-out point needs for its check to say something about the model.

A held-out bucket checks a predicted capacity P with two points (`search.check_rate`): P/1.15 must pass
and P/0.85 must fail. Each point judges the n requests of its window, and near a capacity that verdict is
a draw: the TPOT mean of 15 requests of 250/25 here ranges 29-55 ms (p10-p90) at P/1.15 around a 50 ms
limit. The *power* of a check is the share of draws in which a perfect model passes it, i.e. the engine
behaving exactly as the fitted model says would still give both verdicts as predicted. It is computed from
the model itself by drawing points as `rayhet profile` measures them (`twin.draw_point`).

`rayhet profile` measures each held-out bucket with the fewest requests (of LADDER) that give its check at
least TARGET_POWER, and holds out only buckets where that fits the time one check may take: a check a
perfect model fails half the time (15 requests at 250/25 here: 0.2) cannot confirm or refute ±15 %.

Pure: no engine, no clock.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rayhet.perf import EngineLimits, StepModel
from rayhet.profiling.grid import Bucket
from rayhet.profiling.measure import PointPlan
from rayhet.profiling.search import HELD_OUT_BAND, check_rates
from rayhet.profiling.twin import draw_point
from rayhet.sim.replica import SimRequest, simulate

TARGET_POWER = 0.9
LADDER = (15, 30, 60, 120, 240)  # measured requests per point, tried in this order
DRAWS = 100  # simulated checks per power estimate (its standard error at 0.9: 0.03)


@dataclass(frozen=True)
class CheckPlan:
    """How a held-out bucket is measured: n requests a point, and what that buys."""

    requests: int
    power: float  # share of a perfect model's checks that pass with this many requests
    seconds: float  # the two deciding points, warm-ups and one request's drain included
    warmup_s: float


def single_latency(model: StepModel, limits: EngineLimits, bucket: Bucket) -> float:
    """One request of the bucket alone on an idle replica, in seconds (what a point's warm-up lasts at least)."""
    alone = simulate(model, limits, [SimRequest(0.0, bucket.input_tokens, bucket.output_tokens, rid=1)])[0]
    return float(alone.e2e)


def point_plan(rate: float, requests: int, warmup_s: float, drain_s: float = 1e9) -> PointPlan:
    return PointPlan(warmup_s=warmup_s, num_requests=requests, window_s=requests / rate, drain_s=drain_s)


def check_power(model: StepModel, limits: EngineLimits, slo, bucket: Bucket, predicted: float, requests: int,
                warmup_s: float, *, draws: int = DRAWS, seed: int = 0, band: float = HELD_OUT_BAND) -> float:
    """Share of `draws` checks of `predicted`, under the model itself, in which the lower rate passes and the
    upper one fails (the two points drawn independently, as they are measured)."""
    lo, hi = check_rates(predicted, band)
    rng = np.random.default_rng(seed)
    good = 0
    for _ in range(draws):
        if draw_point(model, limits, bucket, lo, point_plan(lo, requests, warmup_s), slo, rng).meets_slo and \
                not draw_point(model, limits, bucket, hi, point_plan(hi, requests, warmup_s), slo, rng).meets_slo:
            good += 1
    return good / draws


def plan_check(model: StepModel, limits: EngineLimits, slo, bucket: Bucket, predicted: float, *, min_warmup_s: float,
               max_seconds: float, target: float = TARGET_POWER, ladder=LADDER, draws: int = DRAWS,
               seed: int = 0) -> CheckPlan | None:
    """The fewest requests a point (from `ladder`) whose check reaches `target` power and fits `max_seconds`;
    when none reaches it in time, the largest that fits, whose power says how far short it falls; None when
    not even the smallest fits."""
    single = single_latency(model, limits, bucket)
    warmup = max(min_warmup_s, single)
    lo, hi = check_rates(predicted)
    best = None
    for n in ladder:
        seconds = sum(warmup + n / r + single for r in (lo, hi))
        if seconds > max_seconds:
            break
        best = CheckPlan(n, check_power(model, limits, slo, bucket, predicted, n, warmup, draws=draws, seed=seed),
                         seconds, warmup)
        if best.power >= target:
            break
    return best
