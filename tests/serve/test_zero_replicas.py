"""A static plan (no controller) that gives a pool 0 replicas still deploys: the pool exists with none, out of
routing, and the app serves from the others. (Serve refuses num_replicas=0; the builder scales it from zero.)"""

from __future__ import annotations

import time

import pytest

from rayhet.testing.driver import call_deployment

pytestmark = pytest.mark.serve

APP = "zero"
PREFIX = "/zero"
CONFIG = {
    "model": {"id": "fake"},
    "pools": [
        {"name": "on", "engine": "fake", "num_cpus": 0},
        {"name": "off", "engine": "fake", "num_cpus": 0, "initial_replicas": 0},
    ],
    "server": {"ingress_num_cpus": 0},
}


def test_a_pool_planned_at_zero_replicas_deploys_and_the_app_serves(serve_url):
    import httpx
    from ray import serve

    from rayhet.testing.driver import deployed

    with deployed(CONFIG, APP, PREFIX):
        r = httpx.post(f"{serve_url}{PREFIX}/v1/completions", timeout=30,
                       json={"model": "fake", "prompt": "hello", "max_tokens": 3})
        assert r.status_code == 200, r.text
        deps = serve.status().applications[APP].deployments
        assert deps["pool-off"].replica_states.get("RUNNING", 0) == 0
        on = call_deployment(APP, "pool-on", "stats")
        assert on["counters"]["ok"] == 1
        deadline = time.monotonic() + 30  # /health reads the pools' states every 2 s in the background
        while (h := httpx.get(f"{serve_url}{PREFIX}/health", timeout=10)).status_code != 200:
            assert time.monotonic() < deadline, h.text
            time.sleep(0.2)
        assert h.json()["pools"]["off"]["routed"] is False
