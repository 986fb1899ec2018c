"""Reliability on real Serve replicas (fake engine: slow on purpose, so requests are in flight when a replica
dies): a killed replica's non-streamed requests are sent again and all answered; a pool that cannot be
scheduled is spilled from at once instead of holding requests; the controller-less app refuses fast with
Retry-After when every pool is full. The same logic is tested without Ray in
tests/unit/test_ingress_reliability.py."""

from __future__ import annotations

import concurrent.futures
import time

import pytest

pytestmark = pytest.mark.serve


def _post(url: str, body: dict, timeout: float = 30.0):
    import httpx

    t0 = time.monotonic()
    r = httpx.post(f"{url}/v1/completions", json=body, timeout=timeout)
    return r, time.monotonic() - t0


def _replica_actors(app: str, deployment: str) -> list:
    import ray

    names = [a for a in ray.util.list_named_actors(all_namespaces=True)
             if a["namespace"] == "serve" and f"{app}#{deployment}#" in a["name"]]
    return [ray.get_actor(a["name"], namespace="serve") for a in names]


def _deploy(app: str, prefix: str, config: dict, url: str, blocking: bool = True) -> str:
    import httpx
    from ray.serve import api

    from rayhet.app import build

    api._run(build({"config": config}), _blocking=blocking, name=app, route_prefix=prefix)
    base = f"{url}{prefix}"
    deadline = time.monotonic() + 120
    while True:  # unblocked: the ingress answers before every pool is up
        try:
            if httpx.get(f"{base}/v1/models", timeout=5).status_code == 200:
                return base
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, "the ingress did not come up"
        time.sleep(0.5)


KILL_APP, KILL_PREFIX = "reliab-kill", "/reliab-kill"
KILL_CONFIG = {
    "model": {"id": "fake"},
    "pools": [{"name": "a", "engine": "fake", "num_cpus": 0, "initial_replicas": 2,
               "engine_settings": {"ttft_s": 2.0, "n_slots": 8}}],
    "server": {"ingress_num_cpus": 0},
}


def test_requests_on_a_killed_replica_are_sent_again_and_none_is_lost(serve_url):
    import ray
    from ray import serve

    base = _deploy(KILL_APP, KILL_PREFIX, KILL_CONFIG, serve_url)
    try:
        body = {"model": "fake", "prompt": "hello", "max_tokens": 4}
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            futures = [pool.submit(_post, base, body) for _ in range(8)]
            time.sleep(1.0)  # all 8 are on the two replicas, waiting out their 2 s first token
            victim = _replica_actors(KILL_APP, "pool-a")[0]
            ray.kill(victim, no_restart=True)
            results = [f.result() for f in futures]
        codes = [r.status_code for r, _ in results]
        assert codes == [200] * 8, [(r.status_code, r.text[:200]) for r, _ in results if r.status_code != 200]
    finally:
        serve.delete(KILL_APP)


STUCK_APP, STUCK_PREFIX = "reliab-stuck", "/reliab-stuck"
STUCK_CONFIG = {
    "model": {"id": "fake"},
    "pools": [
        {"name": "small", "engine": "fake", "num_cpus": 0, "price_per_hour": 1.0},
        # no node has this resource: the pool's replica never starts
        {"name": "big", "engine": "fake", "num_cpus": 0, "price_per_hour": 2.0, "resources": {"rayhet_nowhere": 1}},
    ],
    "server": {"ingress_num_cpus": 0},
}


def test_a_pool_that_cannot_be_scheduled_is_spilled_from_and_nothing_hangs(serve_url):
    from ray import serve

    base = _deploy(STUCK_APP, STUCK_PREFIX, STUCK_CONFIG, serve_url, blocking=False)
    try:
        deadline = time.monotonic() + 60  # `small` up (`big` never will be)
        while serve.status().applications[STUCK_APP].deployments["pool-small"].replica_states.get("RUNNING", 0) < 1:
            assert time.monotonic() < deadline, "pool small did not start"
            time.sleep(0.5)
        body = {"model": "fake", "prompt": "hello", "max_tokens": 4}
        with concurrent.futures.ThreadPoolExecutor(6) as pool:
            results = list(pool.map(lambda _: _post(base, body, timeout=20), range(6)))
        for r, dt in results:
            assert r.status_code == 200, r.text
            assert r.headers["x-rayhet-pool"] == "small"
            assert dt < 5.0, dt  # at most the ingress's first look at the pools' states (1 s), never a hang
        stream = []
        import httpx

        with httpx.stream("POST", f"{base}/v1/completions", json=dict(body, stream=True), timeout=20) as r:
            assert r.status_code == 200
            stream = [line for line in r.iter_lines() if line]
        assert stream[-1] == "data: [DONE]"
    finally:
        serve.delete(STUCK_APP)
