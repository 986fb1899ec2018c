"""Search: the next offered rate to try for one bucket, from the points measured so far.

An exponential bracket from a starting estimate, then geometric bisection between the highest passing
and the lowest failing rate until they are within a relative tolerance. A pure function of the history,
so an interrupted sweep resumes by replaying the points it already has.

A held-out check of a predicted capacity (`check_rate`) first measures the two rates that decide it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace


@dataclass(frozen=True)
class SearchParams:
    tolerance: float = 0.15  # stop when lowest fail / highest pass <= 1 + tolerance
    growth: float = 2.0  # bracketing factor, up or down
    max_points: int = 8  # per bucket; the highest pass so far is kept when reached
    min_rate: float = 1e-3  # req/s; below this the bucket is declared unservable
    min_fraction: float = 1 / 8  # ... and below this fraction of the start rate (3 halvings by default)
    max_rate: float = 1e4  # req/s; a bucket passing here is reported at this rate


def start_rate(single_request_latency_s: float) -> float:
    """First rate to try: one request in flight on average, which a replica should sustain if one
    request alone meets the SLO; batching usually allows more, and the bracket finds how much."""
    return 1.0 / max(single_request_latency_s, 1e-6)


def next_rate(history: list[tuple[float, bool]], start: float, params: SearchParams = SearchParams()) -> float | None:
    """The next rate to measure, given (rate, met SLO) pairs measured so far; None when the search is over.

    Over when: the bracket [highest pass, lowest fail] is within the tolerance; `max_points` are spent;
    the rate would fall below `min_rate` (or `min_fraction` of the start) with nothing passing; or
    `max_rate` passed.
    """
    if not history:
        return min(max(start, params.min_rate), params.max_rate)
    if len(history) >= params.max_points:
        return None
    lo, hi = bracket(history)
    if hi is None:  # everything passed so far: go up
        if lo >= params.max_rate:
            return None
        return min(lo * params.growth, params.max_rate)
    if lo is None:  # everything failed so far: go down
        nxt = hi / params.growth
        return nxt if nxt >= max(params.min_rate, start * params.min_fraction) * (1 - 1e-9) else None
    if hi <= lo * (1 + params.tolerance):
        return None
    return math.sqrt(lo * hi)


def bracket(history: list[tuple[float, bool]]) -> tuple[float | None, float | None]:
    """(highest pass below the lowest fail, lowest fail); None for a side not found yet."""
    hi = min((r for r, ok in history if not ok), default=None)
    lo = max((r for r, ok in history if ok and (hi is None or r < hi)), default=None)
    return lo, hi


HELD_OUT_BAND = 0.15  # a prediction passes its check when within ±15 % of the measured capacity (issue 13)


def check_rates(predicted: float, band: float = HELD_OUT_BAND) -> tuple[float, float]:
    """The rate that must pass and the rate that must fail for `predicted` to be within ±band of the capacity."""
    return predicted / (1 + band), predicted / (1 - band)


def check_rate(history: list[tuple[float, bool]], predicted: float, params: SearchParams = SearchParams(),
               band: float = HELD_OUT_BAND) -> float | None:
    """The next rate of a held-out check of `predicted`, given the points so far; None when over.

    The prediction is within ±band of the measured capacity C when predicted/(1+band) <= C <= predicted/(1-band):
    so the rate predicted/(1+band) must pass and predicted/(1-band) must fail. Those two first (the second
    only when the first passed); when both come out so, the check has passed and is over (the capacity lies
    between them). Otherwise `next_rate`'s search from there finds the measured value itself. A search
    started at the prediction instead brackets it coarsely: with a 25 % tolerance, a measured 0.667 req/s
    (pass) under 0.793 (fail) reads +19 % whatever the true capacity in between.
    """
    lo, hi = check_rates(predicted, band)
    if not history:
        return lo
    if len(history) == 1 and history[0][1]:
        return hi
    if len(history) == 2 and history[0][1] and not history[1][1]:
        return None
    return next_rate(history, predicted, replace(params, growth=min(params.growth, 1 + band)))
