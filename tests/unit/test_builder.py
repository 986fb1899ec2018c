"""Builder options without Ray Serve running: GPUs of vLLM pools, and pools that start with 0 replicas."""

from __future__ import annotations

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
