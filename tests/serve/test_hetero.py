"""Placement on a simulated heterogeneous cluster, spill-over, API keys and the body size limit.

Pools here run the FakeEngine test double (no model): these tests check Serve wiring, not generation.
"""

from __future__ import annotations

import pytest

from rayhet.messages import TrafficSnapshot
from rayhet.testing.driver import call_deployment

pytestmark = pytest.mark.serve

APP = "hetero"
PREFIX = "/het"
KEY = "sk-test-123"

CONFIG = {
    "model": {"id": "fake"},
    "pools": [
        {"name": "a10g", "engine": "fake", "accelerator_type": "A10G", "num_cpus": 0,
         "engine_settings": {"fail": True}},  # every generation fails: requests must spill to l4
        {"name": "l4", "engine": "fake", "accelerator_type": "L4", "num_cpus": 0},
    ],
    "server": {"api_keys": [KEY], "max_body_bytes": 4096, "ingress_num_cpus": 0},
}


@pytest.fixture(scope="module")
def hetero(serve_url):
    from rayhet.testing.driver import deployed

    with deployed(CONFIG, APP, PREFIX):
        yield f"{serve_url}{PREFIX}"


def test_each_pool_lands_on_its_accelerator_node(hetero, ray_cluster):
    for pool, acc in (("a10g", "A10G"), ("l4", "L4")):
        stats = call_deployment(APP, f"pool-{pool}", "stats")
        assert stats["node_id"] == ray_cluster["nodes"][acc], (pool, stats["node_id"])


def test_failed_pool_spills_to_the_next(hetero):
    import httpx

    h = {"authorization": f"Bearer {KEY}"}
    for _ in range(4):
        r = httpx.post(f"{hetero}/v1/completions", headers=h, timeout=30,
                       json={"model": "fake", "prompt": "hello", "max_tokens": 3})
        assert r.status_code == 200, r.text
        assert r.json()["usage"] == {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}
    snap = TrafficSnapshot.model_validate(call_deployment(APP, "ingress", "traffic_snapshot"))
    assert snap.pools["a10g"].errors >= 1
    assert snap.pools["l4"].ok == 4 and snap.pools["l4"].spilled_in >= 1


def test_api_key_required(hetero):
    import httpx
    from openai import AuthenticationError, OpenAI

    body = {"model": "fake", "prompt": "hi", "max_tokens": 2}
    assert httpx.post(f"{hetero}/v1/completions", json=body, timeout=30).status_code == 401
    r = httpx.post(f"{hetero}/v1/completions", json=body, headers={"authorization": "Bearer wrong"}, timeout=30)
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
    assert httpx.get(f"{hetero}/v1/models", timeout=30).status_code == 401
    with pytest.raises(AuthenticationError):
        OpenAI(base_url=f"{hetero}/v1", api_key="nope", max_retries=0).models.list()
    ok = OpenAI(base_url=f"{hetero}/v1", api_key=KEY, max_retries=0)
    assert ok.completions.create(model="fake", prompt="hi", max_tokens=2).usage.total_tokens == 4


def test_body_size_limit(hetero):
    import httpx

    h = {"authorization": f"Bearer {KEY}"}
    r = httpx.post(f"{hetero}/v1/completions", headers=h, timeout=30,
                   json={"model": "fake", "prompt": "x" * 5000, "max_tokens": 2})
    assert r.status_code == 413 and "limit" in r.json()["error"]["message"]

    def chunked():  # no content-length: the limit is enforced while reading
        yield b'{"model": "fake", "prompt": "'
        for _ in range(10):
            yield b"y" * 1000
        yield b'"}'

    r = httpx.post(f"{hetero}/v1/completions", headers=h, content=chunked(), timeout=30)
    assert r.status_code == 413


def test_backpressure_spills_to_the_next_pool(serve_url):
    """A full pool (1 running + 1 queued) makes Serve push back; the ingress sends the rest elsewhere."""
    from concurrent.futures import ThreadPoolExecutor
    from pathlib import Path

    import httpx
    from ray import serve

    from rayhet.app import build

    profiles = Path(__file__).resolve().parents[2] / "examples" / "profiles"
    config = {
        "model": {"id": "fake"},
        "pools": [  # the plan sends short outputs to `small` (see examples/two-pools.yaml)
            {"name": "small", "engine": "fake", "num_cpus": 0, "profile": str(profiles / "cpu-1t.json"),
             "engine_settings": {"n_slots": 1, "tpot_s": 0.05}, "queue_per_replica": 0, "max_queued_requests": 1},
            {"name": "big", "engine": "fake", "num_cpus": 0, "profile": str(profiles / "cpu-2t.json")},
        ],
        "planner": {"distribution": [[0.4, 0.4], [0.1, 0.1]]},
        "server": {"ingress_num_cpus": 0},
    }
    serve.run(build({"config": config}), name="bp", route_prefix="/bp")
    try:
        def one(_):
            return httpx.post(f"{serve_url}/bp/v1/completions", timeout=60,
                              json={"model": "fake", "prompt": "hi", "max_tokens": 20, "ignore_eos": True})

        with ThreadPoolExecutor(6) as ex:
            codes = [r.status_code for r in ex.map(one, range(6))]
        assert codes == [200] * 6
        snap = TrafficSnapshot.model_validate(call_deployment("bp", "ingress", "traffic_snapshot"))
        small, big = snap.pools["small"], snap.pools["big"]
        assert small.spilled_out >= 1 and big.spilled_in == small.spilled_out
        assert small.ok + big.ok == 6 and small.errors == big.errors == 0
    finally:
        serve.delete("bp")
