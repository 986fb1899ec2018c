"""Capacity: judge one sweep point against the SLO, and derive a profile's capacities from its raw sweep.

Pure functions over `SweepPoint`s, so a profile's `max_rate` can always be re-derived (and checked) from
the measurements stored next to it.
"""

from __future__ import annotations

from rayhet.profiles import SLO, SweepPoint
from rayhet.profiling.search import bracket

# AIBrix's rule: a rate is sustained only if the replica completes at least 90% of what is offered.
MIN_THROUGHPUT_RATIO = 0.9


def slo_violations(
    point: SweepPoint, slo: SLO, min_throughput_ratio: float = MIN_THROUGHPUT_RATIO
) -> list[str]:
    """Why `point` misses the SLO (empty when it meets it).

    A point meets the SLO when its mean TPOT is within `slo.tpot_ms`, its TTFT at `slo.ttft_quantile`
    within `slo.ttft_ms` (each if given), its achieved rate is at least `min_throughput_ratio` of the
    offered rate (otherwise a queue grows without bound, even if the requests that do run are fast), and
    no request failed.
    """
    why = []
    if point.errors:
        why.append(f"{point.errors} request(s) failed or did not finish")
    if point.num_requests == 0:
        why.append("no request completed")
        return why
    if slo.tpot_ms is not None:
        tpot = point.tpot_ms.get("mean")
        if tpot is None or tpot > slo.tpot_ms:
            why.append(f"mean TPOT {_ms(tpot)} > {slo.tpot_ms:g} ms")
    if slo.ttft_ms is not None:
        key = quantile_key(slo.ttft_quantile)
        ttft = point.ttft_ms.get(key)
        if ttft is None or ttft > slo.ttft_ms:
            why.append(f"TTFT {key} {_ms(ttft)} > {slo.ttft_ms:g} ms")
    if point.achieved_rate < min_throughput_ratio * point.offered_rate:
        why.append(
            f"achieved {point.achieved_rate:.3g} req/s < {min_throughput_ratio:.0%} of offered {point.offered_rate:.3g}"
        )
    return why


def meets_slo(point: SweepPoint, slo: SLO, min_throughput_ratio: float = MIN_THROUGHPUT_RATIO) -> bool:
    return not slo_violations(point, slo, min_throughput_ratio)


def quantile_key(q: float) -> str:
    """The name a quantile is stored under in `SweepPoint.ttft_ms` (0.9 -> 'p90', 0.995 -> 'p99.5')."""
    return f"p{q * 100:g}"


def bucket_capacity(points: list[SweepPoint]) -> float | None:
    """The highest passing rate of one bucket's points that no failing point lies at or below.

    For a sweep made by `rayhet.profiling.search` every pass lies below every fail, and this is simply the
    highest passing rate; for a noisy sweep (a pass above a fail) the lower, safe answer is kept.
    None when no point passes.
    """
    return bracket([(p.offered_rate, p.meets_slo) for p in points])[0]


def derive_max_rate(sweep: list[SweepPoint], n_in: int, n_out: int) -> list[list[float | None]]:
    """`max_rate[i][j]` of a profile from its raw sweep (null where nothing passed or nothing was measured)."""
    by_bucket: dict[tuple[int, int], list[SweepPoint]] = {}
    for p in sweep:
        by_bucket.setdefault((p.input_bucket, p.output_bucket), []).append(p)
    return [[bucket_capacity(by_bucket.get((i, j), [])) for j in range(n_out)] for i in range(n_in)]


def _ms(x: float | None) -> str:
    return "missing" if x is None else f"{x:.1f} ms"
