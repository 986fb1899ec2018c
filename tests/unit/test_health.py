"""`/health`'s verdict (pure): 200 when every pool the plan routes to can serve, 503 naming the pools that cannot."""

from __future__ import annotations

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
