"""Session fixtures: ONE local Ray cluster for the whole pytest run, started only if a serve test asks.

The cluster is heterogeneous on purpose (ray.cluster_utils.Cluster): a head node and two worker nodes
carrying `accelerator_type:A10G` and `accelerator_type:L4` resources, like GPU nodes would, so every serve
test runs on it and the placement test can check that each pool lands on its kind of node. Logical CPUs
exceed this machine's 2 cores: they are bookkeeping for placement, the tests keep real load small.
"""

from __future__ import annotations

import os
import socket
import time
from typing import Callable

import pytest

NODE_ACCELERATORS = ("A10G", "L4")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(cond: Callable[[], object], timeout: float, what: str, interval: float = 0.2):
    """Poll `cond` until it returns something truthy; fail naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last_exc = None
    while time.monotonic() < deadline:
        try:
            v = cond()
            if v:
                return v
        except Exception as e:  # noqa: BLE001 - keep polling, report the last one
            last_exc = e
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last error: {last_exc!r})")


@pytest.fixture(scope="session")
def ray_cluster():
    """The session's Ray cluster: head + an 'A10G' node + an 'L4' node (simulated accelerators)."""
    ray = pytest.importorskip("ray")
    from ray.cluster_utils import Cluster

    os.environ.setdefault("RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S", "30")
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 6, "include_dashboard": False})
    nodes = {}
    for acc in NODE_ACCELERATORS:
        node = cluster.add_node(num_cpus=2, resources={f"accelerator_type:{acc}": 1})
        nodes[acc] = node.node_id
    ray.init(address=cluster.address, logging_level="warning", log_to_driver=False)
    cluster.wait_for_nodes()
    try:
        yield {"address": cluster.address, "nodes": nodes}
    finally:
        try:
            from ray import serve

            serve.shutdown()
        finally:
            ray.shutdown()
            cluster.shutdown()


@pytest.fixture(scope="session")
def serve_url(ray_cluster):
    """Ray Serve started on the session cluster (one HTTP proxy, on the head); its base URL."""
    from ray import serve

    port = _free_port()
    serve.start(proxy_location="HeadOnly", http_options={"host": "127.0.0.1", "port": port})
    return f"http://127.0.0.1:{port}"
