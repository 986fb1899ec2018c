"""Wiring: what the app's builder does to put a config's pools under the controller.

The builder (rayhet.serve.builder) asks `Wiring.for_config(config)`; with the controller on, each pool's
fixed replica count becomes a Serve `autoscaling_config` with rayhet's `PlanPolicy`, and the ingress gets the
controller's spec (`ControllerSpec`) to start or reconfigure the app's controller actor (rayhet.serve.controller).
"""

from __future__ import annotations

import time

from rayhet.control import PoolBounds
from rayhet.messages import ControllerSpec, SolverSettings


DEFAULT_MAX_REPLICAS = 64  # Serve needs a bound; a pool without max_replicas gets this one


class Wiring:
    """What the builder does to put a config's pools under the controller (the only Ray Serve options it sets).

    `wiring = Wiring.for_config(config)` is None when the controller is off or a pool has no profile (static
    routing). Otherwise `wiring.pool_options(pool, opts)` swaps the pool's fixed `num_replicas` for an
    `autoscaling_config` with `PlanPolicy`, and the ingress is `ControlledIngress` (rayhet.serve.reporting) bound with
    `**wiring.ingress_kwargs(ingress_name)`.
    """

    def __init__(self, config):
        self.config = config
        # the deployment's identity, in the controller's spec and in every pool's policy: the controller takes
        # reports only from the policies of the deployment it serves (rayhet.serve.autoscaling)
        self.created_at = time.time()
        self.bounds: dict[str, PoolBounds] = {}
        self.profiles: dict = {}

    @classmethod
    def for_config(cls, config) -> "Wiring | None":
        if not config.controller.enabled or not all(p.profile for p in config.pools):
            return None
        return cls(config)

    def pool_options(self, pool, opts: dict) -> dict:
        from rayhet.capacity import service_profile
        from rayhet.serve.autoscaling import policy_config

        opts = dict(opts)
        initial = opts.pop("num_replicas")
        hi = pool.max_replicas if pool.max_replicas is not None else max(DEFAULT_MAX_REPLICAS, initial)
        opts["autoscaling_config"] = {
            "min_replicas": pool.min_replicas, "max_replicas": hi, "initial_replicas": initial,
            # the controller does the delaying (scale_down_delay_s): Serve applies targets as they come
            "upscale_delay_s": 0, "downscale_delay_s": 0,
            "policy": policy_config(pool.name, poll_s=self.config.controller.policy_poll_s, build=self.created_at),
        }
        self.bounds[pool.name] = PoolBounds(pool.min_replicas, hi, int(opts.get("max_ongoing_requests", 1)),
                                            pool.startup_seconds)
        self.profiles[pool.name] = service_profile(pool.profile, self.config.slo, self.config.planner.held_out)
        return opts

    def ingress_kwargs(self, ingress: str) -> dict:
        # plain data, as every message: a pickled model would reach the replica unvalidated
        spec = spec_for(self.config, self.profiles, self.bounds, app="default", ingress=ingress,
                        created_at=self.created_at)
        return {"controller_spec": spec.model_dump()}


def spec_for(config, profiles: dict, bounds: dict[str, PoolBounds], *, app: str, ingress: str,
             created_at: float | None = None) -> ControllerSpec:
    """The controller's spec from a RayhetConfig, its loaded profiles and the pools' bounds as deployed;
    `created_at`: the deployment's identity (default: now)."""
    return ControllerSpec(
        created_at=time.time() if created_at is None else created_at,
        app=app,
        ingress=ingress,
        settings=config.controller,
        planner=SolverSettings(slices=config.planner.slices),
        bounds=bounds,
        profiles={p: prof.model_dump(mode="json") for p, prof in profiles.items()},
        prices={p.name: p.price_per_hour for p in config.pools if p.price_per_hour is not None},
    )
