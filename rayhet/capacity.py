"""Capacity: the highest request rate one replica sustains under an SLO, derived from its engine model.

For a bucket, 600 requests of its upper-edge sizes arrive as a Poisson stream at rate λ into the replica
model (rayhet.sim.replica) timed by the pool's step model; λ passes when the simulated requests meet the SLO
(rayhet.slo), none is refused, and the replica keeps up (first tokens within 90 % of arrivals per second,
the same rule `rayhet profile` applies to a measured point). The search brackets λ by doubling and then
bisects geometrically. The arrival gaps are drawn once per bucket (common random numbers, stratified:
`arrival_gaps`), so a higher rate sees the same stream compressed, and the pass/fail boundary does not
jitter with the draw. The capacity is the long-run one: a point of a few requests measured on the engine
scatters around it (rayhet.profiling.power says how much).

Pure and fast: a whole 10 x 6 grid takes seconds, so a service's own SLO is applied to every profile that
has an engine model when it plans (`derive_max_rate`), without profiling again.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rayhet.perf import EngineLimits, StepModel
from rayhet.sim.replica import SimRequest, simulate
from rayhet.slo import Sample, meets, served_share

log = logging.getLogger(__name__)

WARMUP_SHARE = 0.1  # leading requests excluded from the verdict: the replica starts empty
KEEP_UP = 0.9  # first tokens per second must reach this share of arrivals per second (rayhet.slo.served_share)
REQUESTS = 600  # simulated arrivals per judged rate (see arrival_gaps)
TOLERANCE = 0.045  # the search stops at highest pass x (1 + this) >= lowest fail: 4 bisections from a factor 2


def judge(model: StepModel, limits: EngineLimits, slo, input_tokens: int, output_tokens: int, rate: float,
          gaps: np.ndarray) -> bool:
    """Whether one replica meets `slo` for this request size at `rate` req/s (arrival gaps: unit-rate)."""
    arrivals = np.cumsum(gaps) / rate
    reqs = [SimRequest(float(t), input_tokens, output_tokens, rid=k + 1) for k, t in enumerate(arrivals)]
    done = simulate(model, limits, reqs)
    if any(r.refused for r in done):
        return False
    judged = done[int(len(done) * WARMUP_SHARE):]
    if served_share([r.arrival for r in judged], [r.first_token for r in judged]) < KEEP_UP:
        return False
    return meets(slo, Sample.of(judged))


def arrival_gaps(requests: int, seed: int = 0) -> np.ndarray:
    """Unit-rate Poisson inter-arrival gaps, stratified: one exponential quantile drawn from each of
    `requests` equal slices of probability, in random order. The gaps are as bursty as Poisson (same
    distribution, independent order) but their own sampling error is gone, and that error decided the
    capacity: with 300 plain draws a bucket's capacity spread +-13 % (p10-p90) over seeds, and the one draw
    every profile used (seed 0) sat at the p90 of all three held-out buckets of the fifth run, 10-17 % above
    their median. Stratified, 600 gaps: +-4 %."""
    rng = np.random.default_rng(seed)
    u = (np.arange(requests) + rng.uniform(size=requests)) / requests
    return rng.permutation(-np.log1p(-u))


def bucket_capacity(model: StepModel, limits: EngineLimits, slo, input_tokens: int, output_tokens: int, *,
                    requests: int = REQUESTS, tolerance: float = TOLERANCE, seed: int = 0) -> float | None:
    """Max req/s for requests of exactly these sizes; None when even one request alone misses the SLO or the
    request does not fit the replica."""
    if input_tokens + output_tokens > min(limits.max_context, limits.kv_tokens):
        return None
    gaps = arrival_gaps(requests, seed)
    alone = simulate(model, limits, [SimRequest(0.0, input_tokens, output_tokens, rid=1)])[0]
    if not meets(slo, Sample.of([alone])):
        return None
    # a replica cannot finish more than its slots' worth of requests per single-request latency
    lo, hi = None, None
    rate = max(limits.batch_slots / alone.e2e, 1e-6)
    if judge(model, limits, slo, input_tokens, output_tokens, rate, gaps):
        lo = rate
        while hi is None:  # rare: batching helps more than the slots suggest (e.g. prefill-bound) — go up
            rate *= 2
            if judge(model, limits, slo, input_tokens, output_tokens, rate, gaps):
                lo = rate
            else:
                hi = rate
            if rate > 1e6:
                return lo
    else:
        hi = rate
        while lo is None:
            rate /= 2
            if judge(model, limits, slo, input_tokens, output_tokens, rate, gaps):
                lo = rate
            else:
                hi = rate
            if rate < 1e-6:
                return None
    while hi / lo > 1 + tolerance:
        mid = math.sqrt(lo * hi)
        if judge(model, limits, slo, input_tokens, output_tokens, mid, gaps):
            lo = mid
        else:
            hi = mid
    return lo


def derive_max_rate(model: StepModel, limits: EngineLimits, slo, input_edges: list[int], output_edges: list[int], *,
                    requests: int = REQUESTS, tolerance: float = TOLERANCE, seed: int = 0,
                    progress=None) -> list[list[float | None]]:
    """The capacity grid: each bucket at its upper-edge sizes (as `rayhet profile` measures it). Kept on disk
    (`capacity_cache_dir`) under everything it depends on, the derivation's own code included: a service
    re-derives the same grids at every `serve run`, `rayhet plan` and `rayhet simulate` (12 s a 60-bucket grid
    on two busy vCPUs), and the answer cannot differ."""
    key = _grid_key(model, limits, slo, input_edges, output_edges, requests, tolerance, seed) \
        if _code_fingerprint() else None
    cached = _read_grid(key) if key else None
    if cached is not None:
        return cached
    grid = _derive(model, limits, slo, input_edges, output_edges, requests, tolerance, seed, progress)
    if key:
        _write_grid(key, grid)
    return grid


def capacity_cache_dir() -> Path | None:
    """Where derived grids are kept: $RAYHET_CAPACITY_CACHE (`off`: nowhere), else ~/.cache/rayhet/capacity."""
    env = os.environ.get("RAYHET_CAPACITY_CACHE")
    if env and env.lower() in ("off", "0", "none", "false"):
        return None
    return Path(env) if env else Path.home() / ".cache" / "rayhet" / "capacity"


@functools.lru_cache(maxsize=1)
def _code_fingerprint() -> str:
    """The derivation's code: this module, the step model, the replica model, the SLO verdicts."""
    import rayhet.perf
    import rayhet.sim.replica
    import rayhet.slo

    h = hashlib.sha256()
    try:
        for mod in (sys.modules[__name__], rayhet.perf, rayhet.sim.replica, rayhet.slo):
            h.update(Path(mod.__file__).read_bytes())
    except (OSError, TypeError):  # sources not readable (a frozen install): no key can be trusted, keep none
        return ""
    return h.hexdigest()


def _grid_key(model, limits, slo, input_edges, output_edges, requests, tolerance, seed) -> str:
    slo_json = slo.model_dump_json() if hasattr(slo, "model_dump_json") else json.dumps(slo, sort_keys=True, default=str)
    blob = json.dumps([_code_fingerprint(), model.model_dump(mode="json"), limits.model_dump(mode="json"), slo_json,
                       list(input_edges), list(output_edges), requests, tolerance, seed], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def _read_grid(key: str) -> list[list[float | None]] | None:
    d = capacity_cache_dir()
    if d is None:
        return None
    try:
        grid = json.loads((d / f"{key}.json").read_text())["max_rate"]
        return [[None if r is None else float(r) for r in row] for row in grid]
    except (OSError, ValueError, KeyError, TypeError):  # absent, unreadable or damaged: derive it again
        return None


def _write_grid(key: str, grid) -> None:
    d = capacity_cache_dir()
    if d is None:
        return
    try:
        d.mkdir(parents=True, exist_ok=True)
        tmp = d / f".{key}.{os.getpid()}.tmp"
        tmp.write_text(json.dumps({"max_rate": grid}))
        tmp.replace(d / f"{key}.json")  # atomic: a concurrent reader sees all of it or none
    except OSError as e:  # a read-only home: derive every time
        log.debug("capacity cache not written (%s)", e)


def derive_ahead(paths, slo, *, workers: int | None = None) -> int:
    """Derive at once, in parallel processes, the grids for `slo` of the profiles at `paths` that the disk cache
    lacks, so that `service_profile` then reads them back: for commands that plan over several profiles
    (`rayhet simulate`, `rayhet plan`), where each grid is seconds of one core. Split by input row, so one big
    grid does not keep the other cores idle. Returns how many grids were derived here: none with the cache off
    (the workers' grids could not reach this process), with one core, or with nothing missing. Errors are left
    to `service_profile`, which names the file."""
    from rayhet.profiles import SLO, load_profile

    d = capacity_cache_dir()
    n = workers or os.cpu_count() or 1
    if slo is None or d is None or not _code_fingerprint() or n < 2:
        return 0
    slo = slo if isinstance(slo, SLO) else SLO.model_validate(slo)
    todo = {}  # key -> (model, limits, input edges, output edges)
    for path in dict.fromkeys(str(p) for p in paths):
        try:
            prof = load_profile(path)
        except Exception:  # noqa: BLE001 - service_profile raises it with the file named
            continue
        em = prof.engine_model
        if em is None:
            continue
        model, limits = em.step_model(), em.engine_limits()
        key = _grid_key(model, limits, slo, prof.input_edges, prof.output_edges, REQUESTS, TOLERANCE, 0)
        if not (d / f"{key}.json").exists():
            todo[key] = (model, limits, list(prof.input_edges), list(prof.output_edges))
    if not todo:
        return 0
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    tasks = [(key, i, n_in) for key, (_, _, ins, _) in todo.items() for i, n_in in enumerate(ins)]
    try:  # spawn: no fork of a process that may hold threads (Ray's, a progress bar's)
        with ProcessPoolExecutor(min(n, len(tasks)), mp_context=multiprocessing.get_context("spawn")) as ex:
            rows = list(ex.map(_derive_row, *zip(*[
                (todo[k][0].model_dump_json(), todo[k][1].model_dump_json(), slo.model_dump_json(), n_in, todo[k][3])
                for k, _, n_in in tasks])))
    except Exception as e:  # noqa: BLE001 - the grids are derived in this process instead, errors named there
        log.debug("derive_ahead: %s", e)
        return 0
    grids: dict[str, dict[int, list]] = {}
    for (key, i, _), row in zip(tasks, rows):
        grids.setdefault(key, {})[i] = row
    for key, by_row in grids.items():
        _write_grid(key, [by_row[i] for i in range(len(by_row))])
    return len(grids)


def _derive_row(model_json: str, limits_json: str, slo_json: str, n_in: int, output_edges: list[int]) -> list:
    """One input row of a grid in a worker process (plain data in): `_row` with `derive_ahead`'s settings."""
    from rayhet.profiles import SLO

    model, limits = StepModel.model_validate_json(model_json), EngineLimits.model_validate_json(limits_json)
    return _row(model, limits, SLO.model_validate_json(slo_json), n_in, output_edges, REQUESTS, TOLERANCE, 0)


def _row(model, limits, slo, n_in, output_edges, requests, tolerance, seed, on_cell=None) -> list:
    row = []
    for j, n_out in enumerate(output_edges):
        row.append(bucket_capacity(model, limits, slo, n_in, n_out, requests=requests, tolerance=tolerance,
                                   seed=seed))  # one arrival draw for all buckets: a smoother grid
        if on_cell is not None:
            on_cell(j)
    return row


def _derive(model, limits, slo, input_edges, output_edges, requests, tolerance, seed, progress):
    return [_row(model, limits, slo, n_in, output_edges, requests, tolerance, seed,
                 None if progress is None else (lambda j, i=i: progress(i, j)))
            for i, n_in in enumerate(input_edges)]


def speed_sensitivity(model: StepModel, limits: EngineLimits, slo, input_tokens: int, output_tokens: int,
                      capacity: float, *, slowdown: float = 1.1, requests: int = REQUESTS, tolerance: float = TOLERANCE) -> float:
    """The share of `capacity` left when every step takes `slowdown` times longer (0 when nothing is left).

    A bucket limited by throughput keeps about 1/slowdown (0.91 at 1.1); one whose single request already
    uses most of an SLO budget loses far more (a 500-token prompt under a 1 s TTFT here keeps 0.2-0.4):
    its capacity says more about the machine's speed that minute than about the model, so it makes a poor
    held-out check."""
    slower = StepModel(**{k: v * slowdown for k, v in model.model_dump().items()})
    c = bucket_capacity(slower, limits, slo, input_tokens, output_tokens, requests=requests, tolerance=tolerance)
    return 0.0 if c is None else c / capacity


def for_slo(profile, slo, *, requests: int | None = None):
    """`profile` with max_rate re-derived for `slo` from its engine model (a new Profile; the file's is kept
    as measured). A profile without an engine model must already be for this SLO: ValueError otherwise."""
    from rayhet.profiles import SLO

    slo = SLO.model_validate(slo) if not isinstance(slo, SLO) else slo
    if profile.engine_model is None:
        if _same_slo(profile.slo, slo):
            return profile
        raise ValueError(f"pool {profile.pool}: its profile was measured under {profile.slo.model_dump(exclude_defaults=True)} "
                         "and has no engine model to derive capacity for another SLO (profile it again with "
                         "`rayhet profile` for schema version 2)")
    em = profile.engine_model
    # today's search, whatever the file's grid was derived with (capacity_requests records that)
    grid = derive_max_rate(em.step_model(), em.engine_limits(), slo, profile.input_edges, profile.output_edges,
                           requests=requests or REQUESTS)
    return profile.model_copy(update={"max_rate": grid, "slo": slo})


@dataclass(frozen=True)
class HeldOutVerdict:
    """How far a profile's model-derived capacity must come down to agree with its own held-out buckets."""

    factor: float  # <= 1: the grid is multiplied by it
    bucket: tuple[int, int] | None = None  # the held-out bucket that set it
    predicted: float | None = None
    passed_at: float | None = None  # the highest rate that passed there
    failed_at: float | None = None  # the lowest rate that failed there

    @property
    def measured(self) -> float | None:
        """The capacity measured there: the geometric middle of the last pass and the first fail."""
        return None if self.passed_at is None or self.failed_at is None else math.sqrt(self.passed_at * self.failed_at)


def held_out_verdict(profile, band: float | None = None) -> HeldOutVerdict:
    """The model over-predicts a held-out bucket when the engine failed at a rate the prediction says it should
    pass with room: at or below predicted / (1 + band), where `rayhet profile`'s own check fails it
    (rayhet.profiling.search.check_rates). The capacity there lies between the last rate that passed and that
    failure; every bucket's derived capacity is scaled by the worst of (their geometric middle) / predicted: one
    bucket's evidence applied to all, the safe side for an SLO. Never up: a model that under-predicts costs money,
    not the SLO. A failure that the model repeats on the very same arrivals (the point's twin fails too) is the
    sample's luck, not evidence: the 120M CPU profile's 250/25 check failed at predicted / 1.15 with TPOT 54.1 ms
    against 50, and its twin failed with 50.9. The default app's `large` failed at 128/64 where its twin
    passed: planned at 0.81 of its model."""
    from rayhet.profiling.search import HELD_OUT_BAND

    band = HELD_OUT_BAND if band is None else band
    em = profile.engine_model
    worst = HeldOutVerdict(1.0)
    for h in (em.held_out if em is not None else []):
        if not h.predicted_rate or not h.measured_rate:
            continue
        # Files made before the record kept the failing rate are not judged: their points' pass/fail flags
        # followed older rules (the H200 profile's 12.9 req/s failed on completions per second alone, at a TTFT
        # p90 of 60 ms)
        failed_at = h.measured_fail_rate
        # the check's lower rate is predicted / (1 + band) exactly: equal within rounding counts as failed there
        if failed_at is None or failed_at > h.predicted_rate / (1 + band) * (1 + 1e-9):
            continue
        if _twin_fails_too(profile, h, failed_at):  # the sample's luck, not the model: no evidence
            continue
        v = HeldOutVerdict(1.0, (h.input_bucket, h.output_bucket), h.predicted_rate, h.measured_rate, failed_at)
        factor = min(1.0, v.measured / h.predicted_rate)
        if factor < worst.factor:
            worst = HeldOutVerdict(factor, v.bucket, v.predicted, v.passed_at, v.failed_at)
    return worst


def _twin_fails_too(profile, h, rate: float) -> bool:
    """Whether the replica model, replayed on the very arrivals the engine got at `rate` (the point's twin,
    rayhet.profiling.twin), failed there as well."""
    points = [q for q in profile.sweep if (q.input_bucket, q.output_bucket) == (h.input_bucket, h.output_bucket)]
    for q, twin in zip(points, h.twins):
        if math.isclose(q.offered_rate, rate, rel_tol=1e-9):
            return not twin.meets_slo
    return False


_warned_held_out: set = set()  # (file, bucket) already said in this process


def held_out_corrected(profile, path: str = "profile"):
    """`profile` with its max_rate scaled by its held-out verdict (itself when the checks agree), said once."""
    v = held_out_verdict(profile)
    if v.factor >= 1.0:
        return profile
    if (path, v.bucket) not in _warned_held_out:
        _warned_held_out.add((path, v.bucket))
        log.warning("%s: its engine model over-predicts the held-out bucket %s (predicted %.3g req/s; measured: "
                    "passed %.3g, failed %.3g): every capacity in it is scaled by %.2f (`--held-out ignore`, or "
                    "planner.held_out: ignore, plans with the model as it is; re-profile to mend it)",
                    path, v.bucket, v.predicted, v.passed_at, v.failed_at, v.factor)
    grid = [[None if r is None else r * v.factor for r in row] for row in profile.max_rate]
    return profile.model_copy(update={"max_rate": grid})


def _same_slo(a, b) -> bool:
    return a.model_dump(exclude={"unknown"}) == b.model_dump(exclude={"unknown"})


def service_profile(path, slo=None, held_out: str = "scale"):
    """The profile at `path` as a service with `slo` must plan with: re-derived from its engine model when it
    has one and the SLO differs; as measured when the SLO is the same, not given, or unknown in the file
    (a warning: its capacity may not match your SLO). A ProfileError names the file when it can be neither.
    `held_out="scale"` (the default): capacity scaled down where the profile's own held-out checks show its
    model over-predicting (held_out_verdict); "ignore": the model as it is.
    Cached per (file, modification time, SLO): the app builder and the controller ask for the same ones."""
    import os

    if held_out not in ("scale", "ignore"):
        raise ValueError(f"held_out: 'scale' or 'ignore', not {held_out!r}")
    profile = _service_profile(str(path), os.stat(path).st_mtime_ns,
                               None if slo is None else slo.model_dump_json() if hasattr(slo, "model_dump_json")
                               else json.dumps(slo, sort_keys=True))
    return held_out_corrected(profile, str(path)) if held_out == "scale" else profile


_warned: set[str] = set()


@functools.lru_cache(maxsize=64)
def _service_profile(path: str, mtime_ns: int, slo_json: str | None):
    from rayhet.errors import ProfileError
    from rayhet.profiles import SLO, load_profile

    profile = load_profile(path)
    if profile.engine_model is None and path not in _warned:
        _warned.add(path)
        log.info("%s: schema version %d profile without an engine model: its capacity is fixed at the SLO it "
                 "was measured under", path, profile.schema_version)
    if slo_json is None:
        return profile
    slo = SLO.model_validate_json(slo_json)
    if profile.slo.unknown and profile.engine_model is None:
        log.warning("%s: the SLO its capacity was measured under is unknown; planning with it as if it were %s",
                    path, slo.model_dump(exclude_defaults=True))
        return profile
    try:
        return for_slo(profile, slo)
    except ValueError as e:
        raise ProfileError(f"{path}: {e}") from None
