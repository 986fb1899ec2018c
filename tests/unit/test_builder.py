"""Builder options without Ray Serve running: GPUs of vLLM pools, and pools that start with 0 replicas."""

from __future__ import annotations

import pytest

from rayhet.config import PoolConfig, RayhetConfig, engine_settings_dict
from rayhet.serve.builder import pool_deployment_options, scale_from_zero


def _vllm(**kw) -> PoolConfig:
    return PoolConfig(name="gpu", engine="vllm", **kw)


def test_vllm_gpus_default_to_tensor_times_pipeline_parallel():
    cases = [({}, 1), ({"tensor_parallel_size": 4}, 4), ({"tensor_parallel_size": 2, "pipeline_parallel_size": 2}, 4)]
    for settings, gpus in cases:
        opts = pool_deployment_options(_vllm(engine_settings=settings), {"model": "m", **settings}, 1)
        assert opts["ray_actor_options"]["num_gpus"] == gpus, settings


def test_vllm_gpus_from_validated_settings_and_explicit_num_gpus_wins():
    from rayhet.engines.vllm import VllmSettings

    s = VllmSettings(model="m", tensor_parallel_size=2, pipeline_parallel_size=3)
    assert pool_deployment_options(_vllm(), s, 1)["ray_actor_options"]["num_gpus"] == 6
    assert pool_deployment_options(_vllm(num_gpus=8), s, 1)["ray_actor_options"]["num_gpus"] == 8
    cpu = PoolConfig(name="cpu", engine="fake")
    assert pool_deployment_options(cpu, {}, 1)["ray_actor_options"]["num_gpus"] == 0


def test_a_pool_with_zero_replicas_scales_from_zero():
    config = RayhetConfig.model_validate({"pools": [{"name": "f", "engine": "fake", "initial_replicas": 0,
                                                     "max_replicas": 3}]})
    pool = config.pools[0]
    opts = scale_from_zero(pool, pool_deployment_options(pool, engine_settings_dict(config, pool), 0))
    assert "num_replicas" not in opts
    a = opts["autoscaling_config"]
    assert (a["min_replicas"], a["initial_replicas"], a["max_replicas"]) == (0, 0, 3)
    assert a["target_ongoing_requests"] == 8  # the fake engine's batch slots


def test_access_logs_are_knobs():
    config = RayhetConfig.model_validate({"pools": [{"name": "f", "engine": "fake"}]})
    assert pool_deployment_options(config.pools[0], {}, 1)["logging_config"] == {"enable_access_log": False}
    assert config.server.access_log is True
    on = PoolConfig(name="f", engine="fake", access_log=True)
    assert pool_deployment_options(on, {}, 1)["logging_config"] == {"enable_access_log": True}


def test_the_proxy_refuses_with_429_and_retry_after_when_even_the_ingress_queue_is_full():
    """The last guard under overload: Serve's proxy answers 429 + Retry-After itself (backpressure_config)
    once the ingress has max_ongoing + max_queued requests, before rayhet's code runs."""
    from rayhet.app import startup_plan
    from rayhet.config import RayhetConfig
    from rayhet.serve.builder import build_app

    config = RayhetConfig.model_validate({"model": {"id": "fake"}, "pools": [{"name": "a", "engine": "fake"}],
                                          "server": {"ingress_max_queued_requests": 32}})
    dep = build_app(config, startup_plan(config))._bound_deployment
    cfg = dep._deployment_config
    assert cfg.max_queued_requests == 32
    assert cfg.backpressure_config.status_code == 429 and cfg.backpressure_config.retry_after_s == 1
    with pytest.raises(ValueError, match="ingress_max_queued_requests"):
        RayhetConfig.model_validate({"pools": [{"name": "a", "engine": "fake"}],
                                     "server": {"ingress_max_queued_requests": 0}})
