"""An ingress replica's reporter against a stand-in controller (no Ray): it offers its start-up plan until the
controller holds one, adopts a plan only when the version changed, and survives a controller that is away."""

from __future__ import annotations

import asyncio
import concurrent.futures
from types import SimpleNamespace

import pytest

from rayhet.messages import PlanReply, PlanReport
from rayhet.plan import Plan
from rayhet.serve.reporting import PlanReporter


def _plan(created_at: float) -> Plan:
    return Plan({"a": 1}, {(0, 0): {"a": 1.0}}, [256], [32], cost_per_hour=1.0, rate=1.0, created_at=created_at)


class _Ingress:
    def __init__(self):
        self.router = SimpleNamespace(plan=_plan(1.0))
        self.traffic = SimpleNamespace(snapshot=lambda: {"arrivals": [[0, 0, 3]]})
        self.adopted: list[float] = []

    def update_plan(self, plan: dict) -> None:
        self.router.plan = Plan.from_dict(plan)
        self.adopted.append(plan["created_at"])


class _Controller:
    """`report` as PlanController answers it; `down` makes calls fail as an unreachable actor's do."""

    def __init__(self):
        self.plan: dict | None = None
        self.calls: list[tuple] = []
        self.down = False
        self.report = SimpleNamespace(remote=self._remote)

    def _remote(self, message: dict):
        m = PlanReport.model_validate(message)  # what the real controller reads
        self.calls.append((m.replica, m.traffic, m.plan_version, m.offered))
        fut: concurrent.futures.Future = concurrent.futures.Future()
        if self.down:
            fut.set_exception(ConnectionError("actor died"))
        else:
            v = self.plan["created_at"] if self.plan else None
            fut.set_result(PlanReply(plan_version=v, plan=self.plan if self.plan and v != m.plan_version else None)
                           .model_dump())
        return SimpleNamespace(future=lambda: fut)


def test_offers_its_plan_until_acknowledged_then_adopts_new_versions_only():
    ing, ctl = _Ingress(), _Controller()
    rep = PlanReporter(ing, "r1", "rayhet-controller")

    async def go():
        await rep.report_once(ctl)  # controller has no plan yet: ours is offered
        assert ctl.calls[-1][3] is not None and ctl.calls[-1][2] == 1.0
        ctl.plan = _plan(1.0).to_dict()  # it adopted ours
        await rep.report_once(ctl)
        assert ctl.calls[-1][3] is not None and ing.adopted == []  # same version: nothing to swap
        await rep.report_once(ctl)
        assert ctl.calls[-1][3] is None  # acknowledged: no more offers
        ctl.plan = _plan(2.0).to_dict()
        await rep.report_once(ctl)
        await rep.report_once(ctl)
        assert ing.adopted == [2.0] and ctl.calls[-1][2] == 2.0  # swapped once, then reports the new version

    asyncio.run(go())
    assert rep.reports == 5 and ctl.calls[0][:2] == ("r1", {"arrivals": [[0, 0, 3]]})


def test_controller_away_keeps_the_last_plan():
    ing, ctl = _Ingress(), _Controller()
    ctl.down = True
    rep = PlanReporter(ing, "r1", "rayhet-controller")
    with pytest.raises(ConnectionError):
        asyncio.run(rep.report_once(ctl))
    assert ing.router.plan.created_at == 1.0 and ing.adopted == []


def test_timeouts_are_bounded():
    assert PlanReporter(_Ingress(), "r", "c", period_s=0.1).timeout_s == 2.0
    assert PlanReporter(_Ingress(), "r", "c", period_s=60).timeout_s == 10.0


def test_messages_of_another_shape_are_a_clear_error():
    from pydantic import ValidationError

    from rayhet.messages import PoolReport

    with pytest.raises(ValidationError, match="running"):
        PoolReport.model_validate({"pool": "a", "in_flight": 1.0})
    with pytest.raises(ValidationError, match="version"):
        PlanReply.model_validate({"version": 2, "plan_version": None})
