"""`rayhet status` rendering (pure: a controller status dict in, text out) and its arguments."""

from __future__ import annotations

import argparse

from rayhet.control import ControlSettings
from rayhet.plan import Plan
from rayhet.serve.status import add_arguments, render


def _status() -> dict:
    plan = Plan({"small": 1, "big": 2}, {(0, 0): {"small": 1.0}, (0, 1): {"big": 0.75, "small": 0.25}},
                [256, 1024], [32, 256], cost_per_hour=0.45, rate=2.4, created_at=1000.0)
    return {
        "app": "default", "now": 1100.0, "resumed": True, "settings": ControlSettings().model_dump(),
        "plan": plan.to_dict(), "plan_at": 1040.0, "targets": {"small": 2, "big": 2}, "idle": False,
        "reported": {"small": {"running": 2, "in_flight": 0.0}, "big": {"running": 1, "in_flight": 3.0}},
        "ingress": {"a1": {"age_s": 0.4, "plan_created_at": 1000.0}, "b2": {"age_s": 0.9, "plan_created_at": 900.0}},
        "bounds": {"small": {"min_replicas": 1, "max_replicas": 2, "slots": 12},
                   "big": {"min_replicas": 0, "max_replicas": 2, "slots": 12}},
        "last_solve": {"at": 1040.0, "status": "infeasible", "reason": "queue", "seconds": 0.012,
                       "message": "no plan serves 9 req/s within max_replicas (big<=2)"},
        "last_period": {"at": 1099.0, "reason": "hold", "detail": "rate change 3%", "rates": [[0, 1, 2.0]],
                        "held": {"small": 1}, "bumped": {}, "attainment": {"big": 0.97}},
    }


def test_render_shows_plan_targets_running_cost_attainment_and_last_solve():
    text = render(_status())
    assert "$0.45/hour" in text and "resumed" in text
    assert "ingress   2 replica(s) reporting, 1 on the current plan" in text
    assert "infeasible" in text and "because queue" in text and "max_replicas" in text
    big = next(line for line in text.splitlines() if line.startswith("big "))
    assert big.split()[:4] == ["big", "2", "1", "2"] and "97%" in big
    small = next(line for line in text.splitlines() if line.startswith("small "))
    assert "scale-down to 1 delayed" in small
    assert "big 75%, small 25%" in text
    assert " * in       1-256 out    33-256" in text  # traffic seen in that bucket


def test_render_without_a_plan():
    assert "plan      none yet" in render({"app": "x", "now": 1.0, "bounds": {"a": {}}})


def test_arguments():
    p = argparse.ArgumentParser()
    add_arguments(p)
    a = p.parse_args(["--watch", "2", "--json", "--app", "ctl"])
    assert (a.watch, a.json, a.app, a.address) == (2.0, True, "ctl", "auto")


def test_no_ray_cluster_is_one_line_and_exit_2():
    import socket
    import subprocess
    import sys

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    out = subprocess.run([sys.executable, "-m", "rayhet.cli", "status", "--address", f"127.0.0.1:{port}"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 1
    assert out.stderr.startswith(f"rayhet status: error: cannot reach a Ray cluster at '127.0.0.1:{port}'")
