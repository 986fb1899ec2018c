"""Policies: the ways of running a trace that `rayhet simulate --compare` puts side by side.

- **rayhet online**: the config as it would be deployed (start-up plan, controller, spill-over).
- **rayhet online, no CPU pools**: the same without the llama.cpp pools (what CPU pools add).
- **static Mélange plan, busiest window**: the planner's cheapest mix for the busiest window's rate and
  sizes (with the config's headroom), held all day; no controller.
- **best single pool, static**: the cheapest single pool type that serves the busiest window alone.
- **best single pool, Ray Serve autoscaling**: that pool type under Ray Serve's default policy
  (`replica_queue_length_autoscaling_policy` with the default AutoscalingConfig: 2 ongoing requests per
  replica, 30 s up-scale and 600 s down-scale delays), from 1 replica up to the pool's max_replicas.
- **offline bound**: each window's optimal plan for that window's own traffic, as if replicas started
  instantly and every plan were exact: a lower bound on $ (its SLO is not simulated).

Each simulated policy runs the same trace through `rayhet.sim.fleet.Fleet` with the production
dispatcher; only the plan, the pools and whether the controller runs differ.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from rayhet.sim.trace import Trace


@dataclass
class Policy:
    name: str
    make: object  # () -> Fleet
    note: str = ""


def busiest_window(trace: Trace, window_s: float) -> tuple[float, Trace]:
    """(rate, requests) of the window of `window_s` with the most arrivals."""
    rates = trace.rate_per_window(window_s)
    w = int(np.argmax(rates))
    return float(rates[w]), trace.window(w * window_s, (w + 1) * window_s)


def plan_for_sizes(config, options, sizes: np.ndarray, rate: float, headroom: float):
    """The plan the config's planner makes for `rate` req/s of these request sizes over `options` (buckets no
    option can serve are dropped): the static policies' plan, and a benchmark's single-pool baseline."""
    from rayhet.planner import common_grid, solve
    from rayhet.workload import bucketize

    grid = common_grid([o.profile for o in options])
    return solve(options, bucketize(sizes, *grid), rate, slices=config.planner.slices, headroom=headroom,
                 drop_unservable=True, time_limit_s=config.planner.time_limit_s)


def _subset(config, names: set[str]):
    return config.model_copy(update={"pools": [p for p in config.pools if p.name in names]})


def static_fleet(config, plan, names: set[str] | None = None, serve_autoscaling=None):
    from rayhet.sim.build import planner_options, pool_models
    from rayhet.sim.fleet import Fleet

    cfg = _subset(config, names) if names else config
    return Fleet(cfg, pool_models(cfg, plan), planner_options(cfg), plan, controlled=False,
                 serve_autoscaling=serve_autoscaling)


def serve_autoscaled_fleet(config, plan, pool: str):
    """One pool type under Ray Serve's default autoscaling policy and config, starting from one replica."""
    from dataclasses import replace

    from ray.serve.config import AutoscalingConfig

    p = next(p for p in config.pools if p.name == pool)
    hi = p.max_replicas if p.max_replicas is not None else 64
    cfg = AutoscalingConfig(min_replicas=max(1, p.min_replicas), max_replicas=hi)
    start = replace(plan, replicas={pool: cfg.min_replicas})
    return static_fleet(config, start, {pool}, serve_autoscaling={pool: cfg})


def policies(config, trace: Trace, *, window_s: float = 60.0) -> tuple[list[Policy], dict]:
    """The simulated policies of --compare, and the offline bound (computed here, not simulated)."""
    from rayhet.planner import baselines
    from rayhet.sim.build import fleet_for, planner_options
    from rayhet.workload import bucketize

    from rayhet.capacity import derive_ahead

    derive_ahead([p.profile for p in config.pools if p.profile], config.slo)
    out = [Policy("rayhet online", lambda: fleet_for(config))]
    cpu = {p.name for p in config.pools if p.engine == "llama_cpp"}
    if cpu and len(cpu) < len(config.pools):
        gpu_cfg = _subset(config, {p.name for p in config.pools} - cpu)
        out.append(Policy("rayhet online, no CPU pools", lambda: fleet_for(gpu_cfg)))
    options = planner_options(config)
    rate, busy = busiest_window(trace, window_s)
    if len(busy):
        try:
            plan = plan_for_sizes(config, options, busy.sizes(), rate, config.planner.headroom)
            out.append(Policy(f"static Mélange plan, busiest window ({rate:.2f} req/s)",
                              lambda plan=plan: static_fleet(config, plan)))
        except Exception as e:  # noqa: BLE001 - a policy that cannot be planned is reported, not fatal
            out.append(Policy("static Mélange plan, busiest window", None, f"no plan: {e}"))
        from rayhet.planner import common_grid

        grid = common_grid([o.profile for o in options])
        singles = baselines(options, bucketize(busy.sizes(), *grid), rate, slices=config.planner.slices,
                            headroom=config.planner.headroom, drop_unservable=True)
        feasible = {n: p for n, p in singles.items() if math.isfinite(p.cost_per_hour)}
        if feasible:
            best = min(feasible, key=lambda n: feasible[n].cost_per_hour)
            out.append(Policy(f"best single pool, static ({best} x{feasible[best].replicas[best]})",
                              lambda best=best: static_fleet(config, feasible[best], {best})))
            out.append(Policy(f"best single pool, Ray Serve autoscaling ({best})",
                              lambda best=best: serve_autoscaled_fleet(config, feasible[best], best)))
        else:
            out.append(Policy("best single pool, static", None,
                              "no single pool serves the busiest window: " +
                              "; ".join(p.message for p in singles.values() if p.message)))
    bound = offline_bound(config, options, trace, window_s)
    return out, bound


def offline_bound(config, options, trace: Trace, window_s: float) -> dict:
    """Sum over windows of the optimal plan's $ for that window's own rate and sizes (no headroom)."""
    cost, unplanned = 0.0, 0
    n = max(1, math.ceil(trace.duration_s / window_s - 1e-9))
    for w in range(n):
        part = trace.window(w * window_s, (w + 1) * window_s)
        span = min(window_s, max(trace.duration_s - w * window_s, 1e-9))
        if not len(part):
            mins = sum(o.min_replicas * (o.price_per_hour or o.profile.price_per_hour) for o in options)
            cost += mins * span / 3600.0
            continue
        try:
            plan = plan_for_sizes(config, options, part.sizes(), len(part) / span, 0.0)
            cost += plan.cost_per_hour * span / 3600.0
        except Exception:  # noqa: BLE001
            unplanned += 1
    return {"policy": "offline bound (each window's optimal plan, instant start-up)", "cost_usd": cost,
            "cost_per_hour": cost / max(trace.duration_s / 3600.0, 1e-9), "windows_without_plan": unplanned}
