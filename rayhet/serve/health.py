"""Health: whether the app can serve, for the ingress's `/health`: every pool the plan routes to has a replica.

`PoolWatcher` refreshes the pools' deployment states from `serve.status()` every `REFRESH_S` on the replica's
event loop (the blocking call in its own thread, bounded by a timeout), so `/health` only reads a cached
answer. `judge()` is pure: 200 when every routed pool can serve, 503 (with the per-pool detail) otherwise.

This is the *application's* health, for load balancers and probes that should stop sending traffic when
rayhet cannot serve it. It is not the ingress replica's Serve health check (a pool outage must not make
Serve restart ingress replicas) nor the Serve proxy's own `/-/healthz` (liveness of the HTTP proxy).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import time
from dataclasses import dataclass

from rayhet.plan import Plan

log = logging.getLogger("ray.serve")

REFRESH_S = 1.0  # the ingress also routes by these states: a pool that lost its replicas is skipped within it
TIMEOUT_S = 10.0


@dataclass(frozen=True)
class PoolState:
    status: str  # Serve's DeploymentStatus: HEALTHY, UPDATING, UPSCALING, DOWNSCALING, UNHEALTHY, DEPLOY_FAILED
    running: int  # replicas in state RUNNING (started and passing their health checks)


def routed_pools(plan: Plan) -> set[str]:
    """Pools that get a share of some bucket in the plan."""
    return {p for shares in plan.routing.values() for p, s in shares.items() if s > 0}


def can_serve(st: PoolState | None) -> tuple[bool, str]:
    """A pool can serve with a running replica, or when Serve scaled it to zero on purpose (HEALTHY at 0
    replicas: its policy starts one when a request waits for it)."""
    if st is None:
        return False, "no such deployment in the app"
    if st.running > 0:
        return True, f"{st.running} running"
    if st.status == "HEALTHY":
        return True, "scaled to zero; starts on demand"
    return False, f"no running replica ({st.status})"


def judge(plan: Plan, states: dict[str, PoolState] | None, checked_at: float | None, now: float) -> tuple[int, dict]:
    """(HTTP status, body) of `/health` from the last refresh (None: none yet)."""
    if states is None:
        return 503, {"status": "starting", "reason": "pool states not read yet"}
    routed = routed_pools(plan)
    pools, down = {}, []
    for name in sorted(set(states) | routed):
        st = states.get(name)
        ok, why = can_serve(st)
        pools[name] = {"routed": name in routed, "ok": ok, "detail": why,
                       "status": st.status if st else None, "running": st.running if st else 0}
        if name in routed and not ok:
            down.append(name)
    body = {"status": "unavailable" if down else "ok", "pools": pools,
            "checked_s_ago": round(now - checked_at, 1) if checked_at else None}
    if down:
        body["reason"] = "no replica can serve in pool(s) the plan routes to: " + ", ".join(down)
    return (503 if down else 200), body


class PoolWatcher:
    """Keeps the pools' last known states (`states`, `checked_at`); `run()` is the refresh loop."""

    def __init__(self, app: str, deployments: dict[str, str], refresh_s: float = REFRESH_S, on_update=None):
        self.app, self.deployments, self.refresh_s = app, deployments, refresh_s  # deployments: pool -> name
        self.on_update = on_update  # called with the new states after every successful read
        self.states: dict[str, PoolState] | None = None
        # when the read behind `states` began (not ended: serve.status() can take seconds on a busy host, and a
        # replica that started meanwhile is not in it)
        self.checked_at: float | None = None
        self._read_started = 0.0
        self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="rayhet-health")
        self._reading: asyncio.Future | None = None  # a read in progress, shared by whoever waits for one

    def read(self) -> dict[str, PoolState]:
        from ray import serve

        deps = serve.status().applications[self.app].deployments
        return {pool: PoolState(str(getattr(deps[d].status, "value", deps[d].status)),
                                int(deps[d].replica_states.get("RUNNING", 0)))
                for pool, d in self.deployments.items() if d in deps}

    async def _read_once(self) -> None:
        loop = asyncio.get_running_loop()
        if self._reading is None or self._reading.done():
            self._read_started = time.time()
            self._reading = asyncio.ensure_future(
                asyncio.wait_for(loop.run_in_executor(self._pool, self.read), TIMEOUT_S))
        started = self._read_started
        self.states = await asyncio.shield(self._reading)
        self.checked_at = started
        if self.on_update is not None:
            self.on_update(self.states)

    async def fresh(self, max_age_s: float = 0.25) -> dict[str, PoolState] | None:
        """The states, read again now unless the last read is younger than `max_age_s` (before refusing a
        request because no pool seems to have a replica: the cache may predate a replica that just started)."""
        wanted = time.time() - max_age_s
        for _ in range(2):  # a read already under way may have begun too early: join it, then read once more
            if self.checked_at is not None and self.checked_at >= wanted:
                break
            try:
                await self._read_once()
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - keep the last answer
                break
        return self.states

    async def run(self) -> None:
        failures = 0
        while True:
            try:
                await self._read_once()
                failures = 0
            except asyncio.CancelledError:
                raise
            except Exception as e:  # noqa: BLE001 - keep the last answer; say so now and then
                failures += 1
                if failures in (1, 10) or failures % 300 == 0:
                    log.warning("rayhet ingress: could not read the pools' states (%s: %s); /health answers "
                                "from the last read", type(e).__name__, e)
            await asyncio.sleep(self.refresh_s)
