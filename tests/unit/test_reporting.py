"""An ingress replica's reporter against a stand-in controller (no Ray): it offers its start-up plan until the
controller holds one, adopts a plan only when the version changed, and survives a controller that is away.
The messages it and the controller exchange (and the controller's spec) refuse another shape, naming the field."""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import re
from pathlib import Path
from types import SimpleNamespace

import pytest
from pydantic import ValidationError

from rayhet.messages import ControllerSpec, PlanReply, PlanReport, TrafficSnapshot
from rayhet.plan import Plan
from rayhet.serve.reporting import PlanReporter

SNAP = TrafficSnapshot(time=0.0, window_s=1.0, input_edges=[256], output_edges=[32], arrivals=[(0, 0, 3)])
PROFILES = Path(__file__).resolve().parents[2] / "examples" / "profiles"


def _plan(created_at: float) -> Plan:
    return Plan({"a": 1}, {(0, 0): {"a": 1.0}}, [256], [32], cost_per_hour=1.0, rate=1.0, created_at=created_at)


class _Ingress:
    def __init__(self):
        self.router = SimpleNamespace(plan=_plan(1.0))
        self.traffic = SimpleNamespace(snapshot=lambda: SNAP)
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
    assert rep.reports == 5 and ctl.calls[0][:2] == ("r1", SNAP)


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


def _spec() -> ControllerSpec:
    from rayhet.config import RayhetConfig
    from rayhet.control import PoolBounds
    from rayhet.profiles import load_profile
    from rayhet.serve.wiring import spec_for

    config = RayhetConfig.model_validate({
        "model": {"id": "fake"},
        "pools": [{"name": n, "engine": "fake", "profile": str(PROFILES / f"{f}.json"), "price_per_hour": 1.0}
                  for n, f in (("small", "cpu-1t"), ("big", "cpu-2t"))],
        "controller": {"period_s": 5}})
    profiles = {p.name: load_profile(p.profile) for p in config.pools}
    bounds = {"small": PoolBounds(1, 2, 4, 3.0), "big": PoolBounds(0, 2, 8, 3.0)}
    return spec_for(config, profiles, bounds, app="a", ingress="ingress")


def test_the_controller_spec_crosses_as_plain_data_and_keeps_its_version_1_shape():
    spec = _spec()
    wire = json.loads(json.dumps(spec.model_dump()))  # what Ray and the KV blob carry
    assert ControllerSpec.model_validate(wire) == spec and wire["settings"]["period_s"] == 5
    # the dict rayhet built before the model (no `version` key) is what an older deployment or saved blob holds
    old = {k: v for k, v in wire.items() if k != "version"}
    assert set(old) == {"created_at", "app", "ingress", "settings", "planner", "bounds", "profiles", "prices"}
    assert ControllerSpec.model_validate(old) == spec
    assert wire["bounds"]["small"] == {"min_replicas": 1, "max_replicas": 2, "slots": 4, "startup_s": 3.0}


@pytest.mark.parametrize("change, field", [
    (lambda d: d.pop("created_at"), "created_at"),
    (lambda d: d["bounds"]["big"].update(max_replicas="many"), "bounds.big.max_replicas"),
    (lambda d: d["settings"].update(smoothing=0), "settings.smoothing"),
    (lambda d: d["settings"].update(perod_s=1), "settings.perod_s"),
    (lambda d: d["planner"].update(slices=0), "planner.slices"),
    (lambda d: d["profiles"].pop("big"), "profiles: no profile for pool(s) ['big']"),
    (lambda d: d.update(version=2), "version"),
])
def test_a_malformed_controller_spec_is_refused_naming_the_field(change, field):
    wire = _spec().model_dump()
    change(wire)
    with pytest.raises(ValidationError, match=re.escape(field)):
        ControllerSpec.model_validate(wire)


def test_a_saved_controller_blob_of_another_shape_is_ignored_with_a_warning(monkeypatch):
    from rayhet.serve import controller

    spec = _spec().model_dump(mode="json")
    ok = json.dumps({"version": 1, "spec": spec, "state": {"targets": {"small": 1}}}).encode()
    assert controller._Saved.read(ok, "a").spec.created_at == spec["created_at"]
    warned: list[str] = []
    monkeypatch.setattr(controller.log, "warning", lambda msg, *a: warned.append(msg % a))  # Ray's logger: no caplog
    old = dict(spec, bounds={"small": {"min": 1}})  # a field this version does not know
    for raw in (json.dumps({"version": 1, "spec": old, "state": {}}).encode(), b"{not json"):
        assert controller._Saved.read(raw, "a") is None
    assert len(warned) == 2 and all("ignoring the persisted state of app 'a'" in w for w in warned)
    assert "bounds.small.min" in warned[0] and "json" in warned[1].lower()
