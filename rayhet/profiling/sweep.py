"""Sweep: search every bucket's capacity within a time budget, saving each point to a sidecar to resume."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Awaitable, Callable

import numpy as np
from pydantic import BaseModel, ConfigDict

from rayhet.errors import RayhetError
from rayhet.profiles import SLO, SweepPoint
from rayhet.profiling.grid import Bucket, buckets
from rayhet.profiling.load import run_point, single_request
from rayhet.profiling.measure import PointPlan, RequestTiming, check_timing, plan_point, summarize
from rayhet.profiling.search import SearchParams, check_rate, next_rate, start_rate
from rayhet.profiling.targets import Target


log = logging.getLogger(__name__)


class ProfilingError(RayhetError):
    """A profiling run cannot go on (bad settings, a sidecar from another run); the message says what to do."""


@dataclass(frozen=True)
class SweepSettings:
    """What to measure and how long each point runs."""

    slo: SLO
    input_edges: list[int]
    output_edges: list[int]
    search: SearchParams = field(default_factory=SearchParams)
    min_requests: int = 20  # measured requests per point, at least
    min_duration_s: float = 20.0  # measurement window per point, at least
    max_window_s: float = 120.0  # ... at most (very low rates then measure fewer requests)
    fewest_requests: int = 2  # ... but never fewer than this many, however long the window gets
    min_warmup_s: float = 3.0  # warm-up per point, at least (and at least one request's latency)
    time_budget_s: float | None = None  # whole sweep, resumed runs included
    seed: int = 0


# Bucket status words: final ones are not measured again on --resume.
MEASURED, UNSERVABLE, TOO_LONG, NOT_MEASURED, CUT = "measured", "unservable", "too long", "not measured", "cut"
FINAL = (MEASURED, UNSERVABLE, TOO_LONG)


class SweepState(BaseModel):
    """Everything measured so far; written to the sidecar after every point."""

    model_config = ConfigDict(extra="forbid")

    fingerprint: dict
    elapsed_s: float = 0.0
    points: list[SweepPoint] = []
    probes: dict[str, dict] = {}  # "i,j" -> one request alone: latency_s, ttft_ms, tpot_ms, error
    status: dict[str, str] = {}  # "i,j" -> "<status word>: detail"
    # --method model: the measured engine steps (label, work features, seconds), kept so that --resume
    # goes on with the held-out buckets instead of measuring the steps again; None until measured
    engine_steps: list[tuple[str, list[float], float]] | None = None
    # --method model: the engine's speed relative to the fit, measured before and after each held-out bucket
    speed_drifts: dict[str, list[dict[str, float]]] = {}
    # --method model: each held-out point's twin (rayhet.profiling.twin), in the order of its bucket's points
    twins: dict[str, list[SweepPoint]] = {}
    # --method model, an engine that logs its steps: its speed during each held-out point, relative to the fit,
    # and the point's twin with the model at that speed (rayhet.profiling.model_method.CheckRecorder); one entry a
    # point of the bucket, None where it was not measured
    point_speeds: dict[str, list[dict[str, float] | None]] = {}
    speed_twins: dict[str, list[SweepPoint | None]] = {}

    def bucket_points(self, b: Bucket) -> list[SweepPoint]:
        return [p for p in self.points if (p.input_bucket, p.output_bucket) == b.key]


def fingerprint(settings: SweepSettings, target_id: dict) -> dict:
    """What must not change between an interrupted run and its --resume."""
    return json.loads(json.dumps({
        "target": target_id,
        "slo": settings.slo.model_dump(),
        "input_edges": settings.input_edges,
        "output_edges": settings.output_edges,
        "search": asdict(settings.search),
        "points": [settings.min_requests, settings.min_duration_s, settings.max_window_s, settings.min_warmup_s,
                   settings.fewest_requests],
    }))


def load_state(path: Path, expected: dict) -> SweepState:
    """Read a sidecar to resume from; refuse one written by a run with other settings."""
    state = SweepState.model_validate_json(path.read_text())
    if state.fingerprint != expected:
        diff = sorted(k for k in expected if state.fingerprint.get(k) != expected[k])
        raise ProfilingError(
            f"{path} was written by a run with other settings ({', '.join(diff)} differ): "
            "rerun with the same settings, or delete it (or drop --resume) to start afresh"
        )
    return state


def save_state(state: SweepState, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(state.model_dump_json(indent=1))
    tmp.replace(path)


def _key(b: Bucket) -> str:
    return f"{b.i},{b.j}"


async def run_sweep(
    target: Target,
    settings: SweepSettings,
    state: SweepState,
    save: Callable[[SweepState], None] = lambda s: None,
    progress: bool = True,
    drive=run_point,
    probe=single_request,
    only: set[tuple[int, int]] | None = None,
    predicted: dict[tuple[int, int], float] | None = None,
    checkpoint: Callable[[tuple[int, int]], Awaitable[None]] | None = None,
    twin: Callable[[Bucket, float, PointPlan, list[RequestTiming]], SweepPoint] | None = None,
    requests: dict[tuple[int, int], int] | None = None,
) -> SweepState:
    """Measure every bucket not finished in `state` (of `only`, when given), cheapest first, until done or
    out of budget. A bucket with a `predicted[bucket]` capacity (a held-out bucket) is measured as a check
    of it (`search.check_rate`: first the two rates at ±15 % that decide the check); any other starts at one
    request in flight. A bucket with `requests[bucket]` measures exactly that many requests a point, however
    long the window (the model method sizes them so that its check is decisive: rayhet.profiling.power).
    `checkpoint(bucket)` runs right before and right after each bucket measured (the model method's speed
    probe); `twin(bucket, rate, plan, timings)` makes each measured point's twin (the model method's replay
    of the same arrivals through the replica model), kept in `state.twins`.

    `drive` and `probe` default to the real open-loop load (rayhet.profiling.load); tests pass doubles.
    """
    from tqdm import tqdm

    fit, too_long = buckets(settings.input_edges, settings.output_edges, target.max_context)
    if only is not None:
        fit = [b for b in fit if b.key in only]
        too_long = [b for b in too_long if b.key in only]
    for b in too_long:
        state.status[_key(b)] = f"{TOO_LONG}: {b.input_tokens}+{b.output_tokens} tokens > context {target.max_context}"
    started, spent_before = time.monotonic(), state.elapsed_s

    def left() -> float:
        state.elapsed_s = spent_before + time.monotonic() - started
        return float("inf") if settings.time_budget_s is None else settings.time_budget_s - state.elapsed_s

    todo = [b for b in fit if not state.status.get(_key(b), "").startswith(FINAL)]
    if todo:
        await warm_up(target, probe, np.random.default_rng(settings.seed))
    bar = tqdm(total=len(fit), initial=len(fit) - len(todo), unit="bucket", disable=not progress, dynamic_ncols=True)
    out_of_time = False
    try:
        for b in todo:
            bar.set_postfix_str(_postfix(b, None, left()))
            if left() <= 0 or out_of_time:
                state.status[_key(b)] = f"{NOT_MEASURED}: time budget spent"
                continue
            if checkpoint is not None:
                await checkpoint(b.key)
            state.status[_key(b)] = await _measure_bucket(target, settings, state, b, left, save, bar, drive, probe,
                                                          (predicted or {}).get(b.key), twin,
                                                          (requests or {}).get(b.key))
            if checkpoint is not None:
                await checkpoint(b.key)
            out_of_time = state.status[_key(b)].startswith(CUT)  # no time for a point: none for later buckets
            save(state)
            bar.update(1)
    finally:
        bar.close()
        left()
        save(state)
    return state


WARMUP_TOKENS = 2048  # per batch slot


async def warm_up(target: Target, probe, rng: np.random.Generator) -> None:
    """Fill every batch slot once with a context-long prompt before measuring anything.

    A fresh engine pays one-off costs (model pages, KV-cache memory touched for the first time, thread
    start-up) that made the first points of a sweep several times slower than later ones: a first point
    that fails for that reason would cap its bucket's search far below the real capacity. Prompts stop at
    WARMUP_TOKENS: eight whole 8k-token contexts took a 1B model on 12 CPU cores past ten minutes.
    """
    n_prompt = max(1, min(target.max_context - 2, WARMUP_TOKENS))
    await asyncio.gather(*[probe(target, n_prompt, 2, rng) for _ in range(max(1, target.max_batch))])
    await _wait_idle(target)


async def _measure_bucket(target, settings, state, b, left, save, bar, drive, probe,
                          predicted: float | None = None, twin=None, requests: int | None = None) -> str:
    """Probe one request alone, then search the rate; returns the bucket's status."""
    slo = settings.slo
    alone = state.probes.get(_key(b))
    if alone is None:
        await _wait_idle(target)
        rng = np.random.default_rng([settings.seed, b.i, b.j])
        t = check_timing(await probe(target, b.input_tokens, b.output_tokens, rng), b.output_tokens)
        alone = {"error": t.error}
        if t.ok:
            alone = {
                "latency_s": round(t.end, 4),
                "ttft_ms": round(t.first_token * 1e3, 3),
                "tpot_ms": round((t.end - t.first_token) * 1e3 / max(1, t.output_tokens - 1), 3),
                "error": None,
            }
        state.probes[_key(b)] = alone
        save(state)
    if alone["error"]:
        return f"{UNSERVABLE}: one request alone failed: {alone['error']}"
    if slo.tpot_ms is not None and alone["tpot_ms"] > slo.tpot_ms:
        return f"{UNSERVABLE}: one request alone has TPOT {alone['tpot_ms']:.1f} ms > {slo.tpot_ms:g} ms"
    if slo.ttft_ms is not None and alone["ttft_ms"] > slo.ttft_ms:
        return f"{UNSERVABLE}: one request alone has TTFT {alone['ttft_ms']:.1f} ms > {slo.ttft_ms:g} ms"

    single = alone["latency_s"]
    # A request meeting the SLO lasts at most about this long; it sizes the drain wait.
    tpot_bound = (slo.tpot_ms or 4 * alone["tpot_ms"]) / 1e3
    ttft_bound = (slo.ttft_ms or max(1000.0, 4 * alone["ttft_ms"])) / 1e3
    bound = ttft_bound + b.output_tokens * tpot_bound
    history = [(p.offered_rate, p.meets_slo) for p in state.bucket_points(b)]
    if predicted is not None and predicted > 0:
        following = lambda h: check_rate(h, predicted, settings.search)  # noqa: E731
    else:
        following = lambda h: next_rate(h, start_rate(single), settings.search)  # noqa: E731
    while (rate := following(history)) is not None:
        if requests:
            plan = plan_point(rate, single, min_requests=requests, min_duration_s=0.0, max_window_s=float("inf"),
                              min_warmup_s=settings.min_warmup_s, latency_bound_s=bound)
        else:
            plan = plan_point(
                rate, single,
                min_requests=settings.min_requests, min_duration_s=settings.min_duration_s,
                max_window_s=settings.max_window_s, min_warmup_s=settings.min_warmup_s, latency_bound_s=bound,
                fewest_requests=settings.fewest_requests,
            )
        if plan.warmup_s + plan.window_s + single > left():
            return f"{CUT}: search stopped by the time budget after {len(history)} point(s)"
        bar.set_postfix_str(_postfix(b, rate, left()))
        await _wait_idle(target)
        rng = np.random.default_rng([settings.seed, b.i, b.j, len(history) + 1])
        timings = await drive(target, b.input_tokens, b.output_tokens, rate, plan, rng)
        point = summarize(timings, b, rate, plan, slo)
        state.points.append(point)
        if twin is not None:
            state.twins.setdefault(_key(b), []).append(twin(b, rate, plan, timings))
        history.append((rate, point.meets_slo))
        left()
        save(state)
    if not any(ok for _, ok in history):
        return f"{UNSERVABLE}: no rate passed, down to {min(r for r, _ in history):.3g} req/s"
    return f"{MEASURED}: {len(history)} point(s)"


async def _wait_idle(target: Target, timeout_s: float = 60.0) -> None:
    if not await target.wait_idle(timeout_s):
        log.warning("the target still has requests of the previous point after %.0f s; measuring anyway", timeout_s)


def _postfix(b: Bucket, rate: float | None, left_s: float) -> str:
    r = "probe" if rate is None else f"{rate:.3g} req/s"
    budget = "" if left_s == float("inf") else f" budget left {int(max(left_s, 0)) // 60}m{int(max(left_s, 0)) % 60:02d}s"
    return f"{b.label} {r}{budget}"
