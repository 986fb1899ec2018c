"""Build: a simulated fleet from a rayhet config — the same start-up plan, Serve options and profiles as
`serve run` would use (rayhet.app, rayhet.serve.builder, rayhet.capacity), with each pool's engine model."""

from __future__ import annotations

from rayhet.errors import ConfigError


def pool_models(config, plan, *, pools=None):
    """A PoolModel per pool (or per name in `pools`), from its profile's engine model and the Serve options
    the builder would give its deployment."""
    from rayhet.capacity import service_profile
    from rayhet.config import ServingOverhead, engine_settings_dict
    from rayhet.serve.builder import initial_replicas, pool_deployment_options
    from rayhet.sim.deployment import PoolModel
    from rayhet.sim.overhead import with_overhead

    out = []
    for pool in config.pools:
        if pools is not None and pool.name not in pools:
            continue
        if not pool.profile:
            raise ConfigError(f"pool {pool.name}: no profile; `rayhet simulate` needs every pool's profile (with "
                              "an engine model: `rayhet profile --method model`)")
        prof = service_profile(pool.profile, config.slo)
        if prof.engine_model is None:
            raise ConfigError(f"pool {pool.name}: {pool.profile} has no engine model (schema version "
                              f"{prof.schema_version}); the simulator times replicas by it: profile the pool again "
                              "with `rayhet profile --method model`")
        em = prof.engine_model
        deployed = engine_settings_dict(config, pool)
        opts = pool_deployment_options(pool, deployed, initial_replicas(pool, plan))
        price = pool.price_per_hour if pool.price_per_hour is not None else prof.price_per_hour
        limits = em.engine_limits()
        if pool.engine == "llama_cpp":  # the deployed engine's prefill order and chunking, not the profiled one's
            limits = limits.model_copy(update={
                "prefill_allowance_s_per_1k": float(deployed.get("prefill_allowance_s_per_1k") or 0.0),
                "decode_step_tokens": deployed.get("n_batch_decoding") or limits.decode_step_tokens})
        hi = pool.max_replicas if pool.max_replicas is not None else 64
        over = pool.serving_overhead or ServingOverhead()
        out.append(PoolModel(
            name=pool.name, price_per_hour=price, step=with_overhead(em.step_model(), over.per_token_s, over.step_scale, over.prefill_scale), limits=limits,
            max_ongoing=int(opts["max_ongoing_requests"]),
            max_queued=-1 if opts["max_queued_requests"] < 0 else opts["max_queued_requests"] * config.server.ingress_replicas,
            startup_s=pool.startup_seconds,
            min_replicas=pool.min_replicas, max_replicas=hi, initial_replicas=initial_replicas(pool, plan),
            graceful_shutdown_s=float(opts.get("graceful_shutdown_timeout_s", 10.0)), request_s=over.request_s,
            host=pool.host_contention.host if pool.host_contention else None,
            slowdown=pool.host_contention.slowdown if pool.host_contention else 0.0,
            threads=float(deployed.get("n_threads") or opts["ray_actor_options"]["num_cpus"] or 1)
            if pool.engine == "llama_cpp" else 1.0,
            host_cpus=pool.host_contention.cpus if pool.host_contention else None,
            stack_cpu_s_per_token=pool.host_contention.stack_cpu_ms_per_token / 1000.0 if pool.host_contention else 0.0,
            base_cpus=pool.host_contention.base_cpus if pool.host_contention else 0.0,
        ))
    return out


def planner_options(config, *, pools=None):
    """The controller's PoolOptions (as rayhet.serve.controller builds them), each profile for the config's SLO."""
    from rayhet.capacity import service_profile
    from rayhet.planner import PoolOption

    return [PoolOption(p.name, service_profile(p.profile, config.slo, config.planner.held_out), p.price_per_hour, p.min_replicas,
                       p.max_replicas)
            for p in config.pools if pools is None or p.name in pools]


def fleet_for(config, **kwargs):
    """The Fleet `serve run` of this config would be, in simulated time."""
    from rayhet.app import startup_plan
    from rayhet.sim.fleet import Fleet

    plan = startup_plan(config)
    return Fleet(config, pool_models(config, plan), planner_options(config), plan,
                 controlled=config.controller.enabled, **kwargs)
