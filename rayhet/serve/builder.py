"""Builder: the one place that turns rayhet's plain classes into Ray Serve deployments and an Application.

One deployment per pool (`pool-<name>`), pinned to its hardware through Ray resources: the
`accelerator_type:<X>` resource Ray puts on nodes with that accelerator (what `ray_actor_options`'
`accelerator_type` asks for, here without requiring GPUs so simulated and CPU nodes work too) plus any
custom resources the pool names. `max_ongoing_requests` is the engine's batch slots plus a small queue;
beyond `max_queued_requests` waiting at the caller, Serve raises BackPressureError and the ingress spills.
"""

from __future__ import annotations

import logging
from typing import Any

from ray import serve
from ray.serve import Application

from rayhet.config import PoolConfig, RayhetConfig, engine_settings_dict, validate_engine_settings
from rayhet.messages import PoolFacts
from rayhet.plan import Plan
from rayhet.serve.ingress import Ingress
from rayhet.serve.pool import PoolServer
from rayhet.serve.wiring import Wiring
from rayhet.serve.reporting import ControlledIngress

ACCELERATOR_RESOURCE = "accelerator_type:{}"
INGRESS_NAME = "ingress"
POOL_PREFIX = "pool-"

log = logging.getLogger("ray.serve")


def pool_deployment_name(pool: str) -> str:
    return POOL_PREFIX + pool


def _setting(settings: Any, *names: str) -> Any:
    for n in names:
        v = getattr(settings, n, None) if not isinstance(settings, dict) else settings.get(n)
        if v is not None:
            return v
    return None


def batch_slots(pool: PoolConfig, settings: Any) -> int:
    """Sequences one replica decodes together: llama_cpp n_slots, vLLM max_num_seqs, fake n_slots."""
    return int(_setting(settings, "n_slots", "max_num_seqs") or (8 if pool.engine != "vllm" else 256))


def max_context(settings: Any) -> int | None:
    v = _setting(settings, "n_ctx", "max_model_len", "max_context")
    return int(v) if v is not None else None


def vllm_gpus(settings: Any) -> int:
    """GPUs one vLLM replica shards the model over: tensor_parallel_size x pipeline_parallel_size."""
    return int(_setting(settings, "tensor_parallel_size") or 1) * int(_setting(settings, "pipeline_parallel_size") or 1)


def pool_deployment_options(pool: PoolConfig, settings: Any, replicas: int) -> dict[str, Any]:
    """`serve.deployment(...)` options of a pool (the controller adds its autoscaling_config to these)."""
    threads = _setting(settings, "n_threads")
    num_cpus = pool.num_cpus if pool.num_cpus is not None else (threads or 1) if pool.engine == "llama_cpp" else 1
    num_gpus = pool.num_gpus if pool.num_gpus is not None else (vllm_gpus(settings) if pool.engine == "vllm" else 0)
    resources = dict(pool.resources)
    if pool.accelerator_type:
        resources.setdefault(ACCELERATOR_RESOURCE.format(pool.accelerator_type), 0.001)
    actor: dict[str, Any] = {"num_cpus": num_cpus, "num_gpus": num_gpus}
    if resources:
        actor["resources"] = resources
    return {
        "name": pool_deployment_name(pool.name),
        "num_replicas": replicas,
        "ray_actor_options": actor,
        "max_ongoing_requests": batch_slots(pool, settings) + pool.queue_per_replica,
        "max_queued_requests": pool.max_queued_requests,
        "health_check_period_s": 10.0,
        "health_check_timeout_s": 60.0,
        "graceful_shutdown_timeout_s": 10.0,
        "logging_config": {"enable_access_log": pool.access_log},
    }


def scale_from_zero(pool: PoolConfig, opts: dict[str, Any]) -> dict[str, Any]:
    """Options of a pool that starts with 0 replicas and no controller (Serve refuses num_replicas=0): the
    deployment exists with none, out of the plan's routing, and Serve's own autoscaler starts one (up to
    max_replicas, default 1) if a request ever reaches it, e.g. when no planned pool fits; idle, back to 0."""
    opts = dict(opts)
    opts.pop("num_replicas")
    opts["autoscaling_config"] = {
        "min_replicas": 0, "initial_replicas": 0, "max_replicas": pool.max_replicas or 1,
        "target_ongoing_requests": max(1, opts["max_ongoing_requests"] - pool.queue_per_replica),
    }
    return opts


def initial_replicas(pool: PoolConfig, plan: Plan) -> int:
    if pool.initial_replicas is not None:
        return pool.initial_replicas
    n = plan.replicas.get(pool.name, 0)
    hi = pool.max_replicas if pool.max_replicas is not None else n
    return max(pool.min_replicas, min(n, hi))


def build_app(config: RayhetConfig, plan: Plan, *, source: str = "config",
              ingress_options: dict[str, Any] | None = None) -> Application:
    """The rayhet Application: an ingress bound to one deployment per pool, serving `plan` at start.
    `ingress_options` (Python API only) override the ingress's `serve.deployment` options, e.g. its
    `ray_actor_options` to pin it to some nodes."""
    settings = validate_engine_settings(config, source)
    handles: dict[str, Application] = {}
    facts: list[dict] = []  # rayhet.messages.PoolFacts, as plain data through Ray
    wiring = Wiring.for_config(config)  # None: no controller (disabled, or static routing)
    for pool in config.pools:
        s = settings.get(pool.name) or engine_settings_dict(config, pool)  # unvalidated here (e.g. no vllm)
        opts = pool_deployment_options(pool, s, initial_replicas(pool, plan))
        if wiring:  # replicas come from the controller through PlanPolicy
            opts = wiring.pool_options(pool, opts)
        elif opts["num_replicas"] == 0:
            opts = scale_from_zero(pool, opts)
            log.info("rayhet: pool %s starts with 0 replicas (the plan gives it none); it is out of routing and "
                     "scales from zero only if a request reaches it", pool.name)
        dep = serve.deployment(PoolServer, **opts)
        handles[pool.name] = dep.bind(pool.name, pool.engine, engine_settings_dict(config, pool))
        price = pool.price_per_hour
        if price is None:
            price = 0.0
            if pool.profile:
                from rayhet.profiles import load_profile

                price = load_profile(pool.profile).price_per_hour
        facts.append(PoolFacts(name=pool.name, max_context=max_context(s), price_per_hour=price, slots=batch_slots(pool, s),
                               tool_call_parser=_setting(s, "tool_call_parser")).model_dump())
    replicas = {p.name: initial_replicas(p, plan) for p in config.pools}
    plan_d = plan.to_dict()
    plan_d["replicas"] = replicas  # what actually starts (initial_replicas may override the plan)
    srv = config.server
    ingress = serve.deployment(
        # late-bound: Ingress.__serve_build_asgi_app__ makes the app; ControlledIngress also starts the controller
        # and reports its traffic to it
        serve.ingress()(ControlledIngress if wiring else Ingress),
        name=INGRESS_NAME,
        num_replicas=srv.ingress_replicas,
        max_ongoing_requests=srv.ingress_max_ongoing_requests,
        max_queued_requests=srv.ingress_max_queued_requests,
        # refused by Serve's proxy when even the ingress's queue is full: 429 and Retry-After, in the proxy
        backpressure_config={"status_code": 429, "retry_after_s": 1},
        logging_config={"enable_access_log": srv.access_log},
        **{"ray_actor_options": {"num_cpus": srv.ingress_num_cpus}, **(ingress_options or {})},
    )
    extra = wiring.ingress_kwargs(INGRESS_NAME) if wiring else {}
    return ingress.bind(config.model_dump(mode="json"), plan_d, handles, facts, **extra)
