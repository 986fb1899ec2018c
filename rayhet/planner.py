"""Planner: the Mélange MILP (CVXPY + HiGHS) that picks the cheapest replicas per pool and a routing table.

Formulation (Griggs et al. 2024, §5). The load of bucket b (rate · fraction_b) is cut into K equal slices.
x[b, j] is the number of b's slices pool j serves and n[j] its replicas:

    minimise   Σ_j price_j · n_j  (+ 1e-4 · Σ_b,j price_j · load of x[b, j], a tie-break: C0)
    subject to Σ_j x[b, j] = K                                   for every bucket b with a capable pool (C1)
               Σ_b x[b, j] · (rate · fraction_b / K) / cap[b, j] ≤ n_j   for every pool j               (C2)
               x integer in [0, K] (0 where j cannot serve b), n integer in [min_j, max_j]

`form="aggregated"` (default) solves that; `form="binary"` is the paper's literal form with one binary per
slice and pool (same optimum, much bigger model; kept as the reference the tests compare against).
By default the aggregated form is solved *relaxation first*: x continuous, n integer, which is a
relaxation, so its optimum is a lower bound; its split is then rounded to whole slices within the same
replicas. When that rounding fits, the plan costs the lower bound and is therefore optimal for the
integer problem; when it does not, the integer model is solved directly.

Grids: pools may have different grids; `common_grid` is the union of their edges, and a pool's capacity
for a common bucket is its capacity at its own bucket holding that bucket's upper edge (None beyond its
last edge). A Distribution on any grid is re-binned onto the common grid by the same rule (exact when
its grid refines the common one; mass above the last common edge goes to the last bucket).
"""

from __future__ import annotations

import logging
import math
import os
import sys
import threading
import time
import warnings
from collections import OrderedDict
from dataclasses import dataclass
from typing import Literal, Sequence

import numpy as np

from rayhet.errors import CapacityExceeded, PlanningError
from rayhet.plan import Plan
from rayhet.profiles import Profile, bucket_index
from rayhet.workload import Distribution

log = logging.getLogger(__name__)
Form = Literal["aggregated", "binary"]


@dataclass
class PoolOption:
    """One pool the planner may use: its profile, price and replica bounds."""

    name: str
    profile: Profile
    price_per_hour: float | None = None  # overrides profile.price_per_hour
    min_replicas: int = 0
    max_replicas: int | None = None

    @property
    def price(self) -> float:
        return self.profile.price_per_hour if self.price_per_hour is None else self.price_per_hour


def common_grid(profiles: Sequence[Profile]) -> tuple[list[int], list[int]]:
    """The union of the profiles' input edges and of their output edges (sorted)."""
    if not profiles:
        raise PlanningError("no profiles given")
    return (sorted({e for p in profiles for e in p.input_edges}), sorted({e for p in profiles for e in p.output_edges}))


def capacity_on_grid(profile: Profile, input_edges: Sequence[int], output_edges: Sequence[int]) -> np.ndarray:
    """Max req/s per replica on the given grid (NaN where the profile cannot serve), see module docstring."""
    rows = [bucket_index(e, profile.input_edges) for e in input_edges]
    cols = [bucket_index(e, profile.output_edges) for e in output_edges]
    cap = np.full((len(rows), len(cols)), np.nan)
    for a, i in enumerate(rows):
        for b, j in enumerate(cols):
            if i is not None and j is not None:
                cap[a, b] = profile.rate(i, j) or np.nan
    return cap


def _onto(edges_from: Sequence[int], edges_to: Sequence[int]) -> np.ndarray:
    """For each bucket of `edges_from`, the bucket of `edges_to` holding its upper edge (the last one if above)."""
    k = np.searchsorted(np.asarray(edges_to), np.asarray(edges_from), side="left")
    return np.minimum(k, len(edges_to) - 1)


def rebin(distribution: Distribution, input_edges: Sequence[int], output_edges: Sequence[int]) -> np.ndarray:
    """Fractions of `distribution` moved onto the grid `input_edges` x `output_edges` (upper-edge rule)."""
    if list(distribution.input_edges) == list(input_edges) and list(distribution.output_edges) == list(output_edges):
        return np.array(distribution.fractions, dtype=float)
    rows, cols = _onto(distribution.input_edges, input_edges), _onto(distribution.output_edges, output_edges)
    out = np.zeros((len(input_edges), len(output_edges)))
    np.add.at(out, (np.asarray(rows)[:, None], np.asarray(cols)[None, :]), distribution.fractions)
    return out


# -- the optimisation model, built once per structure and re-solved with new load coefficients ------------
class _Model:
    """A compiled CVXPY problem over the allowed (bucket, pool) pairs; `coef` is a cp.Parameter."""

    def __init__(self, allowed: np.ndarray, prices, slices: int, kind: str):
        import cvxpy as cp
        import scipy.sparse as sp

        self.kind, self.slices, self.lock = kind, slices, threading.Lock()
        self.rows = np.flatnonzero(allowed.any(axis=1))  # buckets with at least one capable pool
        b_idx, p_idx = np.nonzero(allowed[self.rows])
        self.pairs = (self.rows[b_idx], p_idx)
        n_pairs, n_pools = len(b_idx), allowed.shape[1]
        S = sp.csr_matrix((np.ones(n_pairs), (b_idx, np.arange(n_pairs))), shape=(len(self.rows), n_pairs))
        M = sp.csr_matrix((np.ones(n_pairs), (p_idx, np.arange(n_pairs))), shape=(n_pools, n_pairs))
        self.coef = cp.Parameter(n_pairs, nonneg=True)  # load of one slice on that pool, in replicas
        self.n = cp.Variable(n_pools, integer=True)
        self.lo, self.hi = cp.Parameter(n_pools), cp.Parameter(n_pools)  # replica bounds, set per solve
        cons = [self.n >= self.lo, self.n <= self.hi]
        if kind == "binary":  # one 0/1 per (bucket, pool, slice): every slice goes to exactly one pool
            y = cp.Variable((n_pairs, slices), boolean=True)
            cons.append(S @ y == 1)
            self.x = cp.sum(y, axis=1)
        else:
            self.x = cp.Variable(n_pairs, integer=(kind == "integer"))
            cons += [self.x >= 0, self.x <= slices, S @ self.x == slices]
        cons.append(M @ cp.multiply(self.coef, self.x) <= self.n)
        prices = np.asarray(prices, float)
        # C0 tie-break: among plans of the same replica cost, put each slice where its load costs least
        # (price x replicas it occupies), so short requests stay on the cheap pool even when a dearer pool
        # runs anyway (min_replicas, or needed for long requests) and has room. The load term is at most
        # the replica cost (C2), so TIE_BREAK bounds how much dearer in replicas a plan can be for it.
        load_cost = prices[p_idx] @ cp.multiply(self.coef, self.x)
        self.problem = cp.Problem(cp.Minimize(prices @ self.n + TIE_BREAK * load_cost), cons)

    def solve(self, coef_matrix: np.ndarray, lo, hi, time_limit_s: float | None, mip_rel_gap: float, extra: dict | None = None):
        """(status, n, x as a (B, P) matrix, gap); status 'optimal' | 'time_limit' | 'infeasible' | 'no_solution'."""
        import cvxpy as cp

        # output_flag off: HiGHS >= 1.16 prints its banner on the process's stdout even with CVXPY's
        # verbose=False, which corrupts `rayhet plan --json` (and any caller's stdout)
        opts = {"mip_rel_gap": mip_rel_gap, "output_flag": False, **(extra or {})}
        if time_limit_s is not None:
            opts["time_limit"] = float(max(time_limit_s, 1e-3))
        with self.lock:
            self.coef.value = coef_matrix[self.pairs]
            self.lo.value = np.asarray(lo, float)
            self.hi.value = np.asarray([_NO_MAX if h is None else h for h in hi], float)
            try:
                with warnings.catch_warnings():  # an early stop is reported in the Plan, not as a CVXPY warning
                    warnings.filterwarnings("ignore", message="Solution may be inaccurate")
                    self.problem.solve(solver=cp.HIGHS, **opts)
            except cp.error.SolverError as e:
                raise PlanningError(f"HiGHS failed: {e}") from e
            status = self.problem.status
            info = self.problem.solver_stats.extra_stats
            if status in (cp.INFEASIBLE, cp.INFEASIBLE_INACCURATE, "infeasible_or_unbounded"):
                return "infeasible", None, None, None
            if status == cp.USER_LIMIT and (self.n.value is None or not math.isfinite(getattr(info, "mip_gap", 0.0))):
                return "no_solution", None, None, None
            if status not in (cp.OPTIMAL, cp.OPTIMAL_INACCURATE, cp.USER_LIMIT) or self.n.value is None:
                raise PlanningError(f"HiGHS returned status {status!r}")
            n = np.rint(self.n.value).astype(int)
            x = np.zeros(coef_matrix.shape)
            x[self.pairs] = np.asarray(self.x.value, float)
            gap = float(getattr(info, "mip_gap", 0.0)) if status == cp.USER_LIMIT else 0.0
            return ("time_limit" if status == cp.USER_LIMIT else "optimal"), n, x, gap


_MODELS: OrderedDict[tuple, _Model] = OrderedDict()
_MODELS_LOCK = threading.Lock()


TIE_BREAK = 1e-4  # weight of the load-cost tie-break in the objective (see _Model), relative to replica cost
_NO_MAX = 1e6  # stands for "no max_replicas" in the bound parameter


_BANNER_DONE = False


def _swallow_highs_banner() -> None:
    """Construct the process's first highspy.Highs() with fd 1 pointed at /dev/null.

    HiGHS >= 1.16 prints a licence banner on the C stdout when the first Highs object of a process is
    made, before any option (output_flag, log_to_console) can be set; CVXPY makes that object inside
    solve(). Unguarded, it lands on the stdout of `rayhet plan --json` (or a user's script) before its data.
    Called under _MODELS_LOCK, once per process."""
    global _BANNER_DONE
    if _BANNER_DONE:
        return
    _BANNER_DONE = True
    try:
        import highspy
    except ImportError:  # CVXPY will say that HiGHS is missing
        return
    sys.stdout.flush()
    saved, devnull = os.dup(1), os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 1)
        highspy.Highs()
    finally:
        os.dup2(saved, 1)
        os.close(saved)
        os.close(devnull)


def _model(allowed, prices, slices, kind) -> _Model:
    key = (allowed.shape, allowed.tobytes(), tuple(prices), slices, kind)
    with _MODELS_LOCK:
        if key in _MODELS:
            _MODELS.move_to_end(key)
            return _MODELS[key]
    with _MODELS_LOCK:
        _swallow_highs_banner()
    model = _Model(allowed, prices, slices, kind)
    with _MODELS_LOCK:
        _MODELS[key] = model
        while len(_MODELS) > 32:
            _MODELS.popitem(last=False)
    return model


def _round_slices(xc: np.ndarray, coef: np.ndarray, n: np.ndarray, allowed: np.ndarray, slices: int) -> np.ndarray | None:
    """Whole slice counts close to the continuous split `xc` that fit in replicas `n`, or None."""
    x = np.floor(xc + 1e-7)
    x[~allowed] = 0
    rem = np.maximum(np.rint(slices - x.sum(axis=1)), 0).astype(int)
    rem[~allowed.any(axis=1)] = 0
    slack = n - (coef * x).sum(axis=0)
    frac = xc - x
    for b in np.argsort(-coef.max(axis=1, where=allowed, initial=0)):  # heaviest slices first
        for _ in range(rem[b]):
            fits = allowed[b] & (slack >= coef[b] - 1e-9)
            if not fits.any():
                return None
            j = int(np.argmax(np.where(fits, frac[b] * 1e6 + slack, -np.inf)))
            x[b, j] += 1
            frac[b, j] = 0.0
            slack[j] -= coef[b, j]
    return x


def _optimise(allowed, prices, mins, maxs, coef, slices, form, relax_first, deadline, gap_tol, extra):
    """(n, x, status, gap, how). Relaxation first: its optimum is a lower bound, so whole slices that fit in
    the same replicas prove optimality; try a greedy rounding, then a fixed-replicas feasibility MILP, and
    only then the full integer model."""

    def left(share: float = 1.0):
        return None if deadline is None else max(deadline - time.perf_counter(), 0.0) * share

    def run(kind, lo, hi, share=1.0):
        return _model(allowed, prices, slices, kind).solve(coef, lo, hi, left(share), gap_tol, extra)

    if form == "aggregated" and relax_first:
        status, n, xc, gap = run("relaxed", mins, maxs)
        if n is None:
            return None, None, status, None, ""
        x = _round_slices(xc, coef, n, allowed, slices)
        if x is not None:
            return n, x, status, gap, "relaxation bound met by rounding"
        # same replicas, whole slices: usually a quick feasibility problem; bounded so that a hard one leaves
        # time for the full model
        st2, n2, x2, _ = run("integer", n, n, share=0.25)
        if n2 is not None:
            return n2, np.rint(x2), status, gap, "relaxation bound met with a fixed-replica MILP"
    kind = "binary" if form == "binary" else "integer"
    status, n, x, gap = run(kind, mins, maxs)
    return n, (None if x is None else np.rint(x)), status, gap, ""


def _describe(buckets, f, input_edges, output_edges) -> str:
    def span(edges, k):
        return f"({edges[k - 1] if k else 0}, {edges[k]}]"

    return "; ".join(
        f"({i}, {j}): input {span(input_edges, i)}, output {span(output_edges, j)} tokens, {100 * f[i, j]:.3g}% of requests"
        for i, j in buckets
    )


def _solve_on_grid(pools, grid, f, rate, *, slices, headroom, drop_unservable, time_limit_s, form, relax_first, mip_rel_gap,
                   highs_options: dict | None = None) -> Plan:
    t0 = time.perf_counter()
    input_edges, output_edges = grid
    names = [p.name for p in pools]
    mins = [p.min_replicas for p in pools]
    maxs = [p.max_replicas for p in pools]
    prices = [p.price for p in pools]
    cap = np.stack([capacity_on_grid(p.profile, input_edges, output_edges) for p in pools], axis=-1)
    allowed = ~np.isnan(cap) & np.array([m != 0 for m in maxs])[None, None, :]
    f = np.array(f, dtype=float)
    unservable = [tuple(map(int, b)) for b in np.argwhere((f > 0) & ~allowed.any(axis=-1))]
    message = ""
    if unservable:
        text = _describe(unservable, f, input_edges, output_edges)
        if not drop_unservable:
            raise PlanningError(f"no pool can serve {len(unservable)} bucket(s) that carry load: {text}. "
                                "Pass drop_unservable=True (rayhet plan --drop-unservable) to plan the rest.")
        log.warning("dropping %d bucket(s) no pool can serve: %s", len(unservable), text)
        message = f"dropped {100 * sum(f[b] for b in unservable):.3g}% of requests that no pool can serve"
        for b in unservable:
            f[b] = 0.0
    eff_rate = rate * (1.0 + headroom)
    shape = allowed.shape[:2]
    flat_allowed = allowed.reshape(-1, len(pools))
    if eff_rate == 0 or f.sum() == 0:
        n, x, status, gap = np.asarray(mins, int), np.zeros(flat_allowed.shape), "optimal", None
        coef = np.zeros(flat_allowed.shape)
    else:
        with np.errstate(invalid="ignore", divide="ignore"):
            coef = np.where(flat_allowed, eff_rate * f.reshape(-1, 1) / (slices * cap.reshape(-1, len(pools))), 0.0)
        deadline = None if time_limit_s is None else time.perf_counter() + time_limit_s
        n, x, status, gap, how = _optimise(flat_allowed, prices, mins, maxs, coef, slices, form, relax_first,
                                           deadline, mip_rel_gap, highs_options)
        if n is None:
            if status == "infeasible" and any(m is not None for m in maxs):
                raise CapacityExceeded(_infeasible_hint(names, maxs, eff_rate))
            raise PlanningError(_infeasible_hint(names, maxs, eff_rate) if status == "infeasible" else
                                f"the solver's time limit ({time_limit_s} s) passed before any plan was found")
        message = "; ".join(filter(None, [message, how]))
    load = (coef * x).sum(axis=0)
    routing: dict[tuple[int, int], dict[str, float]] = {}
    active = n > 0
    for b in range(flat_allowed.shape[0]):
        ij = (b // shape[1], b % shape[1])
        # planned load: the solution's slices (a pool without replicas only gets slices whose load is below
        # the solver's tolerance, so those are left out)
        if eff_rate > 0 and f.reshape(-1)[b] > 0 and (x[b] * active).sum() > 0.5:
            on = np.flatnonzero((x[b] > 0.5) & active)
            routing[ij] = {names[j]: float(x[b, j] / x[b, on].sum()) for j in on}
        elif (flat_allowed[b] & active).any():  # no planned load: spread by the capacity the plan runs
            w = np.where(flat_allowed[b] & active, np.nan_to_num(cap.reshape(-1, len(pools))[b]) * n, 0.0)
            routing[ij] = {names[j]: float(w[j] / w.sum()) for j in np.flatnonzero(w > 0)}
    return Plan(
        replicas={names[j]: int(n[j]) for j in range(len(pools))},
        routing=routing,
        input_edges=list(input_edges),
        output_edges=list(output_edges),
        cost_per_hour=float(np.dot(prices, n)),
        rate=float(eff_rate),
        utilisation={names[j]: float(load[j] / n[j]) if n[j] else 0.0 for j in range(len(pools))},
        status=status,
        gap=gap if status == "time_limit" else None,
        solve_time_s=time.perf_counter() - t0,
        dropped_buckets=unservable if drop_unservable else [],
        message=message,
    )


def _infeasible_hint(names, maxs, rate) -> str:
    capped = [f"{n}<={m}" for n, m in zip(names, maxs) if m is not None]
    return f"no plan serves {rate:g} req/s" + (f" within max_replicas ({', '.join(capped)})" if capped else "")


def _check(pools: Sequence[PoolOption], rate: float, slices: int, headroom: float, form: str) -> None:
    if not pools:
        raise PlanningError("no pools given")
    if len({p.name for p in pools}) != len(pools):
        raise PlanningError(f"pool names must be unique: {[p.name for p in pools]}")
    models = {p.profile.model for p in pools}
    if len(models) > 1:
        raise PlanningError(f"profiles are for different models: {sorted(models)}")
    for p in pools:
        if p.min_replicas < 0 or (p.max_replicas is not None and p.max_replicas < p.min_replicas):
            raise PlanningError(f"pool {p.name}: need 0 <= min_replicas <= max_replicas, got {p.min_replicas}, {p.max_replicas}")
        if p.price < 0 or not math.isfinite(p.price):
            raise PlanningError(f"pool {p.name}: price must be finite and >= 0, got {p.price}")
    if not math.isfinite(rate) or rate < 0:
        raise PlanningError(f"rate must be a finite number >= 0 req/s, got {rate}")
    if slices < 1:
        raise PlanningError(f"slices must be >= 1, got {slices}")
    if not math.isfinite(headroom) or headroom < 0:
        raise PlanningError(f"headroom must be >= 0, got {headroom}")
    if form not in ("aggregated", "binary"):
        raise PlanningError(f"form must be 'aggregated' or 'binary', got {form!r}")


def solve(
    pools: Sequence[PoolOption],
    distribution: Distribution,
    rate: float,
    *,
    slices: int = 8,
    headroom: float = 0.0,
    drop_unservable: bool = False,
    time_limit_s: float | None = 10.0,
    form: Form = "aggregated",
    relax_first: bool = True,
    mip_rel_gap: float = 1e-6,
) -> Plan:
    """The cheapest plan serving `rate` · (1 + headroom) req/s of `distribution` (on any grid, re-binned)."""
    _check(pools, rate, slices, headroom, form)
    grid = common_grid([p.profile for p in pools])
    f = rebin(distribution, *grid)
    return _solve_on_grid(pools, grid, f, rate, slices=slices, headroom=headroom, drop_unservable=drop_unservable,
                          time_limit_s=time_limit_s, form=form, relax_first=relax_first, mip_rel_gap=mip_rel_gap)


def baselines(pools: Sequence[PoolOption], distribution: Distribution, rate: float, **kwargs) -> dict[str, Plan]:
    """One single-pool plan per pool, on the same grid and load as the mix.

    Buckets that *no* pool can serve are dropped exactly as `solve` drops them (only with drop_unservable);
    a pool that cannot serve some bucket the mix serves gets a Plan with status 'infeasible' and infinite cost.
    """
    unknown = set(kwargs) - set(solve.__kwdefaults__)
    if unknown:
        raise TypeError(f"baselines() got unexpected keyword argument(s) {sorted(unknown)}")
    opts = {**solve.__kwdefaults__, **kwargs}  # the same defaults as solve(), so the two cannot drift apart
    _check(pools, rate, opts["slices"], opts["headroom"], opts["form"])
    grid = common_grid([p.profile for p in pools])
    f = rebin(distribution, *grid)
    anyone = np.zeros(f.shape, bool)
    for p in pools:
        anyone |= ~np.isnan(capacity_on_grid(p.profile, *grid)) & (p.max_replicas != 0)
    if opts["drop_unservable"]:
        f = np.where(anyone, f, 0.0)
    out = {}
    for p in pools:
        try:
            out[p.name] = _solve_on_grid([p], grid, f, rate, **{**opts, "drop_unservable": False})
        except PlanningError as e:
            own = ~np.isnan(capacity_on_grid(p.profile, *grid)) & (p.max_replicas != 0)
            missing = [tuple(map(int, b)) for b in np.argwhere((f > 0) & ~own)]
            why = (f"{p.name} alone cannot serve {100 * sum(f[b] for b in missing):.3g}% of requests "
                   f"({len(missing)} bucket(s) beyond its profile)") if missing else str(e)
            out[p.name] = Plan(replicas={p.name: 0}, routing={}, input_edges=grid[0], output_edges=grid[1],
                               cost_per_hour=math.inf, rate=rate * (1 + opts["headroom"]), status="infeasible",
                               dropped_buckets=missing, message=why)
    return out
