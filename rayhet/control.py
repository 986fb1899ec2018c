"""Control: when to re-plan and which replica targets to publish, from observed traffic (pure, no Ray)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Callable, Literal

from pydantic import BaseModel, ConfigDict, Field

from rayhet.demand import (  # noqa: F401 - re-exported: the controller's estimates of demand
    Bucket,
    count_mix,
    mix_distance,
    poisson_noise,
    smooth,
    trend_factor,
    uncovered_share,
    with_mix,
)
from rayhet.plan import Plan

if TYPE_CHECKING:  # rayhet.messages imports this module (ControlSettings, PoolBounds travel in its spec)
    from rayhet.messages import TrafficSnapshot

Reason = Literal["initial", "wake", "overload", "trend", "queue", "drift", "idle", "hold", "young", "forced"]


class ControlSettings(BaseModel):
    """The controller's knobs (the `controller:` section of a rayhet config; README "The controller")."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = Field(True, description="Run the controller (false: the start-up plan stays, Serve keeps replicas).")
    period_s: float = Field(30.0, gt=0, description="Seconds between looks at live traffic.")
    smoothing: float = Field(
        0.5, gt=0, le=1, description="EWMA weight of the newest window's per-bucket rates (1: no smoothing)."
    )
    headroom: float = Field(0.2, ge=0, description="Plan for the smoothed observed rate x (1 + headroom).")
    mix_requests: int = Field(
        300, ge=0, description="The bucket mix (which sizes arrive) is estimated over about this many recent "
        "requests, the total rate over the last windows: at low rates one window holds a handful of requests, and "
        "one long prompt read as a bucket's steady load asked for a GPU to be started for it. 0: each window's own "
        "mix.")
    min_plan_lifetime_s: float = Field(
        120.0, ge=0, description="A plan lives at least this long before a non-urgent re-plan (anti-flapping)."
    )
    scale_down_delay_s: float = Field(
        180.0, ge=0, description="A lower replica target must be wanted this long before it is applied."
    )
    drift: float = Field(
        0.15, ge=0, description="Re-plan (after the plan's lifetime) when total rate or bucket mix moved more than this."
    )
    overload: float = Field(
        0.05, ge=0, description="Re-plan at once when this share of arrivals exceeds the plan's per-bucket load."
    )
    queue_factor: float = Field(
        1.0, gt=0, description="Scale a pool up at once when its in-flight requests exceed replicas x "
        "max_ongoing_requests x queue_factor."
    )
    lookahead: bool = Field(
        True, description="Plan for the rate expected one start-up time ahead (the slowest pool's startup_s): the "
        "current rate plus its recent trend (least squares over the last `trend_window_s`), never less than now; "
        "a rise smaller than `drift` counts as noise.")
    trend_window_s: float = Field(120.0, gt=0, description="How far back the rate's trend is fitted (lookahead).")
    max_lookahead_factor: float = Field(
        3.0, ge=1, description="The most the lookahead may multiply the current rate by (a burst is not a trend).")
    solve_time_limit_s: float = Field(10.0, gt=0, description="Solver time limit; a timed-out solve keeps the last plan.")
    policy_poll_s: float = Field(1.0, gt=0, description="How often each pool's Serve policy fetches its target.")
    report_s: float = Field(
        1.0, gt=0, description="How often each ingress replica reports its traffic to the controller and fetches "
        "the plan; a replica silent for 5 reports (at least 5 s) no longer counts."
    )


@dataclass(frozen=True)
class PoolBounds:
    """What the user allows for one pool, and how many requests one replica holds at once."""

    min_replicas: int = 0
    max_replicas: int = 1
    slots: int = 1  # the pool's max_ongoing_requests
    startup_s: float = 0.0  # from Serve starting a replica to it serving (the lookahead horizon)

    def clamp(self, n: int) -> int:
        return max(self.min_replicas, min(self.max_replicas, int(n)))


@dataclass(frozen=True)
class Observation:
    """One look at live traffic: arrivals per bucket over a window, and what each pool holds now."""

    window_s: float
    arrivals: dict[Bucket, float]  # requests that arrived in the window, per bucket
    in_flight: dict[str, float] = field(default_factory=dict)  # ongoing + queued requests per pool
    running: dict[str, int] = field(default_factory=dict)  # running replicas per pool

    def rates(self) -> dict[Bucket, float]:
        w = max(self.window_s, 1e-9)
        return {b: n / w for b, n in self.arrivals.items() if n > 0}


@dataclass
class ControlState:
    """What the controller carries from one period to the next; persisted so a restart resumes."""

    plan: dict | None = None  # last good plan (Plan.to_dict)
    plan_at: float = 0.0  # when it was adopted
    planned_rates: dict[Bucket, float] = field(default_factory=dict)  # per-bucket load it was solved for
    smoothed: dict[Bucket, float] = field(default_factory=dict)
    mix: dict[Bucket, float] = field(default_factory=dict)  # recent arrivals per bucket, decayed by count
    targets: dict[str, int] = field(default_factory=dict)  # published replica targets
    down_since: dict[str, float] = field(default_factory=dict)  # pool -> when a lower target was first wanted
    idle: bool = False
    last_solve: dict = field(default_factory=dict)  # {"at", "status", "reason", "seconds", "message"}
    history: list = field(default_factory=list)  # [[time, total observed req/s], ...] for the trend (lookahead)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["planned_rates"] = [[i, j, r] for (i, j), r in sorted(self.planned_rates.items())]
        d["smoothed"] = [[i, j, r] for (i, j), r in sorted(self.smoothed.items())]
        d["mix"] = [[i, j, r] for (i, j), r in sorted(self.mix.items())]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "ControlState":
        d = dict(d)
        for k in ("planned_rates", "smoothed", "mix"):
            d[k] = {(int(i), int(j)): float(r) for i, j, r in d.get(k, [])}
        d["targets"] = {str(p): int(n) for p, n in d.get("targets", {}).items()}
        return cls(**d)


def adopt_startup_plan(state: ControlState, plan: dict, now: float) -> ControlState:
    """The state once the app builder's start-up plan is taken: the plan, and its replicas (what Serve was asked
    to start) as the published targets. Without them, the first period compares a wanted count against the
    replicas *running*, and a replica still starting counts 0: an app deployed before any traffic had its only
    replica stopped at its first idle period, skipping the scale-down delay (GPU day run, 2026-11-30)."""
    new = replace(state, plan=plan, plan_at=now)
    if not state.targets:
        new.targets = {str(p): int(n) for p, n in plan.get("replicas", {}).items()}
    return new


# -- decisions ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ReplanDecision:
    solve: bool
    reason: Reason
    detail: str = ""


@dataclass(frozen=True)
class TargetDecision:
    targets: dict[str, int]
    down_since: dict[str, float]
    held: dict[str, int]  # pools kept above what they want by the scale-down delay: pool -> wanted
    bumped: dict[str, int]  # pools raised above the plan because their queues grew: pool -> floor


@dataclass(frozen=True)
class SolveOutcome:
    """What a solve attempt returned: a plan, or the reason there is none."""

    plan: Plan | None
    status: str  # Plan.status, or "infeasible" / "time_limit" / "error" when plan is None
    seconds: float
    message: str = ""


@dataclass(frozen=True)
class TickReport:
    """Everything one period decided, for logs, metrics and `rayhet status`."""

    replan: ReplanDecision
    solve: SolveOutcome | None
    kept_previous: bool
    targets: TargetDecision
    rates: dict[Bucket, float]  # smoothed per-bucket rates
    new_plan: bool


def decision(now: float, rep: TickReport) -> dict:
    """One period's decision as plain data: what `rayhet status` shows of it and what the simulator records, so
    that a real and a simulated run can be compared period by period."""
    return {"at": now, "reason": rep.replan.reason, "detail": rep.replan.detail, "solved": rep.replan.solve,
            "targets": dict(rep.targets.targets), "held": dict(rep.targets.held), "bumped": dict(rep.targets.bumped),
            "rate": round(sum(rep.rates.values()), 5)}


def queue_floor(in_flight: float, slots: int, queue_factor: float) -> int:
    """Replicas needed so that the requests a pool holds fit in its batch slots (x queue_factor)."""
    if in_flight <= 0:
        return 0
    return math.ceil(in_flight / (max(slots, 1) * queue_factor))


def decide_replan(
    state: ControlState,
    rates: dict[Bucket, float],
    observed_any: bool,
    floors: dict[str, int],
    now: float,
    s: ControlSettings,
    arrivals: float = math.inf,
) -> ReplanDecision:
    """Whether to solve now. Urgent reasons (overload, queue) skip the plan's minimum lifetime."""
    if not observed_any:
        return ReplanDecision(False, "idle", "no arrivals in the window: pools go to their minimum")
    if state.plan is None:
        return ReplanDecision(True, "initial", "no plan yet")
    if state.idle:
        return ReplanDecision(True, "wake", "traffic resumed after an idle period")
    over = uncovered_share(rates, state.planned_rates)
    # a share of the load beyond the plan by more than the window's counting noise (x / (1 + x) of it)
    noise = poisson_noise(arrivals)
    if over > max(s.overload, noise / (1 + noise)):
        return ReplanDecision(True, "overload", f"{over:.0%} of arrivals exceed the planned per-bucket load")
    short = {p: f for p, f in floors.items() if f > state.targets.get(p, 0)}
    if short:
        return ReplanDecision(True, "queue", "queues exceed the plan's slots: " + ", ".join(
            f"{p} needs {f}" for p, f in sorted(short.items())))
    age = now - state.plan_at
    planned_total = sum(state.planned_rates.values()) / (1 + s.headroom)
    total = sum(rates.values())
    change = abs(total - planned_total) / max(planned_total, 1e-9)
    mix = mix_distance(rates, state.planned_rates)
    if change <= s.drift and mix <= s.drift:
        return ReplanDecision(False, "hold", f"rate change {change:.0%}, mix change {mix:.0%}")
    if age < s.min_plan_lifetime_s:
        return ReplanDecision(False, "young", f"plan is {age:.0f}s old (< {s.min_plan_lifetime_s:.0f}s)")
    return ReplanDecision(True, "drift", f"rate change {change:.0%}, mix change {mix:.0%}")


def decide_targets(
    wanted: dict[str, int],
    current: dict[str, int],
    down_since: dict[str, float],
    bounds: dict[str, PoolBounds],
    floors: dict[str, int],
    now: float,
    s: ControlSettings,
) -> TargetDecision:
    """Replica targets: up at once, down only once the lower number was wanted for `scale_down_delay_s`."""
    targets, since, held, bumped = {}, {}, {}, {}
    for pool, b in bounds.items():
        want = b.clamp(wanted.get(pool, b.min_replicas))
        floor = b.clamp(floors.get(pool, 0))
        if floor > want:
            bumped[pool] = floor
            want = floor
        cur = current.get(pool)
        if cur is None or want >= cur:
            targets[pool] = want
            continue
        first = down_since.get(pool, now)
        if now - first >= s.scale_down_delay_s:
            targets[pool] = want
        else:
            targets[pool] = cur
            since[pool] = first
            held[pool] = want
    return TargetDecision(targets, since, held, bumped)


def accept(state: ControlState, outcome: SolveOutcome) -> tuple[Plan | None, bool]:
    """The plan to run after a solve: the new one, or the last good one (second value True) if there is none."""
    if outcome.plan is not None:
        return outcome.plan, False
    return (Plan.from_dict(state.plan) if state.plan else None), True


Solver = Callable[[dict[Bucket, float], float], SolveOutcome]  # (per-bucket rates incl. headroom, total)


def tick(
    state: ControlState,
    obs: Observation,
    bounds: dict[str, PoolBounds],
    solver: Solver,
    now: float,
    s: ControlSettings,
    force: str | None = None,
) -> tuple[ControlState, TickReport]:
    """One control period: smooth, decide, maybe solve, keep the last good plan on failure, set targets.

    `solver` is the only side effect and is injected, so a test can hand in a fake; the state in is not mutated.
    `force` (a reason) solves whenever there is traffic, whatever the plan's age.
    """
    observed = obs.rates()
    smoothed = smooth(state.smoothed, observed, s.smoothing) if observed else {}
    mix = count_mix(state.mix, obs.arrivals, s.mix_requests, s.drift) if s.mix_requests else {}
    rates = with_mix(smoothed, mix) if s.mix_requests else smoothed
    floors = {p: queue_floor(obs.in_flight.get(p, 0.0), b.slots, s.queue_factor) for p, b in bounds.items()}
    history = [h for h in state.history if now - h[0] <= s.trend_window_s] + [[now, sum(observed.values())]]
    factor = 1.0
    if s.lookahead:  # plan for the rate one start-up time ahead: a replica asked for now serves only then
        horizon = max((b.startup_s for b in bounds.values() if b.max_replicas > 0), default=0.0)
        factor = trend_factor(history, now, horizon, s.trend_window_s, s.max_lookahead_factor)
        span = min(s.period_s, obs.window_s)  # windows may overlap (a 60 s window looked at every 10 s)
        seen = sum(r for t, r in history if now - t < s.trend_window_s) * span  # the arrivals it rests on
        if factor < 1 + max(s.drift, poisson_noise(seen)):  # a rise the size of drift or of counting noise
            factor = 1.0
    ahead = {b: r * factor for b, r in rates.items()}
    replan = decide_replan(state, ahead, bool(observed), floors, now, s, sum(obs.arrivals.values()))
    if replan.reason == "overload" and factor > 1 and uncovered_share(rates, state.planned_rates) <= s.overload:
        replan = ReplanDecision(True, "trend", f"rate rising: x{factor:.2f} expected within the start-up time; "
                                + replan.detail)
    if force and observed and not replan.solve:  # e.g. the config changed: solve even if the plan is young
        replan = ReplanDecision(True, "forced", force)
    new = replace(state, smoothed=smoothed, mix=mix, history=history)
    outcome, kept, new_plan = None, False, False
    if replan.solve:
        padded = {b: r * (1 + s.headroom) for b, r in ahead.items()}
        outcome = solver(padded, sum(padded.values()))
        plan, kept = accept(state, outcome)
        new.last_solve = {"at": now, "status": outcome.status, "reason": replan.reason,
                          "seconds": outcome.seconds, "message": outcome.message}
        if not kept and plan is not None:
            new.plan, new.plan_at, new.planned_rates, new_plan = plan.to_dict(), now, padded, True
    if replan.reason == "idle":
        new.idle, new.smoothed = True, {}
        wanted = {p: b.min_replicas for p, b in bounds.items()}
    else:  # traffic is flowing: run the last good plan (the new one if the solve succeeded)
        new.idle = False
        wanted = dict(new.plan["replicas"]) if new.plan else {}
    current = state.targets or dict(obs.running)
    td = decide_targets(wanted, current, state.down_since, bounds, floors, now, s)
    new.targets, new.down_since = td.targets, td.down_since
    return new, TickReport(replan, outcome, kept, td, rates, new_plan)


def solve_mix(options, grid, rates: dict[Bucket, float], total: float, *, slices: int = 8,
              time_limit_s: float = 10.0) -> SolveOutcome:
    """The controller's solver: the planner on the observed per-bucket mix (`rates` already padded with the
    headroom, on `grid` = (input edges, output edges)), bounded in time; a failure comes back as an outcome,
    not raised. The live controller and `rayhet simulate` both solve through this."""
    import concurrent.futures
    import time

    import numpy as np

    from rayhet.errors import CapacityExceeded, PlanningError
    from rayhet.planner import solve
    from rayhet.workload import Distribution

    t0 = time.perf_counter()
    frac = np.zeros((len(grid[0]), len(grid[1])))
    for (i, j), r in rates.items():
        frac[i, j] = r / total
    dist = Distribution(list(grid[0]), list(grid[1]), frac)

    def solve_capped():
        """The plan for `total`; when max_replicas cannot carry it, the plan for the most they can (a share
        of the same mix): the demand beyond it is refused either way, and the last plan, sized for less,
        would serve less of it."""
        try:
            return solve(options, dist, total, headroom=0.0, slices=slices, drop_unservable=True,
                         time_limit_s=time_limit_s), ""
        except CapacityExceeded as e:
            lo, hi, best = 0.0, 1.0, None
            for _ in range(6):  # bisection on the share of the demand: within 1/64 of the most that fits
                mid = (lo + hi) / 2
                try:
                    best, lo = solve(options, dist, total * mid, headroom=0.0, slices=slices, drop_unservable=True,
                                     time_limit_s=time_limit_s), mid
                except PlanningError:
                    hi = mid
            if best is None:
                raise
            return best, f"{e}; planned for {lo:.0%} of it ({total * lo:.3g} req/s), the most max_replicas allow"

    pool = concurrent.futures.ThreadPoolExecutor(1)
    fut = pool.submit(solve_capped)
    try:
        plan, capped = fut.result(timeout=8 * time_limit_s + 5)  # the solver's own limits, and a hang guard
        if capped:
            return SolveOutcome(plan, "capped", time.perf_counter() - t0, capped)
        return SolveOutcome(plan, plan.status, time.perf_counter() - t0, plan.message)
    except concurrent.futures.TimeoutError:
        return SolveOutcome(None, "time_limit", time.perf_counter() - t0,
                            f"solver did not return in {8 * time_limit_s + 5:g}s")
    except PlanningError as e:
        return SolveOutcome(None, "infeasible", time.perf_counter() - t0, str(e))
    except Exception as e:  # noqa: BLE001 - any solver failure keeps the last plan
        return SolveOutcome(None, "error", time.perf_counter() - t0, f"{type(e).__name__}: {e}")
    finally:
        pool.shutdown(wait=False)


def policy_target(
    controller_target: int | None, current: int, lo: int, hi: int, in_flight: float
) -> int:
    """What a pool's Serve autoscaling policy returns: the controller's target within Serve's bounds.

    Before the controller has ever answered, keep the current target (never reset replicas on a restart);
    a pool at zero that is holding requests gets one replica at once rather than waiting a period.
    """
    target = current if controller_target is None else controller_target
    if target == 0 and in_flight > 0:
        target = 1
    return max(lo, min(hi, target))


def observe(snapshot: TrafficSnapshot, reported: dict[str, tuple[int, float]]) -> Observation:
    """An Observation from an ingress traffic snapshot and what each pool's Serve policy last reported as
    (running replicas, in-flight requests); the larger in-flight count wins."""
    arrivals = {(i, j): float(c) for i, j, c in snapshot.arrivals}
    in_flight = {p: float(v.in_flight) for p, v in snapshot.pools.items()}
    for p, (_, n) in reported.items():
        in_flight[p] = max(in_flight.get(p, 0.0), float(n))
    running = {p: int(r) for p, (r, _) in reported.items()}
    return Observation(snapshot.window_s or 1.0, arrivals, in_flight, running)


def attainment(snapshot: TrafficSnapshot) -> dict[str, float]:
    """Per pool, the share of requests finished in the window that met the SLO (pools without data left out)."""
    out = {}
    for p, v in snapshot.pools.items():
        done = v.ok + v.errors
        if v.slo_ok is not None and done:
            out[p] = v.slo_ok / done
    return out
