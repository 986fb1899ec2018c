"""The model method of `rayhet profile` (issue 13): measure the engine's step times, fit the step model,
derive every bucket's capacity by simulating a replica, and check held-out buckets against direct
measurements at the speed the engine ran during the check (the speed probe).

`rayhet.profiling.command` parses the flags and drives the run; this module is what the method measures
and what it writes into a version-2 profile.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any

import numpy as np

from rayhet.profiling.sweep import SweepSettings, SweepState


def speed_probe(target, measured, state: SweepState, seed: int = 0):
    """The held-out phase's checkpoint: the engine's speed now relative to the fit, kept per bucket. An engine
    that logs its steps reruns a few designed batches; one observed from outside (vLLM, --url) reruns a few
    of the observed experiments (rayhet.profiling.observe.probe_plan). None without fitted steps."""
    if not measured.samples:
        return None
    from rayhet.profiling.engine_model import speed_drift
    from rayhet.profiling.observe import observed_drift
    from rayhet.profiling.targets import EngineTarget

    engine = getattr(target, "engine", None)
    model = measured.fit.model
    rng = np.random.default_rng(seed + 2)
    if not measured.observed:
        vocab = EngineTarget(engine).token_ids()
        measure = lambda: speed_drift(engine, model, measured.samples, vocab)  # noqa: E731
    else:
        measure = lambda: observed_drift(target, measured.limits, model, measured.samples,  # noqa: E731
                                         target.token_ids(), rng)

    async def probe(key: tuple[int, int]) -> None:
        await target.wait_idle(60.0)
        drift = await measure()
        if drift:
            state.speed_drifts.setdefault(f"{key[0]},{key[1]}", []).append({k: round(v, 4) for k, v in drift.items()})
            print(f"engine model: speed probe at bucket {key}: " + ", ".join(
                f"{k} steps {v:.2f}x" for k, v in drift.items()) + " the fitted times", file=sys.stderr)

    return probe


@dataclass
class MeasuredModel:
    """What the model method measured: step samples, the fit, limits, derived grid and held-out buckets."""

    samples: list
    fit: Any
    limits: Any
    grid: list
    held_out: list
    seconds: float
    resumed: bool = False  # the steps were measured by an interrupted run (their time is not in `seconds`)
    observed: bool = False  # the steps were seen from outside (rayhet.profiling.observe), not logged by the engine
    checks: dict = None  # held-out bucket -> rayhet.profiling.power.CheckPlan (requests a point, power)


async def measure_engine_model(target, settings: SweepSettings, *, seed: int = 0, held_out: int = 3,
                               progress: bool = True, state=None, live_seconds: float = 45.0,
                               url_limits=None, outside: bool = False, check_seconds: float = 900.0,
                               check_requests: int | None = None, design_tokens: int = 60_000) -> MeasuredModel:
    """Phase 1 and 2 of `--method model`: step times on the designed batches, the fit, the derived grid.
    The llama.cpp engine in process logs its own steps; any other target (vLLM, --url) is observed from
    outside (rayhet.profiling.observe). With a `state` (the sidecar's), steps it already holds are used
    instead of measured, and new ones are stored in it."""
    import time

    from tqdm import tqdm

    from rayhet.capacity import derive_max_rate
    from rayhet.perf import StepWork
    from rayhet.profiling.engine_model import (design, fit_samples, held_out_buckets, limits_of, live_mix,
                                               live_rate, live_steps, measure_steps)
    from rayhet.profiling.targets import EngineTarget

    t0 = time.monotonic()
    engine = getattr(target, "engine", None)
    logs_steps = engine is not None and hasattr(engine, "step_log") and not outside
    limits = url_limits if engine is None else limits_of(engine)
    resumed = bool(state is not None and state.engine_steps)
    if resumed:
        samples = [(label, StepWork(*work), sec) for label, work, sec in state.engine_steps]
        print(f"engine model: {len(samples)} steps measured before the interruption, not measured again",
              file=sys.stderr)
    elif not logs_steps:
        from rayhet.profiling.observe import run_observed

        bar = tqdm(unit="experiment", desc="engine model: step times, observed from outside", disable=not progress,
                   dynamic_ncols=True)
        samples = await run_observed(target, limits, target.token_ids(), np.random.default_rng(seed),
                                     on_batch=lambda k, label: (bar.update(1), bar.set_postfix_str(label)))
        bar.close()
        if state is not None:
            state.engine_steps = [(label, _work_list(w), sec) for label, w, sec in samples]
    else:
        batches = design(limits, budget_tokens=design_tokens)
        bar = tqdm(total=len(batches), unit="batch", desc="engine model: step times", disable=not progress,
                   dynamic_ncols=True)
        samples = await measure_steps(engine, batches, EngineTarget(engine).token_ids(), seed=seed,
                                      on_batch=lambda k, b: (bar.update(1), bar.set_postfix_str(b.label)))
        bar.close()
        # a live phase, at a rate the first fit says keeps half the slots busy; then the fit on everything
        if live_seconds > 0:
            mix = live_mix(limits)
            rate = live_rate(fit_samples(samples).model, limits, mix)
            bar = tqdm(total=round(live_seconds), unit="s", desc=f"engine model: live load {rate:.2g} req/s",
                       disable=not progress, dynamic_ncols=True, bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} s")
            samples += await live_steps(engine, mix, rate, live_seconds, EngineTarget(engine).token_ids(),
                                        np.random.default_rng(seed + 1),
                                        on_tick=lambda t: bar.update(max(0, round(t) - bar.n)))
            bar.close()
        if state is not None:
            state.engine_steps = [(label, _work_list(w), sec) for label, w, sec in samples]
    fit = fit_samples(samples)
    n_in, n_out = len(settings.input_edges), len(settings.output_edges)
    bar = tqdm(total=n_in * n_out, unit="bucket", desc="capacity: simulated", disable=not progress, dynamic_ncols=True)
    grid = derive_max_rate(fit.model, limits, settings.slo, settings.input_edges, settings.output_edges,
                           progress=lambda i, j: bar.update(1))
    bar.close()
    checkable = _checkable(fit.model, limits, settings, grid, held_out)
    edge = [(i, j) for i in range(n_in) for j in range(n_out) if held_out > 0 and grid[i][j] and not checkable(i, j)]
    if edge:
        print(f"engine model: {len(edge)} bucket(s) not eligible as held-out checks, their capacity hinging on the "
              f"machine's speed (a 10 % slower engine keeps < {HELD_OUT_MIN_KEPT:.0%} of it): "
              + " ".join(f"{settings.input_edges[i]}/{settings.output_edges[j]}" for i, j in edge), file=sys.stderr)
    checks, decisive = _check_planner(fit.model, limits, settings, grid, check_seconds, check_requests, seed)
    picks = held_out_buckets(n_in, n_out, checkable, held_out, usable=decisive)
    for i, j in picks:
        c = checks[(i, j)]
        print(f"engine model: held-out {settings.input_edges[i]}/{settings.output_edges[j]}: predicted "
              f"{grid[i][j]:.3g} req/s, checked with {c.requests} requests a point (~{c.seconds / 60:.0f} min); a "
              f"perfect model passes this check in {c.power:.0%} of draws", file=sys.stderr)
    return MeasuredModel(samples, fit, limits, grid, picks, time.monotonic() - t0,
                         resumed=bool(state is not None and resumed), observed=not logs_steps,
                         checks={k: checks[k] for k in picks})


# A held-out bucket must keep this share of its capacity when the engine runs 10 % slower: the machine's
# speed moves by that much within an hour on a shared host, and a check that moves 2-5x with it checks
# the host, not the model (the fourth run here: 500-token prompts under a 1 s TTFT keep 0.2-0.4).
HELD_OUT_MIN_KEPT = 0.7


def _checkable(model, limits, settings: SweepSettings, grid, k: int):
    """Which buckets may be held out: those the model predicts a capacity for (a bucket nobody can serve
    checks little) whose capacity does not hinge on the machine's speed (`speed_sensitivity`)."""
    from rayhet.capacity import speed_sensitivity

    if k <= 0:
        return lambda i, j: False
    kept: dict[tuple[int, int], float] = {}

    def checkable(i: int, j: int) -> bool:
        if grid[i][j] is None:
            return False
        if (i, j) not in kept:
            kept[(i, j)] = speed_sensitivity(model, limits, settings.slo, settings.input_edges[i],
                                             settings.output_edges[j], grid[i][j])
        return kept[(i, j)] >= HELD_OUT_MIN_KEPT

    return checkable


def _check_planner(model, limits, settings: SweepSettings, grid, max_seconds: float, requests: int | None, seed: int):
    """A held-out bucket's check plan (rayhet.profiling.power), computed when first asked, and the predicate
    `held_out_buckets` uses: the check reaches TARGET_POWER within `max_seconds`. With `requests` fixed
    (--held-out-requests) every bucket is usable and measured with that many, its power reported."""
    from rayhet.profiling.grid import Bucket, representative
    from rayhet.profiling.power import LADDER, TARGET_POWER, plan_check

    plans: dict = {}
    ladder = (requests,) if requests else LADDER

    def plan(i: int, j: int):
        if (i, j) not in plans:
            b = Bucket(i, j, representative(settings.input_edges, i), representative(settings.output_edges, j))
            plans[(i, j)] = plan_check(model, limits, settings.slo, b, grid[i][j], min_warmup_s=settings.min_warmup_s,
                                       max_seconds=float("inf") if requests else max_seconds, ladder=ladder, seed=seed)
        return plans[(i, j)]

    def decisive(i: int, j: int) -> bool:
        c = plan(i, j)
        if c is None or (not requests and c.power < TARGET_POWER):
            why = "no point fits" if c is None else f"{c.requests} requests a point reach only {c.power:.0%}"
            print(f"engine model: {settings.input_edges[i]}/{settings.output_edges[j]} not held out: its check "
                  f"cannot be decisive in {max_seconds / 60:.0f} min ({why}; {TARGET_POWER:.0%} asked)", file=sys.stderr)
            return False
        return True

    return plans, decisive


def _work_list(w) -> list[float]:
    return [w.steps, w.prefill_tokens, w.decode_seqs, w.decode_context, w.prefill_pairs, w.extra_passes, w.multi_passes,
            w.offload_steps]


MAX_POINTS_KEPT = 3000  # raw step points written into the profile (an even subsample beyond this)


def at_speed(model, drift: dict | None):
    """The step model with its prefill terms scaled by the prefill drift and every other term by the decode
    drift (one kind missing: the other's for both)."""
    if not drift:
        return model
    from rayhet.perf import StepModel

    dp, dd = drift.get("prefill", drift.get("decode", 1.0)), drift.get("decode", drift.get("prefill", 1.0))
    return StepModel(**{k: v * (dp if k in ("c_prefill", "c_attn") else dd) for k, v in model.model_dump().items()})


def _at_speed(measured: MeasuredModel, settings: SweepSettings, i: int, j: int, drift: dict | None) -> float | None:
    """Bucket (i, j)'s capacity from the model at the speed `drift` says the engine ran (`at_speed`)."""
    if not drift:
        return None
    from rayhet.capacity import bucket_capacity as simulated_capacity

    # the bucket at its upper-edge sizes, as derive_max_rate made the grid
    return simulated_capacity(at_speed(measured.fit.model, drift), measured.limits, settings.slo,
                              settings.input_edges[i], settings.output_edges[j])


class CheckRecorder:
    """What the held-out phase keeps of each measured point besides the point itself: its twin (the same
    arrivals through the replica model: rayhet.profiling.twin) and, for an engine that logs its steps, the
    speed the engine ran *during* the point, measured/predicted time of the steps it ran over the same ratio
    in the live phase of the fit, for prompt and decode steps apart, and the twin again with the model at that
    speed. A probe of a few seconds before a bucket misses a shared host slowing while the bucket runs (seen
    here: decode steps 1.07x by the probe, 1.3x an hour later); with this a miss splits into the host's speed
    (the twin at speed agrees with the engine) and the model (it does not).

    `drive` is `run_sweep`'s drive, `twin` its twin callback."""

    def __init__(self, measured: MeasuredModel, settings: SweepSettings, state: SweepState, engine=None):
        self.measured, self.settings, self.state = measured, settings, state
        logs = engine is not None and hasattr(engine, "step_log") and not measured.observed
        self.engine = engine if logs else None
        self._speed: dict[str, float] | None = None
        self._fitted_ratio: dict[str, float | None] | None = None  # the fit's live steps, measured/predicted

    async def drive(self, target, input_tokens: int, output_tokens: int, rate: float, plan, rng):
        from rayhet.profiling.load import run_point

        self._speed = None
        if self.engine is None:
            return await run_point(target, input_tokens, output_tokens, rate, plan, rng)
        from rayhet.profiling.engine_model import logged_steps

        self.engine.step_log = []
        try:
            timings = await run_point(target, input_tokens, output_tokens, rate, plan, rng)
        finally:
            log, self.engine.step_log = self.engine.step_log, None
        self._speed = self.speed(logged_steps(log, self.measured.limits, "check"))
        return timings

    def speed(self, steps) -> dict[str, float]:
        """The engine's speed in `steps` relative to the fit's live steps (all its steps, without a live phase)."""
        from rayhet.profiling.engine_model import DRIFT_KINDS, speed_ratio

        model, fitted = self.measured.fit.model, self.measured.samples
        if self._fitted_ratio is None:  # the same for every point: once
            base = [s for s in fitted if s[0] == "live"] or fitted
            self._fitted_ratio = {kind: speed_ratio(model, base, None, kind) for kind in DRIFT_KINDS}
        out = {}
        for kind in DRIFT_KINDS:
            then, now = self._fitted_ratio[kind], speed_ratio(model, steps, None, kind)
            if then and now:
                out[kind] = round(now / then, 4)
        return out

    def twin(self, b, rate: float, plan, timings):
        from rayhet.profiling.twin import twin_point

        model, limits, slo = self.measured.fit.model, self.measured.limits, self.settings.slo
        key = f"{b.i},{b.j}"  # one entry a point, in the bucket's order (null where the speed was not measured)
        self.state.point_speeds.setdefault(key, []).append(self._speed or None)
        self.state.speed_twins.setdefault(key, []).append(
            twin_point(at_speed(model, self._speed), limits, b, rate, plan, timings, slo) if self._speed else None)
        return twin_point(model, limits, b, rate, plan, timings, slo)


def with_engine_model(profile, measured: MeasuredModel, settings: SweepSettings, state: SweepState | None = None):
    """The sweep-built profile turned into a version-2 one: capacity from the model, the model recorded, and
    the held-out buckets' measured capacity next to their prediction."""
    from rayhet.profiles import EngineModelRecord, HeldOut, StepPoint
    from rayhet.profiling.search import bracket

    samples = measured.samples
    if len(samples) > MAX_POINTS_KEPT:
        keep = np.linspace(0, len(samples) - 1, MAX_POINTS_KEPT).round().astype(int)
        samples = [samples[k] for k in keep]
    points = [StepPoint(label=label, work=[float(x) for x in w.vector()], seconds=max(sec, 1e-9),
                        predicted_s=measured.fit.model.time(w)) for label, w, sec in samples]
    held = []
    for i, j in measured.held_out:
        pts = [p for p in profile.sweep if (p.input_bucket, p.output_bucket) == (i, j)]
        probes = (state.speed_drifts if state else {}).get(f"{i},{j}") or []
        drift = {k: round(float(np.mean([p[k] for p in probes if k in p])), 4)
                 for k in ("prefill", "decode") if any(k in p for p in probes)} or None
        passed, failed = bracket([(p.offered_rate, p.meets_slo) for p in pts])  # as profiling.capacity reads it
        check = (measured.checks or {}).get((i, j))
        held.append(HeldOut(input_bucket=i, output_bucket=j, predicted_rate=measured.grid[i][j],
                            measured_rate=passed, measured_fail_rate=failed,
                            speed_drift=drift, predicted_rate_at_check=_at_speed(measured, settings, i, j, drift),
                            twins=(state.twins if state else {}).get(f"{i},{j}", []),
                            speed_during=(state.point_speeds if state else {}).get(f"{i},{j}", []),
                            twins_at_speed=(state.speed_twins if state else {}).get(f"{i},{j}", []),
                            requests_per_point=check.requests if check else None,
                            check_power=check.power if check else None))
    from rayhet.capacity import REQUESTS, TOLERANCE

    record = EngineModelRecord(limits=measured.limits.model_dump(), step=measured.fit.model.model_dump(),
                               capacity_requests=REQUESTS, capacity_tolerance=TOLERANCE, capacity_gaps="stratified",
                               mean_abs_rel_error=measured.fit.mean_abs_rel_error,
                               max_abs_rel_error=measured.fit.max_abs_rel_error, points=points, held_out=held)
    prov = profile.provenance.model_copy(update={"notes": (profile.provenance.notes or "") + (
        f" Method: engine model. {sum(s[0] != 'live' for s in measured.samples)} steps of "
        f"{len({s[0] for s in measured.samples} - {'live'})} designed experiments and "
        f"{sum(s[0] == 'live' for s in measured.samples)} steps of live load measured and fitted"
        f"{'' if measured.resumed else f' in {measured.seconds:.0f} s'} (mean step-time error "
        f"{measured.fit.mean_abs_rel_error:.1%}); max_rate derived by simulating one replica (rayhet.capacity); "
        f"the sweep holds only the held-out buckets {measured.held_out}.")})
    return profile.model_copy(update={"schema_version": 2, "max_rate": measured.grid, "engine_model": record,
                                      "provenance": prov})
