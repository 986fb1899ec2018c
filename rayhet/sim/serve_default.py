"""Serve default: Ray Serve's own default autoscaling policy, called as Serve calls it, on a simulated clock.

`--compare` runs a pool type under Ray Serve's `replica_queue_length_autoscaling_policy` wrapped, as Serve
wraps every policy, in its scaling factors and up/down-scale delays (`_apply_autoscaling_config`). Those
delays read `time.time()` inside `ray.serve.autoscaling_policy`; while the policy decides, that module's
`time` is a stand-in that gives the simulation's clock. Ray's code, not a copy of it.
"""

from __future__ import annotations

import math
import time


class _SimTime:
    """Stands in for the `time` module inside ray.serve.autoscaling_policy while it decides."""

    def __init__(self, now: float):
        self._now = now

    def time(self) -> float:
        return self._now

    def __getattr__(self, name):
        return getattr(time, name)


def serve_default_target(cfg, deployment: str, running: int, target: int, in_flight: float, queued: int,
                         state: dict, now: float) -> tuple[int, dict]:
    """(replicas Serve's default policy wants, its new state) for one deployment with AutoscalingConfig `cfg`."""
    import ray.serve.autoscaling_policy as ap
    from ray.serve._private.common import DeploymentID
    from ray.serve.config import AutoscalingContext

    ctx = AutoscalingContext(
        deployment_id=DeploymentID(name=deployment, app_name="default"), deployment_name=deployment,
        app_name="default", current_num_replicas=running, target_num_replicas=target, running_replicas=[],
        total_num_requests=in_flight, total_queued_requests=queued, aggregated_metrics=None, raw_metrics=None,
        capacity_adjusted_min_replicas=cfg.min_replicas, capacity_adjusted_max_replicas=cfg.max_replicas,
        policy_state=state, last_scale_up_time=None, last_scale_down_time=None, current_time=now, config=cfg)
    real = ap.time
    ap.time = _SimTime(now)
    try:
        want, state = ap._apply_autoscaling_config(ap.replica_queue_length_autoscaling_policy)(ctx)
    finally:
        ap.time = real
    return max(cfg.min_replicas, min(cfg.max_replicas, int(math.ceil(want)))), state
