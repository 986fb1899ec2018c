"""The embedded default (`serve run rayhet.app:build` with no args): the product in miniature (issue 12, 3).

Two CPU pools of the generated tiny model with shipped profiles, the planner's routing by size, and the
controller: `rayhet status` shows pools, replicas, $/hour and routing, and short and long requests land on
different pools.
"""

from __future__ import annotations

import time

import pytest

from rayhet.testing.driver import call_deployment

pytestmark = pytest.mark.serve

APP = "embedded"


def served(pool: str) -> int:
    return call_deployment(APP, f"pool-{pool}", "stats")["counters"]["requests"]


def test_build_without_args_serves_two_pools_by_size_under_the_controller(serve_url, caplog, capsys):
    import httpx
    from ray import serve

    from rayhet import cli
    from rayhet.app import build
    from rayhet.testing.models import prompt_of_tokens

    with caplog.at_level("WARNING", logger="rayhet"):
        app = build({})
    lines = [r.getMessage() for r in caplog.records if r.name == "rayhet" and "DEFAULT" in r.getMessage()]
    assert len(lines) == 1 and "two CPU pools" in lines[0] and "gguf=" in lines[0]  # one line: what, and how to leave
    serve.run(app, name=APP, route_prefix="/emb")
    try:
        plan = call_deployment(APP, "ingress", "get_plan")
        assert plan["replicas"] == {"small": 1, "large": 1}
        before = {p: served(p) for p in ("small", "large")}
        for n_in, pool in ((20, "small"), (20, "small"), (700, "large")):  # 700: beyond small's buckets
            r = httpx.post(f"{serve_url}/emb/v1/completions", timeout=60,
                           json={"model": "rayhet-tiny", "prompt": prompt_of_tokens(n_in), "max_tokens": 8})
            assert r.status_code == 200, r.text
            assert r.json()["usage"]["prompt_tokens"] == n_in
            assert r.headers["x-rayhet-pool"] == pool  # the ingress says which pool served it
        after = {p: served(p) for p in ("small", "large")}
        assert after["small"] - before["small"] == 2, (before, after)
        assert after["large"] - before["large"] == 1, (before, after)

        def status() -> str:
            assert cli.main(["status", "--app", APP]) == 0
            return capsys.readouterr().out

        # the start-up plan, adopted at the ingress's first report (the controller actor starts beside the
        # replica; on a loaded machine the first report can take a few seconds)
        deadline = time.monotonic() + 30
        while "$0.07/hour" not in (out := status()):
            assert time.monotonic() < deadline, f"the controller never showed the start-up plan:\n{out}"
            time.sleep(0.5)
        assert "routing" in out, out
        assert "small 100%" in out and "large 100%" in out  # some bucket routed wholly to each pool
        def running() -> dict:  # pool -> its row's "running" column, once Serve's policy of each has reported
            rows = [line.split() for line in status().splitlines() if line.startswith(("small ", "large "))]
            got = {r[0]: r[2] for r in rows}
            return got if got == {"small": "1", "large": "1"} else {}

        deadline = time.monotonic() + 30  # Serve's policy of each pool reports its replicas every second
        while not running():
            assert time.monotonic() < deadline, f"status never showed one running replica per pool:\n{status()}"
            time.sleep(0.5)
    finally:
        serve.delete(APP)
