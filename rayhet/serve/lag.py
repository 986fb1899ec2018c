"""How late the ingress replica's event loop runs: the load-shedding signal.

Why: on the GPU machine's real day (benchmarks/results/day-h200-real-2.md) the engine had room while one ingress
replica was saturated (1.6 cores): every request then waited seconds in its event loop before rayhet's handler
ran, and those that were refused were refused after ~2 s. A replica that knows its loop is late refuses new
requests at once (429, cheap: no tokenizing, no pool call, no stream), which keeps the loop on time for the
requests it serves and makes refusals take about the lateness bound instead of the whole backlog.

`LoopLag.run()` wakes every `interval_s`; `late_s(now)` is how late it last woke, or, when its wake-up is
overdue, how overdue it is: a loop stuck for 2 s reads 2 s late *during* those seconds, not after.
"""

from __future__ import annotations

import asyncio
import time


class LoopLag:
    def __init__(self, interval_s: float = 0.025, clock=time.monotonic):
        self.interval_s = interval_s
        self._clock = clock
        self._last_late = 0.0
        self._due: float | None = None  # when the ticker should next wake (None: not running)

    def late_s(self, now: float | None = None) -> float:
        now = self._clock() if now is None else now
        overdue = now - self._due if self._due is not None else 0.0
        return max(self._last_late, overdue, 0.0)

    def woke(self, now: float) -> None:
        """The ticker ran at `now` (it was due at `self._due`)."""
        if self._due is not None:
            self._last_late = max(0.0, now - self._due)
        self._due = now + self.interval_s

    async def run(self) -> None:
        self.woke(self._clock())
        while True:
            await asyncio.sleep(self.interval_s)
            self.woke(self._clock())


def shed(late_s: float, bound_s: float | None) -> bool:
    """Refuse a new request: the loop is later than `bound_s` (None: never)."""
    return bound_s is not None and late_s > bound_s
