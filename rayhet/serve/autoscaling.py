"""Autoscaling: the Ray Serve policy that gives each pool the controller's replica target, never blocking Serve.

Serve builds one `PlanPolicy` per pool deployment inside its controller process (from the deployment's
`autoscaling_config.policy`, so `serve run`, `serve deploy` config files and the Python API all get it) and
calls it every control-loop tick. The call only reads what a daemon thread last fetched from the rayhet
controller actor; the thread also reports the pool's running replicas and in-flight requests back.

Serve never tells a policy that its deployment is gone (`serve delete`, a redeploy): the object and its thread
stay in Serve's controller process. A thread that went on reporting would hand the controller the deleted
pool's last in-flight count forever, and a pool with requests in flight is never scaled to zero (seen
2026-12-01: a redeployed app kept `large` up through a whole trough). So each report carries the policy's
deployment (`build`, the controller spec's `created_at`) and the controller takes only its own deployment's;
and the thread reports only while Serve still calls the policy, ending once it has not for `orphan_s` (a later
call starts it again), so deleted apps leave no threads behind.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from rayhet.control import policy_target
from rayhet.messages import PoolReport

log = logging.getLogger("ray.serve")

CONTROLLER_NAME = "rayhet-controller"
NAMESPACE = "rayhet"


def controller_name(app: str) -> str:
    """One controller per Serve app: `rayhet-controller` for the default app, `rayhet-controller:<app>` else."""
    return CONTROLLER_NAME if app in ("default", "", None) else f"{CONTROLLER_NAME}:{app}"


def policy_config(pool: str, *, namespace: str = NAMESPACE, poll_s: float = 1.0, build: float | None = None) -> dict:
    """The `autoscaling_config["policy"]` value that attaches `PlanPolicy` to a pool's deployment; `build`: the
    deployment's identity (the controller spec's `created_at`)."""
    kwargs: dict = {"pool": pool, "namespace": namespace, "poll_s": poll_s}
    if build is not None:
        kwargs["build"] = build
    return {"policy_function": "rayhet.serve.autoscaling:PlanPolicy", "policy_kwargs": kwargs}


def get_controller(app: str = "default", namespace: str = NAMESPACE):
    """The running controller's actor handle for a Serve app (ValueError if there is none)."""
    import ray

    return ray.get_actor(controller_name(app), namespace=namespace)


def _value(x: Any) -> float:
    # AutoscalingContext fields may be lazy callables (Ray 2.60 evaluates some metrics on demand).
    return float((x() if callable(x) else x) or 0)


class PlanPolicy:
    """Returns the controller's target for `pool`; its last known target while the controller is away."""

    def __init__(self, pool: str, controller: str | None = None, namespace: str = NAMESPACE,
                 poll_s: float = 1.0, timeout_s: float = 5.0, orphan_s: float | None = None,
                 build: float | None = None):
        """`build`: the deployment's identity, sent with every report. `orphan_s`: how long without a call from
        Serve before the thread stops reporting (default max(30 s, 10 polls): Serve calls the policy every
        control-loop tick, 0.1 s, but a busy Serve controller may pause for seconds)."""
        self.pool, self.namespace, self.build = pool, namespace, build
        self.controller = controller  # None: named after the app, learnt from the first call's context
        self.poll_s, self.timeout_s = poll_s, timeout_s
        self.orphan_s = orphan_s if orphan_s is not None else max(30.0, 10 * poll_s)
        self.target: int | None = None  # last target the controller gave; None until it first answers
        self.fetched_at: float | None = None
        self._seen = (0, 0.0)  # (running replicas, in-flight requests) as Serve saw them last
        self._called_at = time.monotonic()  # the last call from Serve (construction counts: the first is near)
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._ensure_thread()

    def _ensure_thread(self) -> None:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._poll_forever, name=f"rayhet-policy-{self.pool}",
                                                daemon=True)
                self._thread.start()

    def __call__(self, ctx) -> tuple[int, dict]:
        if self.controller is None:
            self.controller = controller_name(ctx.app_name)
        running = len(ctx.running_replicas or [])
        in_flight = _value(ctx.total_num_requests)
        self._seen = (running, in_flight)
        self._called_at = time.monotonic()
        self._ensure_thread()  # it ends while Serve does not call
        # Fallback is Serve's current *target*, not the running count: replicas still starting are not running.
        target = policy_target(self.target, ctx.target_num_replicas, ctx.capacity_adjusted_min_replicas,
                               ctx.capacity_adjusted_max_replicas, in_flight)
        return target, {"rayhet_target": self.target, "rayhet_fetched_at": self.fetched_at}

    def _poll_forever(self) -> None:
        import ray

        handle, failures = None, 0
        while not self._stop.is_set():
            if time.monotonic() - self._called_at > self.orphan_s:  # its deployment is gone (module docstring)
                log.info("rayhet policy %s: not called by Serve for %.0f s (deployment deleted?); stopped reporting",
                         self.pool, self.orphan_s)
                return
            if self.controller is None:  # Serve has not called the policy yet
                self._stop.wait(0.1)
                continue
            try:
                if handle is None:
                    handle = ray.get_actor(self.controller, namespace=self.namespace)
                running, in_flight = self._seen
                report = PoolReport(pool=self.pool, running=running, in_flight=max(0.0, in_flight), build=self.build)
                got = ray.get(handle.poll.remote(report.model_dump()), timeout=self.timeout_s)
                if got is not None:
                    self.target, self.fetched_at = int(got), time.time()
                failures = 0
            except Exception as e:  # unreachable, restarting, not created yet: keep the last target
                handle, failures = None, failures + 1
                if failures in (1, 10) or failures % 100 == 0:
                    log.warning("rayhet policy %s: controller %r unreachable (%s); keeping target %s",
                                self.pool, self.controller, type(e).__name__, self.target)
            self._stop.wait(self.poll_s)

    def close(self) -> None:
        self._stop.set()
