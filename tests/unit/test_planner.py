"""Planner: optimality against brute force and the binary form, grids, bounds, headroom, errors, early stop."""

from __future__ import annotations

import itertools
import logging
import math
from pathlib import Path

import numpy as np
import pytest

from rayhet import planner
from rayhet.errors import PlanningError
from rayhet.planner import PoolOption, baselines, capacity_on_grid, common_grid, rebin, solve
from rayhet.profiles import load_profiles, parse_profile
from rayhet.workload import Distribution

SHIPPED = Path(__file__).resolve().parents[2] / "profiles" / "llama-2-7b"


def profile(pool, caps, in_edges, out_edges, price=1.0, model="m"):
    return parse_profile({
        "model": model, "pool": pool, "engine": "unknown", "engine_version": "unknown", "hardware": {"accelerator": pool.upper()},
        "price_per_hour": price, "slo": {"unknown": True}, "input_edges": in_edges, "output_edges": out_edges,
        "max_rate": [[None if (c is None or np.isnan(c)) else float(c) for c in row] for row in caps],
        "provenance": {"measured_by": "test", "measured_at": "2026-11-21", "command": "test"}}, pool)


def brute_force(caps, prices, mins, maxs, f, rate, k):
    """Cheapest cost over every way to give each loaded bucket's k slices to capable pools (None: infeasible)."""
    loaded = [b for b in range(len(f)) if f[b] > 0]
    choices = []
    for b in loaded:
        ok = [j for j in range(len(prices)) if not np.isnan(caps[b, j])]
        choices.append([(ok, c) for c in itertools.product(range(k + 1), repeat=len(ok)) if sum(c) == k])
    best = None
    for combo in itertools.product(*choices):
        load = np.zeros(len(prices))
        for b, (ok, c) in zip(loaded, combo):
            for j, cnt in zip(ok, c):
                load[j] += cnt * rate * f[b] / (k * caps[b, j])
        n = [max(mins[j], math.ceil(load[j] - 1e-9)) for j in range(len(prices))]
        if any(m is not None and n[j] > m for j, m in enumerate(maxs)):
            continue
        cost = float(np.dot(prices, n))
        best = cost if best is None else min(best, cost)
    return best


def random_instance(seed):
    rng = np.random.default_rng(seed)
    n_pools, k = int(rng.integers(2, 4)), int(rng.integers(1, 4))
    caps = rng.uniform(0.3, 4.0, size=(2, 2, n_pools))
    caps[rng.random(caps.shape) < 0.25] = np.nan
    caps[..., 0][np.isnan(caps).all(axis=-1)] = 1.0  # every bucket has a capable pool
    f = rng.dirichlet(np.ones(4)) * (rng.random(4) < 0.85)
    f = f / f.sum() if f.sum() else np.array([1.0, 0, 0, 0])
    prices = np.round(rng.uniform(0.5, 5.0, n_pools), 2)
    mins = [int(rng.integers(0, 2)) if rng.random() < 0.3 else 0 for _ in range(n_pools)]
    maxs = [int(rng.integers(mins[j] + 1, mins[j] + 5)) if rng.random() < 0.3 else None for j in range(n_pools)]
    pools = [PoolOption(f"p{j}", profile(f"p{j}", caps[..., j], [10, 20], [5, 50], prices[j]), None, mins[j], maxs[j])
             for j in range(n_pools)]
    return pools, caps.reshape(4, n_pools), f, prices, mins, maxs, float(rng.uniform(0.5, 12.0)), k


@pytest.mark.parametrize("seed", range(25))
def test_forms_and_brute_force_agree(seed):
    pools, caps, f, prices, mins, maxs, rate, k = random_instance(seed)
    dist = Distribution([10, 20], [5, 50], f.reshape(2, 2))
    expected = brute_force(caps, prices, mins, maxs, f, rate, k)
    costs = []
    for kw in (dict(form="aggregated"), dict(form="aggregated", relax_first=False), dict(form="binary")):
        if expected is None:
            with pytest.raises(PlanningError, match="no plan serves"):
                solve(pools, dist, rate, slices=k, **kw)
            continue
        plan = solve(pools, dist, rate, slices=k, **kw)
        costs.append(plan.cost_per_hour)
        _check_plan(plan, pools, f.reshape(2, 2), rate, k)
    if expected is not None:
        assert costs == pytest.approx([expected] * 3, abs=1e-9)


def _check_plan(plan, pools, f, rate, k):
    """A plan is consistent: bounds kept, shares are whole slices summing to 1, replicas carry the load."""
    load = {p.name: 0.0 for p in pools}
    for p in pools:
        n = plan.replicas[p.name]
        assert n >= p.min_replicas and (p.max_replicas is None or n <= p.max_replicas)
    cap = {p.name: capacity_on_grid(p.profile, plan.input_edges, plan.output_edges) for p in pools}
    for (i, j), shares in plan.routing.items():
        assert sum(shares.values()) == pytest.approx(1.0)
        for name, s in shares.items():
            assert plan.replicas[name] > 0 and not np.isnan(cap[name][i, j])
            if f[i, j] > 0:
                assert s * k == pytest.approx(round(s * k))  # a whole number of the K slices
                load[name] += s * rate * f[i, j] / cap[name][i, j]
    for (i, j) in zip(*np.nonzero(f)):
        assert (int(i), int(j)) in plan.routing
    for name, l in load.items():
        assert l <= plan.replicas[name] + 1e-6
        assert plan.utilisation[name] == pytest.approx(l / plan.replicas[name] if plan.replicas[name] else 0.0, abs=1e-9)
    assert plan.cost_per_hour == pytest.approx(sum(p.price * plan.replicas[p.name] for p in pools))


def test_common_grid_and_capacity_mapping():
    profs = {p.pool: p for p in load_profiles(SHIPPED)}
    grid = common_grid(list(profs.values()))
    assert grid == (profs["h100"].input_edges, profs["h100"].output_edges)
    cap = capacity_on_grid(profs["l4"], *grid)
    assert cap.shape == (10, 6) and np.isnan(cap[6:]).all() and cap[5, 5] == 0.02
    # different grids: the coarse profile's bucket holding the fine bucket's upper edge
    a = profile("a", [[4.0], [2.0]], [100, 200], [50])
    b = profile("b", [[9.0, 3.0]], [150], [10, 50])
    assert common_grid([a, b]) == ([100, 150, 200], [10, 50])
    np.testing.assert_array_equal(capacity_on_grid(a, [100, 150, 200], [10, 50]), [[4, 4], [2, 2], [2, 2]])
    np.testing.assert_array_equal(capacity_on_grid(b, [100, 150, 200], [10, 50]), [[9, 3], [9, 3], [np.nan, np.nan]])


def test_rebin_moves_mass_by_upper_edge():
    d = Distribution([100, 200], [10, 50], np.array([[0.1, 0.2], [0.3, 0.4]]))
    np.testing.assert_allclose(rebin(d, [100, 200], [50]), [[0.3], [0.7]])
    np.testing.assert_allclose(rebin(d, [150], [10, 50]), [[0.4, 0.6]])  # above the last edge: last bucket


def test_mixed_grids_end_to_end():
    a = profile("a", [[4.0], [2.0]], [100, 200], [50], price=1.0)
    b = profile("b", [[9.0, 3.0]], [150], [10, 50], price=1.5)
    dist = Distribution([100, 150, 200], [10, 50], np.array([[0.3, 0.2], [0.2, 0.1], [0.1, 0.1]]))
    plan = solve([PoolOption("a", a), PoolOption("b", b)], dist, 6.0)
    assert plan.input_edges == [100, 150, 200]
    assert set(plan.routing[(2, 0)]) == {"a"}  # only a serves inputs above 150
    _check_plan(plan, [PoolOption("a", a), PoolOption("b", b)], dist.fractions, 6.0, 8)


def _two_pools():
    cheap = profile("cheap", [[2.0, 1.0], [1.0, None]], [10, 20], [5, 50], price=1.0)
    big = profile("big", [[10.0, 5.0], [5.0, 2.0]], [10, 20], [5, 50], price=4.0)
    return cheap, big


def test_unservable_buckets_error_or_drop(caplog):
    cheap, _ = _two_pools()
    dist = Distribution([10, 20], [5, 50], np.array([[0.5, 0.2], [0.2, 0.1]]))
    with pytest.raises(PlanningError) as e:
        solve([PoolOption("cheap", cheap)], dist, 4.0)
    assert "(1, 1): input (10, 20], output (5, 50] tokens, 10% of requests" in str(e.value)
    with caplog.at_level(logging.WARNING, logger="rayhet.planner"):
        plan = solve([PoolOption("cheap", cheap)], dist, 4.0, drop_unservable=True)
    assert plan.dropped_buckets == [(1, 1)] and (1, 1) not in plan.routing
    assert "dropping 1 bucket" in caplog.text
    assert plan.replicas["cheap"] == math.ceil(4 * (0.5 / 2 + 0.2 / 1 + 0.2 / 1) - 1e-9)


def test_min_max_replicas_and_infeasible_bounds():
    cheap, big = _two_pools()
    dist = Distribution([10, 20], [5, 50], np.array([[0.7, 0.1], [0.1, 0.1]]))
    free = solve([PoolOption("cheap", cheap), PoolOption("big", big)], dist, 8.0)
    capped = solve([PoolOption("cheap", cheap, max_replicas=1), PoolOption("big", big, min_replicas=3)], dist, 8.0)
    assert capped.replicas["cheap"] <= 1 and capped.replicas["big"] >= 3
    assert capped.cost_per_hour >= free.cost_per_hour
    with pytest.raises(PlanningError, match=r"no plan serves 80 req/s within max_replicas \(cheap<=1, big<=2\)"):
        solve([PoolOption("cheap", cheap, max_replicas=1), PoolOption("big", big, max_replicas=2)], dist, 80.0)
    off = solve([PoolOption("cheap", cheap, max_replicas=0), PoolOption("big", big)], dist, 8.0)
    assert off.replicas["cheap"] == 0 and all(set(s) == {"big"} for s in off.routing.values())


def test_zero_rate_gives_min_replicas_and_routes_on_them():
    cheap, big = _two_pools()
    dist = Distribution([10, 20], [5, 50], np.array([[0.7, 0.1], [0.1, 0.1]]))
    plan = solve([PoolOption("cheap", cheap, min_replicas=1), PoolOption("big", big)], dist, 0.0)
    assert plan.replicas == {"cheap": 1, "big": 0} and plan.cost_per_hour == 1.0
    assert plan.routing[(0, 0)] == {"cheap": 1.0} and (1, 1) not in plan.routing  # cheap cannot serve (1, 1)


def test_headroom_plans_for_the_larger_rate():
    profs = load_profiles(SHIPPED)
    pools = [PoolOption(p.pool, p) for p in profs]
    dist = Distribution(*common_grid(profs), np.full((10, 6), 1 / 60))
    with_h = solve(pools, dist, 10.0, headroom=0.5, drop_unservable=True)
    assert with_h.rate == 15.0
    assert with_h.cost_per_hour == pytest.approx(solve(pools, dist, 15.0, drop_unservable=True).cost_per_hour)
    assert with_h.cost_per_hour >= solve(pools, dist, 10.0, drop_unservable=True).cost_per_hour


@pytest.mark.parametrize("kw, words", [
    (dict(rate=-1.0), "rate must be"), (dict(rate=float("nan")), "rate must be"), (dict(slices=0), "slices"),
    (dict(headroom=-0.1), "headroom"), (dict(form="dense"), "form"),
])
def test_argument_errors(kw, words):
    cheap, _ = _two_pools()
    dist = Distribution([10, 20], [5, 50], np.array([[1.0, 0], [0, 0]]))
    args = dict(rate=1.0)
    args.update(kw)
    with pytest.raises(PlanningError, match=words):
        solve([PoolOption("cheap", cheap)], dist, args.pop("rate"), **args)


def test_pools_must_share_a_model_and_unique_names():
    cheap, big = _two_pools()
    other = profile("o", [[1.0, 1.0], [1.0, 1.0]], [10, 20], [5, 50], model="other")
    dist = Distribution([10, 20], [5, 50], np.array([[1.0, 0], [0, 0]]))
    with pytest.raises(PlanningError, match="different models"):
        solve([PoolOption("cheap", cheap), PoolOption("o", other)], dist, 1.0)
    with pytest.raises(PlanningError, match="unique"):
        solve([PoolOption("x", cheap), PoolOption("x", big)], dist, 1.0)


def test_baselines_keep_the_mix_grid_and_flag_pools_that_cannot_serve():
    cheap, big = _two_pools()
    pools = [PoolOption("cheap", cheap), PoolOption("big", big)]
    dist = Distribution([10, 20], [5, 50], np.array([[0.6, 0.2], [0.1, 0.1]]))
    mix = solve(pools, dist, 6.0)
    base = baselines(pools, dist, 6.0)
    assert base["cheap"].status == "infeasible" and math.isinf(base["cheap"].cost_per_hour)
    assert base["cheap"].dropped_buckets == [(1, 1)] and "10% of requests" in base["cheap"].message
    assert base["big"].replicas == {"big": 2} and mix.cost_per_hour <= base["big"].cost_per_hour


def test_early_stop_returns_the_incumbent_with_its_gap():
    """A node limit stands in for the clock so the early-stop path is deterministic (HiGHS reports both as a limit)."""
    pools, dist = _hard_instance()
    grid = common_grid([p.profile for p in pools])
    f = rebin(dist, *grid)
    kw = dict(slices=8, headroom=0.0, drop_unservable=False, time_limit_s=None, form="aggregated", relax_first=False,
              mip_rel_gap=1e-9)
    best = planner._solve_on_grid(pools, grid, f, 20.0, **kw)
    early = planner._solve_on_grid(pools, grid, f, 20.0, **kw, highs_options={"mip_max_nodes": 1})
    assert best.status == "optimal" and early.status == "time_limit"
    assert early.gap is not None and early.gap > 0 and early.cost_per_hour >= best.cost_per_hour - 1e-9
    _check_plan(early, pools, f, 20.0, 8)


def test_time_limit_is_passed_to_the_solver():
    pools, dist = _hard_instance()
    try:
        plan = solve(pools, dist, 20.0, form="binary", time_limit_s=0.01)
    except PlanningError as e:  # stopped before any incumbent: a clear error, not a wrong plan
        assert "time limit (0.01 s)" in str(e)
    else:
        assert plan.status in ("time_limit", "optimal")
        assert (plan.gap is not None) == (plan.status == "time_limit")


def _hard_instance(n_pools=8, seed=3):
    rng = np.random.default_rng(seed)
    edges_in, edges_out = [50, 100, 200, 400, 800, 1600], [50, 100, 200, 400, 800]
    pools = []
    for j in range(n_pools):
        speed = rng.uniform(1, 6)
        caps = [[speed * 900 / (i + 4 * o) * rng.uniform(0.7, 1.3) for o in edges_out] for i in edges_in]
        pools.append(PoolOption(f"g{j}", profile(f"g{j}", caps, edges_in, edges_out, round(speed * rng.uniform(0.7, 1.3), 3))))
    return pools, Distribution(edges_in, edges_out, rng.dirichlet(np.ones(30)).reshape(6, 5))


def test_relaxation_first_paths_agree_with_the_integer_model():
    """Rounding, the fixed-replica MILP and the full-model fallback all return the integer optimum.

    This instance reaches all three paths with highspy 1.15 (no time limit, so the path is deterministic).
    """
    pools, dist = _hard_instance()
    paths = set()
    for rate in (5.0, 20.0, 40.0):
        fast = solve(pools, dist, rate, time_limit_s=None)
        direct = solve(pools, dist, rate, time_limit_s=None, relax_first=False)
        assert fast.cost_per_hour == pytest.approx(direct.cost_per_hour, abs=1e-9)
        _check_plan(fast, pools, dist.fractions, rate, 8)
        paths.add(fast.message or "full model")
    assert paths == {"relaxation bound met by rounding", "relaxation bound met with a fixed-replica MILP", "full model"}
