"""Measure: turn the timings of one open-loop run into a `SweepPoint` (pure; the driving is in load.py)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from rayhet.profiles import SLO, SweepPoint
from rayhet.profiling.capacity import meets_slo, quantile_key
from rayhet.profiling.grid import Bucket
from rayhet.slo import served_share

QUANTILES = (0.5, 0.9, 0.99)


@dataclass
class RequestTiming:
    """One request of a run; times in seconds from the start of the run, `arrival` as scheduled (so that
    a late sender counts against latency instead of hiding it)."""

    arrival: float
    measured: bool  # arrived inside the measurement window (not warm-up, not tail)
    first_token: float | None = None
    end: float | None = None
    output_tokens: int = 0
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and self.end is not None and self.first_token is not None


@dataclass(frozen=True)
class PointPlan:
    """How long one rate is driven: warm-up, then `num_requests` measured arrivals over `window_s`."""

    warmup_s: float
    num_requests: int
    window_s: float
    drain_s: float  # how long to wait for measured requests after the window before calling them failed


def plan_point(
    rate: float,
    single_latency_s: float,
    *,
    min_requests: int,
    min_duration_s: float,
    max_window_s: float,
    min_warmup_s: float,
    latency_bound_s: float,
    fewest_requests: int = 2,
) -> PointPlan:
    """Steady state needs a warm-up of at least one request's lifetime, and a window holding at least
    `min_requests` arrivals and lasting `min_duration_s` (capped at `max_window_s` for very low rates,
    where fewer requests are measured, but at least `fewest_requests`: the point reports how many)."""
    window = max(min_duration_s, min_requests / rate)
    cap = max(max_window_s, min_duration_s)
    if window > cap:  # a low rate: measure fewer requests rather than for ever
        n = max(min(fewest_requests, min_requests), 2, math.floor(rate * cap + 1e-9))
    else:
        n = math.ceil(rate * window - 1e-9)
    return PointPlan(
        warmup_s=max(min_warmup_s, single_latency_s),
        num_requests=n,
        window_s=n / rate,
        drain_s=max(5.0, 2.0 * latency_bound_s),
    )


def check_timing(t: RequestTiming, output_tokens: int) -> RequestTiming:
    """Mark a request that came back with the wrong number of tokens (ignore_eos not honoured) as failed."""
    if t.error is None and t.end is not None and t.output_tokens != output_tokens:
        t.error = f"returned {t.output_tokens} tokens, expected {output_tokens}"
    return t


def achieved_rate(offered_rate: float, arrivals: list[float], served: list[float]) -> float:
    """The rate at which the replica took the measured requests in: the offered rate times
    `rayhet.slo.served_share` of their arrival and first-token times."""
    return float(offered_rate * served_share(arrivals, served))


def summarize(
    timings: list[RequestTiming], bucket: Bucket, offered_rate: float, plan: PointPlan, slo: SLO
) -> SweepPoint:
    """The SweepPoint of one run: statistics over the measured requests, judged against `slo`."""
    measured = [check_timing(t, bucket.output_tokens) for t in timings if t.measured]
    done = [t for t in measured if t.ok]
    ttft = np.array([(t.first_token - t.arrival) * 1e3 for t in done])
    tpot = np.array([(t.end - t.first_token) * 1e3 / (t.output_tokens - 1) for t in done if t.output_tokens > 1])
    rate = achieved_rate(offered_rate, [t.arrival for t in measured], [t.first_token for t in done]) if done else 0.0
    quantiles = sorted(set(QUANTILES) | {slo.ttft_quantile})
    point = SweepPoint(
        input_bucket=bucket.i,
        output_bucket=bucket.j,
        input_tokens=bucket.input_tokens,
        output_tokens=bucket.output_tokens,
        offered_rate=offered_rate,
        achieved_rate=round(rate, 6),
        num_requests=len(done),
        duration_s=round(plan.window_s, 3),
        warmup_s=round(plan.warmup_s, 3),
        ttft_ms=_stats(ttft, quantiles),
        tpot_ms=_stats(tpot, quantiles),
        output_tokens_per_s=round(rate * bucket.output_tokens, 3),
        errors=len(measured) - len(done),
        meets_slo=False,
    )
    return point.model_copy(update={"meets_slo": meets_slo(point, slo)})


def _stats(x: np.ndarray, quantiles: list[float]) -> dict[str, float]:
    if x.size == 0:
        return {}
    out = {"mean": round(float(x.mean()), 3)}
    for q in quantiles:
        out[quantile_key(q)] = round(float(np.quantile(x, q)), 3)
    return out
