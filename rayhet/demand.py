"""What the controller believes the demand is, from windows of observed arrivals: per-bucket rates (an EWMA of
the total, the mix over recent requests), how far they moved, and whether a change is more than counting noise.
Pure functions over {bucket: rate or count} maps; rayhet.control decides with them."""

from __future__ import annotations

import math

Bucket = tuple[int, int]


def smooth(prev: dict[Bucket, float], observed: dict[Bucket, float], alpha: float) -> dict[Bucket, float]:
    """EWMA per bucket; a bucket's first sighting is taken as is so a new plan does not start from zero."""
    if not prev:
        return dict(observed)
    out = {}
    for b in set(prev) | set(observed):
        r = alpha * observed.get(b, 0.0) + (1 - alpha) * prev.get(b, 0.0)
        if r > 1e-6:
            out[b] = r
    return out


def count_mix(prev: dict[Bucket, float], arrivals: dict[Bucket, float], n_requests: int,
              min_shift: float | None = None) -> dict[Bucket, float]:
    """Arrivals per bucket over about the last `n_requests` requests: the old counts fade by the share of
    `n_requests` that this window's arrivals make up. The mix's sampling error depends on how many requests it
    has seen, not for how long, so it fades as fast as traffic renews it (seconds at 50 req/s, hours at night).
    A window whose own mix differs from it by more than `min_shift` and than its counting noise (total-variation
    distance) starts it afresh: a real shift (every request suddenly long) is acted on at once, not after 300."""
    n = sum(arrivals.values())
    if min_shift is not None and prev and n > 0 and mix_distance(arrivals, prev) > max(min_shift, poisson_noise(n)):
        return {b: c for b, c in arrivals.items() if c > 0}
    keep = max(0.0, 1.0 - n / n_requests) if n_requests > 0 else 0.0
    out = {b: c * keep for b, c in prev.items() if c * keep > 1e-9}
    for b, c in arrivals.items():
        if c > 0:
            out[b] = out.get(b, 0.0) + c
    return out


def with_mix(rates: dict[Bucket, float], mix: dict[Bucket, float]) -> dict[Bucket, float]:
    """The total of `rates`, spread over the buckets as `mix` is."""
    total, seen = sum(rates.values()), sum(mix.values())
    if total <= 0 or seen <= 0:
        return rates
    return {b: total * c / seen for b, c in mix.items()}


def mix_distance(a: dict[Bucket, float], b: dict[Bucket, float]) -> float:
    """Total-variation distance between two rate maps seen as distributions over buckets (0..1)."""
    ta, tb = sum(a.values()), sum(b.values())
    if ta <= 0 or tb <= 0:
        return 0.0 if ta == tb else 1.0
    return 0.5 * sum(abs(a.get(k, 0.0) / ta - b.get(k, 0.0) / tb) for k in set(a) | set(b))


def uncovered_share(rates: dict[Bucket, float], planned: dict[Bucket, float]) -> float:
    """Share of the current load that arrives in excess of what the plan was sized for, bucket by bucket."""
    total = sum(rates.values())
    if total <= 0:
        return 0.0
    return sum(max(0.0, r - planned.get(b, 0.0)) for b, r in rates.items()) / total


def poisson_noise(count: float) -> float:
    """How far (relative, two standard deviations) a rate measured from `count` Poisson arrivals strays by
    chance: 115 % from 3 requests, 12 % from 300. Changes smaller than this are not evidence of anything."""
    return 2.0 / math.sqrt(count) if count > 0 else math.inf


def trend_factor(history: list, now: float, horizon_s: float, window_s: float, cap: float) -> float:
    """How much higher the total rate is expected to be `horizon_s` from now: the least-squares slope of the
    observed totals over the last `window_s`, extrapolated; 1 when flat, falling, or too little history."""
    pts = [(t, r) for t, r in history if now - t <= window_s]
    if horizon_s <= 0 or len(pts) < 3:
        return 1.0
    t = [p[0] for p in pts]
    r = [p[1] for p in pts]
    tm, rm = sum(t) / len(t), sum(r) / len(r)
    var = sum((x - tm) ** 2 for x in t)
    if var <= 0 or r[-1] <= 0:
        return 1.0
    slope = sum((x - tm) * (y - rm) for x, y in zip(t, r)) / var
    expected = r[-1] + slope * horizon_s
    return min(cap, max(1.0, expected / r[-1]))
