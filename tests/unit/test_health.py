"""`/health`'s verdict (pure): 200 when every pool the plan routes to can serve, 503 naming the pools that cannot."""

from __future__ import annotations

import time

from rayhet.plan import Plan
from rayhet.serve.health import PoolState, judge, routed_pools

PLAN = Plan({"small": 1, "big": 1, "spare": 0}, {(0, 0): {"small": 1.0}, (0, 1): {"big": 0.75, "small": 0.25},
                                                  (1, 1): {"spare": 0.0, "big": 1.0}}, [256, 1024], [32, 256], cost_per_hour=1.0, rate=1.0)


def test_routed_pools_skip_zero_shares():
    assert routed_pools(PLAN) == {"small", "big"}


def test_ok_when_every_routed_pool_runs_or_is_scaled_to_zero_on_purpose():
    states = {"small": PoolState("HEALTHY", 2), "big": PoolState("HEALTHY", 0), "spare": PoolState("UNHEALTHY", 0)}
    code, body = judge(PLAN, states, 100.0, 101.5)
    assert code == 200 and body["status"] == "ok" and body["checked_s_ago"] == 1.5
    assert body["pools"]["big"]["detail"] == "scaled to zero; starts on demand"
    assert body["pools"]["spare"] == {"routed": False, "ok": False, "detail": "no running replica (UNHEALTHY)",
                                      "status": "UNHEALTHY", "running": 0}


def test_unavailable_when_a_routed_pool_cannot_serve():
    code, body = judge(PLAN, {"small": PoolState("UPDATING", 0), "big": PoolState("HEALTHY", 1)}, 1.0, 2.0)
    assert code == 503 and body["status"] == "unavailable" and "small" in body["reason"]
    code, body = judge(PLAN, {"small": PoolState("HEALTHY", 1)}, 1.0, 2.0)  # big's deployment is missing
    assert code == 503 and body["pools"]["big"]["detail"] == "no such deployment in the app"


def test_starting_before_the_first_read():
    assert judge(PLAN, None, None, 5.0)[0] == 503


def test_fresh_never_settles_for_a_read_that_began_before_it_was_asked():
    """Found in CI right after a deploy: a slow serve.status() read began while the pool's replica was starting
    and ended after it ran; stamped with its end, it passed for fresh and the request was refused (503, no
    running replica). A read counts from when it began, and fresh() reads once more after joining a stale one."""
    import asyncio
    import threading

    from rayhet.serve.health import PoolState, PoolWatcher

    running = threading.Event()
    first_read_started = threading.Event()
    reads = []

    class Slow(PoolWatcher):
        def read(self):
            n = 0 if not running.is_set() else 1
            reads.append(n)
            first_read_started.set()
            if len(reads) == 1:
                time.sleep(0.6)  # the replica starts while this read is still out
            return {"a": PoolState("UPDATING" if n == 0 else "HEALTHY", n)}

    async def main():
        w = Slow("app", {"a": "pool-a"})
        background = asyncio.ensure_future(w._read_once())  # the watcher's own loop, mid-read
        await asyncio.get_running_loop().run_in_executor(None, first_read_started.wait)
        running.set()
        await asyncio.sleep(0.3)
        states = await w.fresh(max_age_s=0.25)  # a request that found no running replica asks again
        await background
        return states

    states = asyncio.run(main())
    assert states["a"].running == 1, reads
    assert reads == [0, 1]
