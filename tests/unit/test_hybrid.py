"""Hybrid pools (issue 18): a llama.cpp replica split between a GPU memory budget and the host — the split
arithmetic from a real GGUF file, the pool's settings and Ray resources, pricing, the profiler's split, and
the planner choosing a hybrid pool where it is cheapest. (A replica generating on a real GPU:
tests/gpu/test_llama_cpp_hybrid.py.)"""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path

import pytest

from rayhet import hybrid
from rayhet.errors import ConfigError


@pytest.fixture(scope="module")
def layers(tiny_gguf):
    return hybrid.read_layers(tiny_gguf)


def test_layer_sizes_come_from_the_gguf_file(layers, tiny_gguf):
    import gguf

    from rayhet.models import SIZES

    r = gguf.GGUFReader(str(tiny_gguf))
    by_name = {t.name: int(t.n_bytes) for t in r.tensors}
    assert layers.n_layers == SIZES["tiny"].num_layers == 2
    assert layers.block_bytes == tuple(sum(b for n, b in by_name.items() if n.startswith(f"blk.{i}."))
                                       for i in range(2))
    assert layers.embedding_bytes == by_name["token_embd.weight"]
    assert layers.head_bytes == by_name["output.weight"] + by_name["output_norm.weight"]
    shape = SIZES["tiny"]
    assert layers.kv_bytes_per_token_per_layer == 2 * shape.num_kv_heads * shape.head_dim * 2  # K and V, f16
    assert layers.total_bytes == sum(by_name.values())


def test_the_largest_split_that_fits_the_budget(layers):
    kv, reserve = 1024, 1000
    sizes = [hybrid.gpu_bytes(layers, k, kv, reserve) for k in range(layers.n_layers + 2)]
    assert sizes[0] == 0 and sizes == sorted(sizes) and len(set(sizes)) == len(sizes)
    # the last block first (llama.cpp offloads the last n_gpu_layers), with its KV; the head only at n + 1
    assert sizes[1] == layers.block_bytes[-1] + layers.kv_bytes_per_token_per_layer * kv + reserve
    assert sizes[3] - sizes[2] == layers.head_bytes
    for k in range(1, layers.n_layers + 2):
        assert hybrid.layers_that_fit(layers, sizes[k], kv, reserve) == k
        assert hybrid.layers_that_fit(layers, sizes[k] - 1, kv, reserve) == k - 1
    assert hybrid.layers_that_fit(layers, 10**12, kv, reserve) == layers.n_layers + 1
    with pytest.raises(ValueError, match="n_gpu_layers must be in"):
        hybrid.gpu_bytes(layers, layers.n_layers + 2, kv)


def test_share_and_price():
    assert hybrid.gpu_share(14 * hybrid.GIB, 140 * hybrid.GIB) == 0.1
    assert hybrid.hybrid_price(12.29, 0.1, 0.0425, 12) == pytest.approx(1.229 + 0.51)
    with pytest.raises(ValueError):
        hybrid.gpu_share(200 * hybrid.GIB, 140 * hybrid.GIB)
    with pytest.raises(ValueError):
        hybrid.hybrid_price(-1, 0.1, 0.04, 4)


def test_a_hybrid_pool_asks_ray_for_its_gpu_share_and_needs_one():
    from rayhet.config import engine_settings_dict, parse_config, validate_engine_settings
    from rayhet.serve.builder import pool_deployment_options

    base = {"model": {"id": "m", "gguf": "/models/m.gguf"}}
    with pytest.raises(ConfigError, match="num_gpus: a llama_cpp pool with n_gpu_layers"):
        parse_config({**base, "pools": [{"name": "h", "engine": "llama_cpp", "engine_settings": {"n_gpu_layers": 8}}]})
    cfg = parse_config({**base, "pools": [
        {"name": "h", "engine": "llama_cpp", "num_gpus": 0.1, "accelerator_type": "H200",
         "engine_settings": {"n_gpu_layers": 8, "n_threads": 12}},
        {"name": "c", "engine": "llama_cpp", "engine_settings": {"n_threads": 4}}]})
    h, c = cfg.pools
    assert h.hybrid and not c.hybrid
    actor = pool_deployment_options(h, engine_settings_dict(cfg, h), 1)["ray_actor_options"]
    assert actor["num_gpus"] == 0.1 and actor["num_cpus"] == 12 and "accelerator_type:H200" in actor["resources"]
    assert pool_deployment_options(c, engine_settings_dict(cfg, c), 1)["ray_actor_options"]["num_gpus"] == 0
    bad = parse_config({**base, "pools": [{"name": "h", "engine": "llama_cpp", "num_gpus": 1,
                                           "engine_settings": {"n_gpu_layers": 8, "tensor_split": [0, 0]}}]})
    with pytest.raises(ConfigError, match="tensor_split"):
        validate_engine_settings(bad)  # the app's build does this (engine settings by the engine's own model)


def test_a_cpu_only_build_refuses_gpu_layers_instead_of_running_on_the_cpu(tiny_gguf):
    import llama_cpp

    from rayhet.engines.base import EngineError
    from rayhet.engines.llama_cpp import LlamaCppEngine, LlamaCppSettings

    if llama_cpp.llama_supports_gpu_offload():
        pytest.skip("this llama-cpp-python has a GPU backend (tests/gpu/test_llama_cpp_hybrid.py covers it)")
    eng = LlamaCppEngine(LlamaCppSettings(model_path=str(tiny_gguf), n_gpu_layers=1, n_ctx=64, n_slots=1, n_batch=16))
    with pytest.raises(EngineError, match="no GPU backend: build it with CUDA"):
        asyncio.run(eng.start())


def _profile_args(*argv: str) -> argparse.Namespace:
    from rayhet.profiling import add_arguments

    p = argparse.ArgumentParser()
    add_arguments(p)
    return p.parse_args(list(argv))


def test_profile_finds_the_split_its_share_and_price(layers, tiny_gguf):
    from rayhet.profiling.command import _split_for_budget, engine_kwargs, hardware

    kv = 256 * 2
    budget = hybrid.gpu_bytes(layers, 2, kv)  # exactly the two blocks, not the head
    args = _profile_args("--model", str(tiny_gguf), "--n-ctx", "256", "--n-slots", "2", "--n-threads", "4",
                         "--gpu-memory-gb", str(budget / hybrid.GIB), "--gpu-total-gb", "140", "--accelerator", "H200",
                         "--gpu-price-per-hour", "12.29", "--vcpu-price-per-hour", "0.0425")
    _split_for_budget(args)
    assert engine_kwargs(args)["n_gpu_layers"] == 2
    share = hybrid.gpu_share(budget, 140 * hybrid.GIB)
    assert args.price_per_hour == pytest.approx(round(12.29 * share + 4 * 0.0425, 4))
    hw = hardware(args)
    assert hw.accelerator == "H200" and hw.vcpus == 4
    assert (hw.gpu_split.n_gpu_layers, hw.gpu_split.n_layers, hw.gpu_split.gpu_share) == (2, 2, share)
    # written into the profile; a pool that is not hybrid writes no gpu_split (older files stay the same)
    from rayhet.profiles import Hardware

    assert hw.model_dump()["gpu_split"]["n_gpu_layers"] == 2 and "gpu_split" not in Hardware(vcpus=2).model_dump()
    with pytest.raises(Exception, match="not even one layer"):
        _split_for_budget(_profile_args("--model", str(tiny_gguf), "--gpu-memory-gb", "0.0001", "--gpu-total-gb", "140"))


def _profile(path, pool: str, rate: float, price: float, hardware: dict) -> str:
    path.write_text(json.dumps({
        "schema_version": 1, "model": "m", "pool": pool, "engine": "llama_cpp", "engine_version": "x",
        "hardware": hardware, "price_per_hour": price, "slo": {"tpot_ms": 100},
        "input_edges": [4096], "output_edges": [4096], "max_rate": [[rate]],
        "provenance": {"measured_by": "test", "measured_at": "2026-11-30", "command": "test"}}))
    return str(path)


def test_the_planner_picks_a_hybrid_pool_where_it_is_cheapest_and_plan_says_so(tmp_path, capsys):
    """A CPU pool (0.1 req/s, $0.5/h), a hybrid pool (1 req/s, $1.5/h) and a whole GPU (20 req/s, $12/h): the
    mix is the CPU at a trickle, the hybrid pool in between, the GPU at high rates."""
    from rayhet import cli

    d = tmp_path / "profiles"
    d.mkdir()
    _profile(d / "cpu.json", "cpu", 0.1, 0.5, {"vcpus": 12})
    _profile(d / "hybrid.json", "hybrid", 1.0, 1.5, {
        "accelerator": "H200", "vcpus": 12, "memory_gb": 14,
        "gpu_split": {"gpu_memory_gb": 14, "gpu_share": 0.1, "n_gpu_layers": 8, "n_layers": 16,
                      "gpu_bytes_estimated": 14 * 10**9}})
    _profile(d / "h200.json", "h200", 20.0, 12.0, {"accelerator": "H200"})
    work = tmp_path / "w.csv"
    work.write_text("100,100\n200,50\n")
    assert cli.main(["plan", "--profiles", str(d), "--workload", str(work), "--rate", "0.05,0.8,15", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    picked = [{k: v for k, v in r["plan"]["replicas"].items() if v} for r in doc["results"]]
    assert picked == [{"cpu": 1}, {"hybrid": 1}, {"h200": 1}]
    assert cli.main(["plan", "--profiles", str(d), "--workload", str(work), "--rate", "0.8"]) == 0
    out = capsys.readouterr().out
    assert "hybrid $1.5/h (hybrid: 8/16 layers on 0.1 of a H200, 12 vCPUs)" in out


def test_the_measured_7b_profiles_put_a_hybrid_pool_in_place_of_the_h200_at_low_rates(tmp_path, capsys):
    """profiles/rayhet-7b as measured on the lent H200 machine (2026-12-01): under an SLO whose TTFT limit grows
    with the prompt, 16 GiB hybrid replicas carry 0.01 req/s of chat requests, 1,800-token prompts included,
    instead of the whole H200; at 1 req/s the H200 is cheaper. Each profile's capacity is re-derived for the
    SLO from its engine model (the op-offload term included)."""
    from rayhet import cli

    root = Path(__file__).resolve().parents[2] / "profiles" / "rayhet-7b"
    work = tmp_path / "w.csv"
    work.write_text("100,200\n500,300\n1800,150\n")
    argv = ["plan", "--profiles", str(root / "h200-16gb.json"), "--profiles", str(root / "h200.json"),
            "--workload", str(work), "--rate", "0.01,1", "--slo-ttft-ms", "2000", "--slo-ttft-ms-per-1k-input", "5000",
            "--slo-tpot-ms", "200", "--json"]
    assert cli.main(argv) == 0
    doc = json.loads(capsys.readouterr().out)
    picked = [sorted(k for k, v in r["plan"]["replicas"].items() if v) for r in doc["results"]]
    assert picked == [["h200-16gb"], ["h200"]]


def test_the_7b_example_config_loads_and_asks_ray_for_each_pools_share():
    """examples/hybrid-7b.yaml, the three kinds of pool on the measured 7B profiles: it validates (engine settings
    included, without the model files), the hybrid pool asks for its 0.114 of an H200, and its llama.cpp pools
    prefill by deadline under the example's SLO."""
    from rayhet.config import engine_settings_dict, load_config, validate_engine_settings
    from rayhet.profiles import load_profile
    from rayhet.serve.builder import pool_deployment_options

    cfg = load_config(Path(__file__).resolve().parents[2] / "examples" / "hybrid-7b.yaml")
    settings = validate_engine_settings(cfg)
    pools = {p.name: p for p in cfg.pools}
    hybrid = pools["h200-16gb"]
    actor = pool_deployment_options(hybrid, engine_settings_dict(cfg, hybrid), 1)["ray_actor_options"]
    assert actor["num_gpus"] == 0.114 and actor["num_cpus"] == 12 and "accelerator_type:H200" in actor["resources"]
    split = load_profile(hybrid.profile).hardware.gpu_split
    assert (split.n_gpu_layers, split.gpu_share) == (settings["h200-16gb"].n_gpu_layers, actor["num_gpus"])
    assert settings["cpu-q4"].prefill_allowance_s_per_1k == settings["h200-16gb"].prefill_allowance_s_per_1k == 5.0
