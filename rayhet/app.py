"""App: `serve run rayhet.app:build [config=rayhet.yaml | gguf=model.gguf]`, Ray Serve's builder convention.

`build(args)` takes one pydantic-typed argument, so the same entry point serves `serve run` (key=value
args), a Serve config file (`import_path: rayhet.app:build` with an `args:` block holding `config:` as a
path or inline, or the config's fields directly) and Python (`serve.run(build({...}))`).
With no arguments it serves the embedded default (`rayhet/data/default/app.yaml`): two CPU pools of a tiny
random-weight GGUF generated on first use, with shipped profiles and the controller. The start-up plan is solved here from the pools' profiles and the configured expected traffic.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from rayhet.config import DEFAULT_APP, RayhetConfig, embedded_config, load_config, parse_config
from rayhet.errors import ConfigError, PlanningError
from rayhet.plan import Plan
from rayhet.routing import static_plan

log = logging.getLogger("rayhet")


class AppArgs(BaseModel):
    """The arguments of `rayhet.app:build`."""

    model_config = ConfigDict(extra="forbid")

    config: str | dict[str, Any] | None = Field(
        None, description="A rayhet config: the path of a YAML/JSON file, or the config itself (a mapping)."
    )
    gguf: str | None = Field(
        None, description="Without `config`: serve this GGUF file with the embedded one-pool CPU default."
    )
    threads: int | None = Field(
        None, ge=1, description="With `gguf`: llama.cpp threads (and CPUs) of its one pool (default 1).")

    @model_validator(mode="before")
    @classmethod
    def _inline(cls, data: Any) -> Any:
        """A Serve config may give the rayhet config's fields directly as `args`."""
        if isinstance(data, dict) and "pools" in data:
            return {"config": data}
        return data

    @model_validator(mode="after")
    def _one_source(self) -> "AppArgs":
        if self.config is not None and self.gguf is not None:
            raise ValueError("give config or gguf, not both")
        if self.threads is not None and self.gguf is None:
            raise ValueError("threads goes with gguf (a config sets each pool's n_threads in engine_settings)")
        return self


def resolve_config(args: AppArgs) -> RayhetConfig:
    """The RayhetConfig that `args` describe (logging when the embedded default is used)."""
    if isinstance(args.config, dict):
        return parse_config(args.config, "args.config")
    if isinstance(args.config, str):
        return load_config(args.config)
    if args.gguf is not None:
        log.info("rayhet: serving %s from one llama.cpp CPU pool with %d thread(s) (static routing, no controller); "
                 "give a config for pools by size", args.gguf, args.threads or 1)
        return embedded_config(args.gguf, args.threads or 1)
    from rayhet.models import default_model_path

    path = default_model_path()  # made now (well under a second) so the log can name it; cached after
    log.warning(
        "rayhet: no config given, serving the DEFAULT: two CPU pools (small, large) of a tiny random-weight model "
        "(gibberish output, generated at %s) routed by request size under the controller (%s); "
        "serve a real model with `serve run rayhet.app:build gguf=/path/to/model.gguf` or `config=rayhet.yaml`.",
        path, DEFAULT_APP,
    )
    return load_config(DEFAULT_APP)


def startup_plan(config: RayhetConfig) -> Plan:
    """The plan the app starts with.

    With profiles: the planner's cheapest plan for `planner.expected_rate` and the configured size
    distribution (workload file, inline fractions, or uniform over the buckets some pool can serve).
    Without profiles: a static plan splitting every bucket across the pools by their initial replicas.
    """
    if not config.pools[0].profile:
        replicas = {p.name: p.initial_replicas if p.initial_replicas is not None else max(1, p.min_replicas)
                    for p in config.pools}
        ctx = max(int(p.engine_settings.get("n_ctx") or p.engine_settings.get("max_model_len")
                      or p.engine_settings.get("max_context") or 2048) for p in config.pools)
        return static_plan(replicas, ctx)

    from rayhet.planner import PoolOption, capacity_on_grid, common_grid, solve
    from rayhet.capacity import service_profile
    from rayhet.workload import Distribution, bucketize, read_workload

    pc = config.planner
    # each profile's capacity under the service's SLO: re-derived from its engine model where it differs
    options = [PoolOption(p.name, service_profile(p.profile, config.slo, pc.held_out), p.price_per_hour, p.min_replicas,
                          p.max_replicas)
               for p in config.pools]
    grid = common_grid([o.profile for o in options])
    if pc.workload:
        dist = bucketize(read_workload(pc.workload).samples, *grid)
    elif pc.distribution is not None:
        f = np.asarray(pc.distribution, dtype=float)
        if f.shape != (len(grid[0]), len(grid[1])):
            raise ConfigError(f"planner.distribution: shape {f.shape}, but the profiles' common grid is "
                              f"{len(grid[0])}x{len(grid[1])} (input edges {grid[0]}, output edges {grid[1]})")
        dist = Distribution(grid[0], grid[1], f / f.sum())
    else:
        servable = np.zeros((len(grid[0]), len(grid[1])))
        for o in options:
            servable = np.maximum(servable, ~np.isnan(capacity_on_grid(o.profile, *grid)))
        dist = Distribution(grid[0], grid[1], servable / servable.sum())
    try:
        plan = solve(options, dist, pc.expected_rate, slices=pc.slices, headroom=pc.headroom,
                     drop_unservable=True, time_limit_s=pc.time_limit_s)
    except PlanningError as e:
        raise ConfigError(f"planner: no start-up plan for expected_rate={pc.expected_rate}: {e}") from None
    log.info("rayhet: start-up plan %s at $%.2f/h for %.2f req/s (%s, %.0f ms)", plan.replicas,
             plan.cost_per_hour, plan.rate, plan.status, plan.solve_time_s * 1000)
    warn_if_ingress_short(config, pc.expected_rate, "planner.expected_rate")
    return plan


def warn_if_ingress_short(config: RayhetConfig, rate: float, what: str) -> str | None:
    """Say (log and return) when `rate` needs more ingress replicas than configured: past its capacity an
    ingress replica makes every request wait (benchmarks/results/stack-h200.md)."""
    from rayhet.sim.stack import ingress_replicas_needed

    srv = config.server
    need = ingress_replicas_needed(rate, srv.ingress_capacity_rps)
    if need <= srv.ingress_replicas:
        return None
    msg = (f"{what} {rate:.1f} req/s needs {need} ingress replicas at server.ingress_capacity_rps="
           f"{srv.ingress_capacity_rps:g} (each kept below 80 % busy); server.ingress_replicas is "
           f"{srv.ingress_replicas}: requests will queue in the ingress before any pool sees them")
    log.warning("rayhet: %s", msg)
    return msg


def build(args: AppArgs) -> Any:
    """Ray Serve application builder: `serve run rayhet.app:build [config=...|gguf=...]`."""
    if not isinstance(args, AppArgs):  # Python callers may pass a dict, a RayhetConfig or nothing
        if isinstance(args, RayhetConfig):
            args = AppArgs(config=args.model_dump(mode="json"))
        else:
            args = AppArgs.model_validate(args or {})
    config = resolve_config(args)
    from rayhet.serve.builder import build_app

    return build_app(config, startup_plan(config), source=str(args.config) if isinstance(args.config, str) else "args")
