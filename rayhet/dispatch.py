"""Dispatch: what the ingress decides and records for each request, without I/O.

The ingress (rayhet.serve.ingress) does the HTTP, the tokenizing and the calls to pools; everything it
decides about a request is here: the route (rayhet.routing's Router and output-length predictor, as the
config's `routing:` sets them up), which pools to try (spill-over), and what each outcome means for the
traffic record the controller reads and for the predictor. `rayhet simulate` drives the same object with
a simulated clock, so a simulated request is routed, spilled and counted exactly as a live one.
"""

from __future__ import annotations

import time
from typing import Callable

from rayhet.plan import Plan
from rayhet.routing import PoolLimit, Route, Router, make_predictor
from rayhet.traffic import TrafficRecorder


class Dispatcher:
    """One ingress replica's routing state. `now` arguments are the injected clock's time (default: now)."""

    def __init__(self, config, plan: Plan, limits: list[PoolLimit], pools: list[str], *,
                 clock: Callable[[], float] = time.monotonic, wall_clock: Callable[[], float] = time.time):
        self.config = config  # a RayhetConfig
        self.clock = clock
        self.router = Router(plan, limits, self._predictor(plan))
        slo = config.slo
        self.traffic = TrafficRecorder(plan.input_edges, plan.output_edges, list(pools), config.server.traffic_window_s,
                                       slo_ttft_ms=slo.ttft_ms if slo else None,
                                       slo_tpot_ms=slo.tpot_ms if slo else None, clock=clock, wall_clock=wall_clock)

    def _predictor(self, plan: Plan):
        """A fresh output-length predictor for the plan's input grid, as `routing:` configures it."""
        r = self.config.routing
        return make_predictor(r.predictor, plan.input_edges, quantile=r.predictor_quantile,
                              window=r.predictor_window, min_samples=r.predictor_min_samples)

    def update_plan(self, plan: Plan) -> None:
        """Adopt a new plan (the controller's). A new grid restarts the predictor and traffic bucket counts."""
        old = self.router.plan
        if (plan.input_edges, plan.output_edges) != (old.input_edges, old.output_edges):
            self.router.predictor = self._predictor(plan)
            self.traffic.set_grid(plan.input_edges, plan.output_edges)
        self.router.set_plan(plan)

    # -- one request -------------------------------------------------------------------------------
    def route(self, input_tokens: int, max_tokens: int, now: float | None = None) -> Route:
        """The pools to try, in order, and the arrival recorded (a request no pool fits counts as rejected)."""
        now = self.clock() if now is None else now
        route = self.router.decide(input_tokens, max_tokens, now)
        self.traffic.arrival(route.bucket if route.pools else None, route.clipped, now)
        return route

    def tries(self, route: Route) -> list[str]:
        """The pools actually tried: the first choice, then spill-overs up to `routing.max_attempts`."""
        r = self.config.routing
        return route.pools[: r.max_attempts if r.spill else 1]

    def order(self, route: Route, running: Callable[[str], int | None], usable: Callable[[str], bool]) -> list[str]:
        """The pools to try for `route`, as they stand: its planned pools that can take a request now
        (`available`), then, with spill-over on, pools the plan no longer gives replicas to that still run one
        (a plan just moved to a GPU pool whose replica starts while the CPU pool's are held by the scale-down
        delay): serving there beats refusing."""
        out = self.available(self.tries(route), running, usable)
        if self.config.routing.spill:
            out += [p for p in route.standby if p not in out and (running(p) or 0) > 0]
        return out

    @staticmethod
    def available(planned: list[str], running: Callable[[str], int | None], usable: Callable[[str], bool]) -> list[str]:
        """The planned pools to try, in their order: those with a running replica (or an unknown count, None)
        first; then a pool without one that can still take a request (Serve scaled it to zero on purpose and
        starts one on demand); a pool whose replicas are only starting, never: a request would wait out its
        start-up (90 s for vLLM) where another pool could serve it now. The live ingress and the simulator both
        order by this."""
        counts = {p: running(p) for p in planned}
        up = [p for p in planned if counts[p] is None or counts[p] > 0]
        return up + [p for p in planned if p not in up and usable(p)]

    def sent(self, pool: str, spilled_from: str | None = None, now: float | None = None) -> None:
        self.traffic.started(pool, spilled_from=spilled_from, now=now)

    def pushed_back(self, pool: str) -> None:
        """The pool refused before running it (backpressure, overload): not an error; the next pool is tried."""
        self.traffic.abandoned(pool)

    def cancelled(self, pool: str) -> None:
        """The client went away before the pool answered."""
        self.traffic.abandoned(pool)

    def failed(self, pool: str, now: float | None = None) -> None:
        """The pool failed the request: an error for the pool, which is tried last for a while."""
        now = self.clock() if now is None else now
        self.traffic.finished(pool, ok=False, now=now)
        self.router.mark_failed(pool, now)

    def failed_midway(self, pool: str, now: float | None = None) -> None:
        """The pool failed after its first token: an error, no spill (the client already has output)."""
        self.traffic.finished(pool, ok=False, now=now)

    def succeeded(self, pool: str, route: Route, n_out: int, max_tokens: int, ttft_s: float, decode_s: float,
                  now: float | None = None) -> None:
        """A request finished on `pool` with `n_out` tokens: record its latencies and actual bucket, and teach
        the predictor its output length."""
        tpot = decode_s / (n_out - 1) if n_out > 1 else None
        bucket, _ = self.router.bucket_of(route.input_tokens, max(1, n_out))
        self.traffic.finished(pool, ok=True, ttft_s=ttft_s, tpot_s=tpot, bucket=bucket, now=now)
        self.router.observe(route.input_tokens, n_out, max_tokens)
