"""Traffic: what the ingress saw over a sliding window, per size bucket and per pool, for the controller.

Pure. `TrafficRecorder` keeps one-second bins over `window_s`; `snapshot()` returns a
`rayhet.messages.TrafficSnapshot` (its fields are the schema) that the ingress reports to the controller,
and `merge_snapshots()` sums the snapshots of several ingress replicas.

Counts from different plans' grids are not mixed: `set_grid()` clears them.
"""

from __future__ import annotations

import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Literal

from rayhet.messages import Cell, LatencyStats, PoolTraffic, TrafficSnapshot

_BIN_S = 1.0
_MAX_LATENCY_SAMPLES = 2048  # per pool per window, enough for a p99


@dataclass
class _PoolBin:
    requests: int = 0
    ok: int = 0
    errors: int = 0
    spilled_out: int = 0
    spilled_in: int = 0
    slo_ok: int = 0
    ttft_ms: list[float] = field(default_factory=list)
    tpot_ms: list[float] = field(default_factory=list)


@dataclass
class _Bin:
    start: float
    arrivals: Counter = field(default_factory=Counter)
    completions: Counter = field(default_factory=Counter)
    rejected: int = 0
    clipped: int = 0
    pools: dict[str, _PoolBin] = field(default_factory=dict)

    def pool(self, name: str) -> _PoolBin:
        b = self.pools.get(name)
        if b is None:
            b = self.pools[name] = _PoolBin()
        return b


def _stats(values: list[float]) -> LatencyStats | None:
    if not values:
        return None
    v = sorted(values)
    n = len(v)

    def q(p: float) -> float:
        return round(v[min(n - 1, int(p * n))], 3)

    return LatencyStats(mean=round(sum(v) / n, 3), p50=q(0.5), p90=q(0.9), p99=q(0.99))


class TrafficRecorder:
    """Sliding-window counters. Not thread-safe; call from one event loop."""

    def __init__(self, input_edges: list[int], output_edges: list[int], pools: list[str], window_s: float = 60.0,
                 slo_ttft_ms: float | None = None, slo_tpot_ms: float | None = None,
                 clock=time.monotonic, wall_clock=time.time):
        self.window_s = window_s
        self.pools = list(pools)
        self.slo_ttft_ms = slo_ttft_ms
        self.slo_tpot_ms = slo_tpot_ms
        self._clock = clock
        self._wall = wall_clock
        self._in_flight: Counter = Counter()
        self.set_grid(input_edges, output_edges)

    def set_grid(self, input_edges: list[int], output_edges: list[int]) -> None:
        """Adopt a new plan's grid; bucket counts start again (pool outcomes too, for one window)."""
        if getattr(self, "input_edges", None) == list(input_edges) and self.output_edges == list(output_edges):
            return
        self.input_edges, self.output_edges = list(input_edges), list(output_edges)
        self._bins: deque[_Bin] = deque()
        self._since = self._clock()

    def _bin(self, now: float | None = None) -> _Bin:
        now = self._clock() if now is None else now
        self._expire(now)
        if not self._bins or now - self._bins[-1].start >= _BIN_S:
            self._bins.append(_Bin(start=now - (now - self._since) % _BIN_S))
        return self._bins[-1]

    def _expire(self, now: float) -> None:
        while self._bins and self._bins[0].start + _BIN_S <= now - self.window_s:
            self._bins.popleft()

    # -- recording -----------------------------------------------------------------------------
    def arrival(self, bucket: tuple[int, int] | None, clipped: bool = False, now: float | None = None) -> None:
        """A request was routed to `bucket` (None: rejected, no pool could take it)."""
        b = self._bin(now)
        if bucket is None:
            b.rejected += 1
        else:
            b.arrivals[bucket] += 1
            b.clipped += int(clipped)

    def started(self, pool: str, spilled_from: str | None = None, now: float | None = None) -> None:
        """A request was sent to `pool` (after a spill from `spilled_from`, if given)."""
        b = self._bin(now)
        b.pool(pool).requests += 1
        self._in_flight[pool] += 1
        if spilled_from is not None:
            b.pool(spilled_from).spilled_out += 1
            b.pool(pool).spilled_in += 1

    def finished(self, pool: str, *, ok: bool, ttft_s: float | None = None, tpot_s: float | None = None,
                 bucket: tuple[int, int] | None = None, now: float | None = None) -> None:
        """A request sent to `pool` ended: ok (with its latencies and actual bucket) or failed."""
        b = self._bin(now)
        p = b.pool(pool)
        self._in_flight[pool] -= 1
        if not ok:
            p.errors += 1
            return
        p.ok += 1
        if bucket is not None:
            b.completions[bucket] += 1
        if ttft_s is not None and len(p.ttft_ms) < _MAX_LATENCY_SAMPLES:
            p.ttft_ms.append(ttft_s * 1000)
        if tpot_s is not None and len(p.tpot_ms) < _MAX_LATENCY_SAMPLES:
            p.tpot_ms.append(tpot_s * 1000)
        met = (self.slo_ttft_ms is None or (ttft_s is not None and ttft_s * 1000 <= self.slo_ttft_ms)) and (
            self.slo_tpot_ms is None or tpot_s is None or tpot_s * 1000 <= self.slo_tpot_ms)
        p.slo_ok += int(met)

    def abandoned(self, pool: str) -> None:
        """A request sent to `pool` was given up before it ran (it will be retried elsewhere): not an error."""
        self._in_flight[pool] -= 1

    # -- reading -------------------------------------------------------------------------------
    def completion_rates(self) -> dict[str, float]:
        """Requests each pool finished (ok) per second over the window: how fast its queue drains."""
        now = self._clock()
        self._expire(now)
        window = min(self.window_s, max(now - self._since, 1.0))
        done: Counter = Counter()
        for b in self._bins:
            for name, pb in b.pools.items():
                done[name] += pb.ok
        return {name: n / window for name, n in done.items()}

    def snapshot(self) -> TrafficSnapshot:
        """The window as it stands (send it as `model_dump()`: plain data through Ray)."""
        now = self._clock()
        self._expire(now)
        arrivals, completions = Counter(), Counter()
        rejected = clipped = 0
        pools: dict[str, _PoolBin] = {n: _PoolBin() for n in self.pools}
        for b in self._bins:
            arrivals.update(b.arrivals)
            completions.update(b.completions)
            rejected += b.rejected
            clipped += b.clipped
            for name, pb in b.pools.items():
                acc = pools.setdefault(name, _PoolBin())
                for k in ("requests", "ok", "errors", "spilled_out", "spilled_in", "slo_ok"):
                    setattr(acc, k, getattr(acc, k) + getattr(pb, k))
                acc.ttft_ms += pb.ttft_ms
                acc.tpot_ms += pb.tpot_ms
        has_slo = self.slo_ttft_ms is not None or self.slo_tpot_ms is not None
        return TrafficSnapshot(
            time=self._wall(),
            window_s=round(min(self.window_s, max(now - self._since, 1e-9)), 3),
            input_edges=self.input_edges,
            output_edges=self.output_edges,
            arrivals=_cells(arrivals),
            completions=_cells(completions),
            rejected=rejected,
            clipped=clipped,
            pools={
                name: PoolTraffic(
                    requests=p.requests, ok=p.ok, errors=p.errors, spilled_out=p.spilled_out,
                    spilled_in=p.spilled_in, in_flight=max(0, self._in_flight.get(name, 0)),
                    ttft_ms=_stats(p.ttft_ms), tpot_ms=_stats(p.tpot_ms), slo_ok=p.slo_ok if has_slo else None,
                )
                for name, p in sorted(pools.items())
            },
        )


def _cells(counts: Counter) -> list[Cell]:
    return [(i, j, c) for (i, j), c in sorted(counts.items())]


def rates(snapshot: TrafficSnapshot,
          key: Literal["arrivals", "completions"] = "arrivals") -> dict[tuple[int, int], float]:
    """Per-bucket rate (req/s) of a snapshot's `arrivals` or `completions`."""
    w = snapshot.window_s or 1.0
    return {(i, j): c / w for i, j, c in getattr(snapshot, key)}


def merge_snapshots(snaps: list[TrafficSnapshot]) -> TrafficSnapshot:
    """Sum snapshots of several ingress replicas. Only those on the first one's grid count (a replica that has
    not adopted the plan in force yet would mix buckets of another grid); latency stats: the worst replica's
    (an upper bound: percentiles do not add up)."""
    if not snaps:
        raise ValueError("no snapshots to merge")
    first = snaps[0]
    snaps = [s for s in snaps if (s.input_edges, s.output_edges) == (first.input_edges, first.output_edges)]
    pools: dict[str, PoolTraffic] = {}
    for s in snaps:
        for name, p in s.pools.items():
            pools[name] = _merge_pool(pools[name], p) if name in pools else p
    return TrafficSnapshot(
        time=first.time,
        window_s=max(s.window_s for s in snaps),
        input_edges=first.input_edges,
        output_edges=first.output_edges,
        arrivals=_sum_cells(s.arrivals for s in snaps),
        completions=_sum_cells(s.completions for s in snaps),
        rejected=sum(s.rejected for s in snaps),
        clipped=sum(s.clipped for s in snaps),
        pools=pools,
    )


def _sum_cells(cell_lists) -> list[Cell]:
    acc: Counter = Counter()
    for cells in cell_lists:
        for i, j, c in cells:
            acc[(i, j)] += c
    return _cells(acc)


def _merge_pool(a: PoolTraffic, b: PoolTraffic) -> PoolTraffic:
    def worst(x: LatencyStats | None, y: LatencyStats | None) -> LatencyStats | None:
        return y if y is not None and (x is None or y.p99 > x.p99) else x

    return PoolTraffic(
        requests=a.requests + b.requests, ok=a.ok + b.ok, errors=a.errors + b.errors,
        spilled_out=a.spilled_out + b.spilled_out, spilled_in=a.spilled_in + b.spilled_in,
        in_flight=a.in_flight + b.in_flight,
        ttft_ms=worst(a.ttft_ms, b.ttft_ms), tpot_ms=worst(a.tpot_ms, b.tpot_ms),
        slo_ok=a.slo_ok if b.slo_ok is None else (a.slo_ok or 0) + b.slo_ok,
    )
