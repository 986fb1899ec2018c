"""Admission: how many requests one ingress replica lets wait on each pool, and how long a refused client
should wait before trying again. Pure (no Ray, no clock of its own).

A pool holds `replicas x max_ongoing_requests` requests (its batch slots plus `queue_per_replica` each) and
Serve lets `max_queued_requests` more wait at the caller; beyond that it raises BackPressureError. The
ingress used to learn that only by calling, and under overload its own event loop and Serve's proxy queued
requests for tens of seconds before any pool could refuse them. Here the ingress counts what it has sent
to each pool and stops at the same bound (shared out among the ingress replicas), so that:
- a request whose pools are all full is refused before its body is even read (`saturated`), in
  milliseconds, with a 429 and a `Retry-After`;
- a full pool is skipped at once (spill-over) instead of after a round trip.

`retry_after_s` is the time the fullest queue of the request's pools needs to drain one place at the
rate the pool has been completing requests (the traffic window's), bounded to [1, 60] s; with no running
replica anywhere, the pools' start-up time.
"""

from __future__ import annotations

import math
import weakref
from dataclasses import dataclass, field


@dataclass(frozen=True)
class PoolRoom:
    """A pool's bounds per replica, as its Serve deployment has them."""

    slots: int  # requests one replica runs at once (batch slots)
    queue_per_replica: int  # ... and lets wait beyond them (max_ongoing_requests = slots + this)
    queued_at_caller: int  # Serve's max_queued_requests (-1: unbounded: this pool never refuses)
    startup_s: float = 10.0  # a new replica's start-up time (the Retry-After when none runs)


class Ticket:
    """One admitted request; `release()` (idempotent) gives its place back, as does losing the ticket."""

    __slots__ = ("pool", "_release", "__weakref__")

    def __init__(self, admission: "Admission", pool: str):
        self.pool = pool
        self._release = weakref.finalize(self, admission._leave, pool)

    def release(self) -> None:
        self._release()


@dataclass
class Admission:
    rooms: dict[str, PoolRoom]
    ingress_replicas: int = 1
    running: dict[str, int] = field(default_factory=dict)  # replicas that can serve, per pool (as last seen)
    in_flight: dict[str, int] = field(default_factory=dict)  # sent by this ingress replica, not finished

    def set_running(self, running: dict[str, int]) -> None:
        self.running.update(running)

    def limit(self, pool: str) -> int | None:
        """Requests this ingress replica may have on `pool` at once; None: no bound."""
        room = self.rooms.get(pool)
        if room is None or room.queued_at_caller < 0:
            return None
        n = self.running.get(pool, 1)
        total = n * (room.slots + room.queue_per_replica) + room.queued_at_caller
        return max(1, math.ceil(total / max(1, self.ingress_replicas)))

    def has_room(self, pool: str) -> bool:
        lim = self.limit(pool)
        return lim is None or self.in_flight.get(pool, 0) < lim

    def saturated(self) -> bool:
        """Every pool is at its bound: any request would be refused, so refuse before reading it."""
        return bool(self.rooms) and not any(self.has_room(p) for p in self.rooms)

    def enter(self, pool: str) -> Ticket:
        self.in_flight[pool] = self.in_flight.get(pool, 0) + 1
        return Ticket(self, pool)

    def _leave(self, pool: str) -> None:
        self.in_flight[pool] = max(0, self.in_flight.get(pool, 0) - 1)

    def retry_after_s(self, pools: list[str], completions_per_s: dict[str, float]) -> int:
        """Seconds a refused client should wait (see module docstring)."""
        pools = [p for p in pools if p in self.rooms] or list(self.rooms)
        if not pools:
            return 1
        if all(self.running.get(p, 1) == 0 for p in pools):
            return _clamp(min(self.rooms[p].startup_s for p in pools))
        waits = []
        for p in pools:
            if self.running.get(p, 1) == 0:
                continue
            waiting = self.in_flight.get(p, 0) - self.running.get(p, 1) * self.rooms[p].slots + 1
            rate = completions_per_s.get(p, 0.0)
            waits.append(waiting / rate if rate > 0 else 1.0)
        return _clamp(min(waits))


def _clamp(seconds: float) -> int:
    return int(min(60, max(1, math.ceil(seconds))))
