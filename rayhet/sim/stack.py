"""The HTTP stack in front of the pools: Serve's proxy, then the ingress replicas, as servers with a capacity.

Why: on the GPU machine (benchmarks/results/stack-h200.md, day-h200-real-2.md) the engine was never the limit
of a real day; one ingress replica carried ~55 streamed req/s and Serve's proxy (one per node) ~90, and past
that requests waited seconds before rayhet's router saw them. A simulator that lets every request through at
once promised 100 % SLO attainment where the real day had 60 %.

Each stage is a bank of FIFO servers that each take a request every 1/capacity seconds (the proxy: one; the
ingress: one per replica). Only the *wait* for a free server is added to a request: the time a lone request
spends crossing the stack is already in each pool's ServingOverhead.request_s, measured end to end. A request
that would wait longer than `server.shed_lag_ms` for an ingress replica is refused, as the live ingress sheds
load when its event loop runs that late (rayhet.serve.lag).
Pure: times in, times out.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field


@dataclass
class Stage:
    """`servers` FIFO servers, each busy 1/`rate` s per request (rate None: no limit)."""

    servers: int
    rate: float | None
    _free: list[float] = field(default_factory=list)  # heap of the times each server is next free

    def __post_init__(self) -> None:
        self._free = [0.0] * self.servers

    def enter(self, t: float, max_wait: float | None = None) -> float | None:
        """A request arriving at `t` starts being handled at the returned time (>= t); None: it would wait more
        than `max_wait`, and is refused without taking a server's time."""
        if self.rate is None:
            return t
        start = max(t, self._free[0])
        if max_wait is not None and start - t > max_wait:
            return None
        heapq.heapreplace(self._free, start + 1.0 / self.rate)
        return start


@dataclass
class HttpStack:
    """Serve's proxy, then the ingress replicas. `reach(t)`: when a request that arrived at `t` reaches the
    router."""

    proxy: Stage
    ingress: Stage
    shed_s: float | None = None  # an ingress replica refuses what would wait longer (server.shed_lag_ms)

    @classmethod
    def from_server(cls, server) -> "HttpStack":
        """From rayhet.config.ServerConfig: ingress_replicas, ingress_capacity_rps, proxy_capacity_rps, shed_lag_ms."""
        return cls(Stage(1, server.proxy_capacity_rps), Stage(server.ingress_replicas, server.ingress_capacity_rps),
                   None if server.shed_lag_ms is None else server.shed_lag_ms / 1000)

    def reach(self, t: float) -> float | None:
        """When a request that arrived at `t` reaches the router; None: an ingress replica sheds it (its loop
        would run later than shed_s), answering 429 about shed_s after it got there."""
        return self.ingress.enter(self.proxy.enter(t), self.shed_s)

    def capacity_rps(self) -> float | None:
        """Requests per second the stack carries (None: unlimited)."""
        rates = [s.servers * s.rate for s in (self.proxy, self.ingress) if s.rate is not None]
        return min(rates) if rates else None


def ingress_replicas_needed(peak_rps: float, ingress_capacity_rps: float | None, utilisation: float = 0.8) -> int:
    """Ingress replicas that carry `peak_rps` at no more than `utilisation` of their capacity (a FIFO server near
    100 % busy makes every request wait)."""
    if ingress_capacity_rps is None or peak_rps <= 0:
        return 1
    return max(1, -int(-peak_rps // (ingress_capacity_rps * utilisation)))
