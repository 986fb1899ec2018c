"""Reporting: each ingress replica's link to the controller, pushing its traffic and pulling the plan.

Pull-based, so every ingress replica counts however many there are (a DeploymentHandle call would reach one):
a task on the replica's event loop sends `PlanController.report` a `rayhet.messages.PlanReport` (its traffic
snapshot, the version of the plan it runs, its deployment) every `controller.report_s` seconds, each step
bounded by a timeout. The `PlanReply` carries the controller's plan only when its version (`created_at`)
differs from the one the replica runs. Requests never wait on it; while
the controller is away the replica keeps serving with its last plan.
"""

from __future__ import annotations

import asyncio
import logging
import threading

from rayhet.messages import ControllerSpec, PlanReply, PlanReport
from rayhet.serve.autoscaling import NAMESPACE, controller_name
from rayhet.serve.controller import ensure_controller
from rayhet.serve.ingress import Ingress

log = logging.getLogger("ray.serve")


class PlanReporter:
    """Reports one ingress replica's traffic snapshot and adopts the plan the controller answers with."""

    def __init__(self, ingress: Ingress, replica_id: str, controller: str, namespace: str = NAMESPACE,
                 period_s: float = 1.0, build: float | None = None):
        self.ingress, self.replica_id = ingress, replica_id
        self.build = build  # this deployment's identity (the controller spec's created_at)
        self.controller, self.namespace = controller, namespace
        self.period_s = period_s
        self.timeout_s = min(10.0, max(2.0, 2 * period_s))  # a busy controller must not pile reports up
        self.reports = 0  # answered reports (for tests and logs)
        self._acked = False  # the controller holds a plan: no need to offer ours

    async def run(self) -> None:
        import ray

        handle, failures = None, 0
        while True:
            try:
                if handle is None:
                    handle = await asyncio.wait_for(
                        asyncio.to_thread(ray.get_actor, self.controller, namespace=self.namespace), self.timeout_s)
                await self.report_once(handle)
                failures = 0
            except asyncio.CancelledError:
                raise
            except Exception as e:  # noqa: BLE001 - not started yet, restarting, busy: keep the last plan
                handle, failures = None, failures + 1
                if failures in (1, 10) or failures % 300 == 0:
                    log.warning("rayhet ingress %s: controller %r unreachable (%s, %d in a row); serving with "
                                "the last plan", self.replica_id, self.controller, type(e).__name__, failures)
            await asyncio.sleep(self.period_s)

    async def report_once(self, handle) -> None:
        plan = self.ingress.router.plan
        message = PlanReport(replica=self.replica_id, build=self.build, plan_version=plan.created_at,
                             offered=None if self._acked else plan.to_dict(), traffic=self.ingress.traffic.snapshot())
        ref = handle.report.remote(message.model_dump())
        reply = PlanReply.model_validate(await asyncio.wait_for(asyncio.wrap_future(ref.future()), self.timeout_s))
        self.reports += 1
        self._acked = reply.plan_version is not None
        new = reply.plan
        if new is not None and new.get("created_at") != self.ingress.router.plan.created_at:
            self.ingress.update_plan(new)
            log.info("rayhet ingress %s: adopted the controller's plan %s", self.replica_id, new.get("replicas"))


def _start_quietly(spec: ControllerSpec) -> None:
    try:
        ensure_controller(spec)
    except Exception:  # serving goes on without a controller: the pools keep their replicas
        log.exception("rayhet: could not start the controller; pools keep their current replicas")


class ControlledIngress(Ingress):
    """The ingress, plus: its constructor makes sure the controller runs and starts this replica's reporter.
    Started from here because only a replica knows its Serve app's name, whichever way (serve run, a config
    file, Python) the app was deployed."""

    def __init__(self, *args, controller_spec: dict | None = None, **kwargs):
        """`controller_spec`: a ControllerSpec's `model_dump()` (rayhet.serve.wiring.Wiring), its `app` still
        the builder's placeholder; None: no controller."""
        super().__init__(*args, **kwargs)
        self.reporter: PlanReporter | None = None
        if not controller_spec:
            return
        from ray import serve

        ctx = serve.get_replica_context()
        spec = ControllerSpec.model_validate(controller_spec).model_copy(update={"app": ctx.app_name})
        threading.Thread(target=_start_quietly, args=(spec,), name="rayhet-start-controller", daemon=True).start()
        self.reporter = PlanReporter(self, ctx.replica_id.unique_id, controller_name(ctx.app_name),
                                     period_s=spec.settings.report_s, build=spec.created_at)
        # Serve runs the constructor on the replica's user-code event loop, the one requests are served on.
        self._background(self.reporter.run())
