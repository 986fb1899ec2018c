"""Controller: the detached actor that re-plans from live traffic and hands replica targets to the pools' policies.

Every ingress replica reports its traffic snapshot here every `report_s` and gets the current plan back
(`report()`; see rayhet.serve.reporting). Every `period_s` the actor merges the fresh snapshots, lets
`rayhet.control.tick` decide, solves when told to, keeps the targets that each pool's `PlanPolicy` polls,
persists its state in Ray's internal KV (a restarted actor resumes from it, replicas untouched) and exports
Ray metrics. What crosses into the actor (its `ControllerSpec`, each `PlanReport` and its `TrafficSnapshot`) is
plain data validated on arrival (rayhet.messages); inside, the actor works on the models.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Literal

import ray
from pydantic import BaseModel, ConfigDict, ValidationError

from rayhet.control import (
    ControlSettings,
    ControlState,
    PoolBounds,
    SolveOutcome,
    TickReport,
    adopt_startup_plan,
    attainment,
    decision,
    observe,
    solve_mix,
    tick,
)
from rayhet.messages import ControllerSpec, PlanReply, PlanReport, PoolReport, SolverSettings, TrafficSnapshot
from rayhet.serve.autoscaling import NAMESPACE, controller_name, get_controller  # noqa: F401 (re-exported)
from rayhet.traffic import merge_snapshots

log = logging.getLogger("ray.serve")
KV_NAMESPACE = b"rayhet"
APP_GONE_PERIODS = 3  # periods in a row without its Serve app before the controller stops itself


def _kv_key(app: str) -> bytes:
    return f"controller/{app}/state".encode()


class _Metrics:
    """Ray metrics (exported to Prometheus by Ray's metrics agent); names start with `rayhet_`."""

    def __init__(self) -> None:
        from ray.util.metrics import Counter, Gauge

        pool, bucket = ("app", "pool"), ("app", "input_bucket", "output_bucket")
        self.target = Gauge("rayhet_replicas_target", "Replica target the controller set, per pool.", pool)
        self.running = Gauge("rayhet_replicas_running", "Running replicas Serve reports, per pool.", pool)
        self.in_flight = Gauge("rayhet_pool_in_flight_requests", "Ongoing + queued requests, per pool.", pool)
        self.attainment = Gauge("rayhet_slo_attainment", "Share of requests in the window that met the SLO.", pool)
        self.spill = Gauge("rayhet_spillovers_per_second", "Requests spilled away from a pool (window rate).", pool)
        self.cost = Gauge("rayhet_plan_cost_per_hour", "USD per hour of the plan in force.", ("app",))
        self.rate = Gauge("rayhet_observed_rate", "Smoothed arrival rate (req/s) per size bucket.", bucket)
        self.solve_s = Gauge("rayhet_solve_seconds", "Duration of the last solve.", ("app",))
        self.kept = Gauge("rayhet_plan_kept_previous", "1 when the last solve failed and the previous plan runs.",
                          ("app",))
        self.solves = Counter("rayhet_solves_total", "Solves, by status and reason.", ("app", "status", "reason"))
        self._buckets: set = set()

    def record(self, app: str, state: ControlState, rep: TickReport, snap: TrafficSnapshot, reported: dict) -> None:
        a = {"app": app}
        for p, n in state.targets.items():
            self.target.set(n, {**a, "pool": p})
        for p, (running, in_flight) in reported.items():
            self.running.set(running, {**a, "pool": p})
            self.in_flight.set(in_flight, {**a, "pool": p})
        for p, x in attainment(snap).items():
            self.attainment.set(x, {**a, "pool": p})
        w = snap.window_s or 1.0
        for p, v in snap.pools.items():
            self.spill.set(v.spilled_out / w, {**a, "pool": p})
        if state.plan:
            self.cost.set(state.plan["cost_per_hour"], a)
        for b in self._buckets - set(rep.rates):  # a bucket that went quiet reads 0, not its last value
            self.rate.set(0.0, {**a, "input_bucket": str(b[0]), "output_bucket": str(b[1])})
        for (i, j), r in rep.rates.items():
            self.rate.set(r, {**a, "input_bucket": str(i), "output_bucket": str(j)})
        self._buckets = set(rep.rates)
        if rep.solve is not None:
            self.solve_s.set(rep.solve.seconds, a)
            self.kept.set(1.0 if rep.kept_previous else 0.0, a)
            self.solves.inc(1.0, {**a, "status": rep.solve.status, "reason": rep.replan.reason})


class PlanController:
    """The control loop (see module docstring). Runs as a named, detached, restartable actor."""

    def __init__(self, spec: dict):
        """`spec`: a ControllerSpec's `model_dump()` (Ray passes actor arguments as plain data)."""
        spec = ControllerSpec.model_validate(spec)
        self._lock = threading.RLock()
        self._reported: dict[str, tuple[int, float]] = {}  # pool -> (running, in-flight) from its policy
        self._reports_lock = threading.Lock()  # not self._lock: a report must not wait for a solve
        # replica -> (at, snapshot, plan version)
        self._reports: dict[str, tuple[float, TrafficSnapshot, float | None]] = {}
        self._offered: dict | None = None  # an ingress's start-up plan, adopted if this actor has none yet
        self._last: dict[str, Any] = {}
        self._stop = threading.Event()
        self._force: str | None = None
        saved = self._load(spec.app)
        if saved and saved.spec.created_at > spec.created_at:
            spec = saved.spec  # reconfigured after this actor was first created: the newer spec wins
        self._configure(spec)
        self.state = self._state_from(saved.state if saved else None)
        self.resumed = self.state.plan is not None
        if self.resumed:
            log.info("rayhet controller: resumed the plan of %s (targets %s)",
                     time.ctime(self.state.plan_at), self.state.targets)
        self.metrics = _Metrics()
        self._thread = threading.Thread(target=self._run, name="rayhet-controller", daemon=True)
        self._thread.start()

    # -- configuration -------------------------------------------------------------------------
    def _configure(self, spec: ControllerSpec) -> None:
        from rayhet.planner import PoolOption
        from rayhet.profiles import parse_profile

        self.spec = spec
        self.app = spec.app
        self.settings: ControlSettings = spec.settings
        self.bounds: dict[str, PoolBounds] = dict(spec.bounds)
        self.planner: SolverSettings = spec.planner
        self.options = [
            PoolOption(name=p, profile=parse_profile(spec.profiles[p], f"pool {p} profile"),
                       price_per_hour=spec.prices.get(p), min_replicas=b.min_replicas, max_replicas=b.max_replicas)
            for p, b in self.bounds.items()
        ]

    def reconfigure(self, spec: dict, fresh: bool = True) -> bool:
        """Adopt a new deployment's spec (`serve run` / `serve deploy` again, or another app under this name):
        its bounds, profiles and knobs, and none of the old deployment's state (plan, targets, reports): the new
        deployment's ingress offers its own start-up plan, as at a first start. `fresh=False` keeps the state
        and re-plans at the next period (a changed spec within one deployment). `spec`: a ControllerSpec's
        `model_dump()`; one that does not validate is refused (the caller gets the ValidationError) and changes
        nothing."""
        spec = ControllerSpec.model_validate(spec)
        with self._lock:
            self._configure(spec)
            if not fresh:
                self._force = "configuration changed"
                self._save()
                return True
            self.state, self.resumed = ControlState(), False
            self._offered, self._last, self._force = None, {}, None
            with self._reports_lock:
                self._reports.clear()
            self._reported.clear()
            self._save()
        log.info("rayhet controller: a new deployment of app %r (built %s): starting from its own plan",
                 self.app, time.ctime(spec.created_at))
        return True

    def spec_of(self) -> dict:
        """The spec in force, as a ControllerSpec's `model_dump()`."""
        return self.spec.model_dump()

    # -- the policies' side --------------------------------------------------------------------
    def poll(self, message: dict) -> int | None:
        """Called by each pool's PlanPolicy with a PoolReport: records what Serve sees, returns the pool's target
        (None: none yet)."""
        r = PoolReport.model_validate(message)
        if r.build is not None and r.build != self.spec.created_at:
            # Another deployment's policy: an older one's outlives its deployment in Serve's process and would
            # pin its pool's last in-flight count here (rayhet.serve.autoscaling); a newer one's deployment has
            # not reconfigured this actor yet, and a new app never runs an old plan.
            return None
        self._reported[r.pool] = (r.running, r.in_flight)
        return self.state.targets.get(r.pool)

    # -- the ingress replicas' side ------------------------------------------------------------
    def report(self, message: dict) -> dict:
        """Called by each ingress replica every `report_s` with a PlanReport: keeps its traffic snapshot; answers
        with a PlanReply carrying the plan in force (`plan` only when the replica runs another). `offered` is the
        replica's start-up plan, sent until this actor holds a plan of its own. `build` is the replica's
        deployment (its spec's `created_at`): a replica of a newer deployment than this actor's spec gets no plan
        (it keeps its own start-up plan) until that deployment has reconfigured this actor: a new app never runs
        an old plan."""
        r = PlanReport.model_validate(message)
        if r.build is not None and r.build > self.spec.created_at:
            return PlanReply(plan_version=None).model_dump()
        with self._reports_lock:
            self._reports[r.replica] = (time.time(), r.traffic, r.plan_version)
            if r.offered is not None and self._offered is None:
                self._offered = r.offered
        if self.state.plan is None and self._offered is not None and self._lock.acquire(blocking=False):
            try:  # adopt the start-up plan now, not at the next period: `rayhet status` shows it at once
                self._adopt_offered(time.time())
            finally:
                self._lock.release()
        plan = self.state.plan
        version = plan.get("created_at") if plan else None
        return PlanReply(plan_version=version, plan=plan if plan and version != r.plan_version else None).model_dump()

    def _expiry_s(self) -> float:
        return max(5.0, 5 * self.settings.report_s)

    def _fresh_reports(self, now: float) -> dict[str, tuple[float, TrafficSnapshot, float | None]]:
        """The reports of live ingress replicas; a replica silent for `_expiry_s` is forgotten."""
        with self._reports_lock:
            for r in [r for r, (at, _, _) in self._reports.items() if now - at > self._expiry_s()]:
                del self._reports[r]
            return dict(self._reports)

    def _merged(self, reports: dict) -> TrafficSnapshot:
        """One snapshot for all replicas; those on the grid of the plan in force first (merge keeps their grid)."""
        plan = self.state.plan or self._offered or {}
        grid = (plan.get("input_edges"), plan.get("output_edges"))
        snaps = sorted((s for _, s, _ in reports.values()), key=lambda s: (s.input_edges, s.output_edges) != grid)
        return merge_snapshots(snaps)

    # -- the loop ------------------------------------------------------------------------------
    def _run(self) -> None:
        failures = gone = 0
        while not self._stop.is_set():
            t0 = time.monotonic()
            present = self._app_present()
            gone = gone + 1 if present is False else 0
            if gone >= APP_GONE_PERIODS:
                self._retire(gone)
                return
            try:
                self.step()
                failures = 0
            except Exception:  # a bad period must not end the loop; the next one tries again
                failures += 1
                if failures in (1, 3) or failures % 100 == 0:  # do not flood the log
                    log.exception("rayhet controller: period failed (%d in a row); targets stay %s",
                                  failures, self.state.targets)
            self._stop.wait(max(0.0, self.settings.period_s - (time.monotonic() - t0)))

    def _app_present(self) -> bool | None:
        """Whether Serve still has this app: False when the app is not in `serve.status()` or Serve itself is
        gone (`serve shutdown` kills Serve's controller actor); None when Serve's state could not be read for
        another reason (it is restarting, say): unknown is not gone."""
        try:
            from ray import serve

            return self.app in serve.status().applications
        except Exception:  # noqa: BLE001
            pass
        try:
            from ray.serve._private.constants import SERVE_CONTROLLER_NAME, SERVE_NAMESPACE

            ray.get_actor(SERVE_CONTROLLER_NAME, namespace=SERVE_NAMESPACE)
            return None
        except ValueError:  # no Serve controller in the cluster: Serve was shut down
            return False
        except Exception:  # noqa: BLE001
            return None

    def _retire(self, periods: int) -> None:
        """The app was deleted (`serve delete`, `serve shutdown`): forget its state and end this actor for good."""
        from ray.experimental import internal_kv

        log.warning("rayhet controller: Serve app %r is gone (not in serve.status() for %d periods); stopping the "
                    "controller and forgetting its persisted plan", self.app, periods)
        self._stop.set()
        try:
            internal_kv._internal_kv_del(_kv_key(self.app), namespace=KV_NAMESPACE)
        finally:
            ray.kill(ray.get_runtime_context().current_actor, no_restart=True)

    def step(self) -> dict:
        """One period, now (the loop calls it; tests and `rayhet status` may too). Returns its summary."""
        with self._lock:
            now = time.time()
            reports = self._fresh_reports(now)
            if not reports:  # starting, or every ingress replica is gone: decide nothing, targets stay
                self._last = {"at": now, "reason": "waiting", "solved": False, "ingress": {},
                              "detail": f"no ingress replica reported in the last {self._expiry_s():g}s"}
                return self._last
            snap = self._merged(reports)
            grid = (snap.input_edges, snap.output_edges)
            reported = dict(self._reported)
            self._adopt_offered(now)
            force, self._force = self._force, None
            new, rep = tick(self.state, observe(snap, reported), self.bounds, lambda r, t: self._solve(grid, r, t),
                            now, self.settings, force=force)
            self.state = new  # published: each ingress replica's next report gets it
            self._save()
            self._log(rep)
            self.metrics.record(self.app, new, rep, snap, reported)
            self._last = {
                **decision(now, rep),
                "kept_previous": rep.kept_previous, "rates": [[i, j, r] for (i, j), r in sorted(rep.rates.items())],
                "attainment": attainment(snap),
                "spilled": {p: v.spilled_out for p, v in snap.pools.items()},
                "window_s": snap.window_s, "arrivals": sum(c for _, _, c in snap.arrivals),
                "ingress": {r: sum(c for _, _, c in s.arrivals) for r, (_, s, _) in sorted(reports.items())},
            }
            return self._last

    def _adopt_offered(self, now: float) -> None:
        """With no plan yet, take an ingress's start-up plan (solved by the app builder). Under self._lock."""
        if self.state.plan is None and self._offered is not None:
            self.state = adopt_startup_plan(self.state, self._offered, now)
            self.state.last_solve = {"at": now, "status": self.state.plan.get("status"),
                                     "reason": "start-up plan (solved by the app builder)",
                                     "seconds": self.state.plan.get("solve_time_s", 0.0), "message": ""}

    def _solve(self, grid, rates: dict, total: float) -> SolveOutcome:
        return solve_mix(self.options, grid, rates, total, slices=self.planner.slices,
                         time_limit_s=self.settings.solve_time_limit_s)

    def _log(self, rep: TickReport) -> None:
        if rep.solve is None:
            log.debug("rayhet controller: %s (%s); targets %s", rep.replan.reason, rep.replan.detail, self.state.targets)
        elif rep.kept_previous:
            log.warning("rayhet controller: solve (%s: %s) failed with %s: %s; keeping the previous plan",
                        rep.replan.reason, rep.replan.detail, rep.solve.status, rep.solve.message)
        else:
            log.info("rayhet controller: new plan (%s: %s) in %.3fs, $%.2f/h, targets %s", rep.replan.reason,
                     rep.replan.detail, rep.solve.seconds, self.state.plan["cost_per_hour"], self.state.targets)

    # -- persistence ---------------------------------------------------------------------------
    def _save(self) -> None:
        from ray.experimental import internal_kv

        blob = _Saved(spec=self.spec, state=self.state.to_dict())
        internal_kv._internal_kv_put(_kv_key(self.app), blob.model_dump_json().encode(), overwrite=True,
                                     namespace=KV_NAMESPACE)

    @staticmethod
    def _load(app: str) -> "_Saved | None":
        from ray.experimental import internal_kv

        raw = internal_kv._internal_kv_get(_kv_key(app), namespace=KV_NAMESPACE)
        return _Saved.read(raw, app) if raw else None

    @staticmethod
    def _state_from(state: dict | None) -> ControlState:
        try:
            return ControlState.from_dict(state) if state else ControlState()
        except Exception:
            log.exception("rayhet controller: persisted state unreadable; starting afresh")
            return ControlState()

    # -- reading -------------------------------------------------------------------------------
    def status(self) -> dict:
        """Everything `rayhet status` shows, as plain data."""
        st = self.state
        return {
            "app": self.app, "now": time.time(), "resumed": self.resumed, "settings": self.settings.model_dump(),
            "plan": st.plan, "plan_at": st.plan_at, "targets": st.targets, "idle": st.idle,
            "reported": {p: {"running": r, "in_flight": q} for p, (r, q) in self._reported.items()},
            "bounds": {p: vars(b) for p, b in self.bounds.items()},
            "ingress": {r: {"age_s": round(time.time() - at, 3), "plan_created_at": v}
                        for r, (at, _, v) in sorted(self._fresh_reports(time.time()).items())},
            "last_solve": st.last_solve, "last_period": self._last,
        }

    def ready(self) -> bool:
        return True


class _Saved(BaseModel):
    """The controller's blob in Ray's KV. The state stays a dict: ControlState.from_dict reads it, and its own
    failure only loses the state."""

    model_config = ConfigDict(extra="forbid")

    version: Literal[1] = 1
    spec: ControllerSpec
    state: dict

    @classmethod
    def read(cls, raw: bytes, app: str) -> "_Saved | None":
        """The blob, or None (with a warning) when it is not JSON or not of this shape: one saved by another
        rayhet version must not keep the actor from starting; it starts afresh, replicas untouched."""
        try:
            return cls.model_validate_json(raw)
        except ValidationError as e:  # also malformed JSON
            log.warning("rayhet controller: ignoring the persisted state of app %r (saved by another rayhet version, "
                        "or damaged): %s; starting afresh", app, e)
            return None


def ensure_controller(spec: ControllerSpec, *, namespace: str = NAMESPACE):
    """Get the app's running controller (reconfigured with `spec` if it changed) or start it; returns its handle."""
    actor = ray.remote(PlanController).options(
        name=controller_name(spec.app), namespace=namespace, lifetime="detached", get_if_exists=True, max_restarts=-1,
        max_task_retries=-1, max_concurrency=8, num_cpus=0,
    ).remote(spec.model_dump())
    running = ControllerSpec.model_validate(ray.get(actor.spec_of.remote(), timeout=60))
    # `created_at` is the deployment (set when the app was built): every replica of one deployment carries the
    # same; a replica of an older one (still up during a rolling update) changes nothing
    new, old = spec.created_at, running.created_at
    if new < old or (new == old and _same(running, spec)):
        return actor
    ray.get(actor.reconfigure.remote(spec.model_dump(), fresh=new > old), timeout=60)
    return actor


def _same(a: ControllerSpec, b: ControllerSpec) -> bool:
    return a.model_dump(mode="json") == b.model_dump(mode="json")


def stop_controller(app: str = "default", *, namespace: str = NAMESPACE, forget: bool = True) -> None:
    """Kill an app's controller for good now (it would stop itself `APP_GONE_PERIODS` periods after `serve
    delete`); `forget` also drops its persisted state."""
    from ray.experimental import internal_kv

    try:
        ray.kill(get_controller(app, namespace), no_restart=True)
    except ValueError:
        pass
    if forget:
        internal_kv._internal_kv_del(_kv_key(app), namespace=KV_NAMESPACE)
