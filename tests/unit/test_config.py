"""Config: valid configs load from YAML/JSON; every error names its field."""

from __future__ import annotations

import json

import pytest

from rayhet.config import EMBEDDED_MODEL, embedded_config, load_config, parse_config, validate_engine_settings
from rayhet.errors import ConfigError

BASE = {"model": {"id": "m", "gguf": EMBEDDED_MODEL},
        "pools": [{"name": "small", "engine": "llama_cpp", "engine_settings": {"n_threads": 1}}]}


def test_minimal_config_gets_defaults():
    c = parse_config(BASE)
    assert c.pools[0].max_queued_requests == 8
    assert c.routing.predictor == "bucket_quantile"
    assert c.server.max_body_bytes == 1_048_576
    assert c.controller.period_s == 30



def test_a_slo_with_a_ttft_allowance_orders_llama_cpp_prefill_by_deadline():
    from rayhet.config import engine_settings_dict

    plain = parse_config(BASE)
    assert "prefill_allowance_s_per_1k" not in engine_settings_dict(plain, plain.pools[0])
    slo = {"ttft_ms": 2000, "ttft_ms_per_1k_input": 5000, "tpot_ms": 100}
    c = parse_config({**BASE, "slo": slo})
    assert engine_settings_dict(c, c.pools[0])["prefill_allowance_s_per_1k"] == 5.0
    assert validate_engine_settings(c)["small"].prefill_allowance_s_per_1k == 5.0
    own = {**BASE["pools"][0], "engine_settings": {"n_threads": 1, "prefill_allowance_s_per_1k": 0}}
    c = parse_config({**BASE, "slo": slo, "pools": [own]})  # the pool's own setting wins (0: oldest first)
    assert engine_settings_dict(c, c.pools[0])["prefill_allowance_s_per_1k"] == 0

@pytest.mark.parametrize("patch, field", [
    ({"pools": [{"name": "Bad Name", "engine": "llama_cpp"}]}, "pools[0].name"),
    ({"pools": [{"name": "a", "engine": "tensorrt"}]}, "pools[0].engine"),
    ({"pools": [{"name": "a", "engine": "llama_cpp", "num_cpus": -1}]}, "pools[0].num_cpus"),
    ({"pools": [{"name": "a", "engine": "llama_cpp", "colour": "red"}]}, "pools[0].colour"),
    ({"pools": [{"name": "a", "engine": "llama_cpp", "min_replicas": 3, "max_replicas": 1}]}, "pools[0]"),
    ({"pools": []}, "pools"),
    ({"server": {"max_body_bytes": 10}}, "server.max_body_bytes"),
    ({"routing": {"predictor_quantile": 2}}, "routing.predictor_quantile"),
    ({"planner": {"expected_rate": 0}}, "planner.expected_rate"),
])
def test_errors_name_the_field(patch, field):
    with pytest.raises(ConfigError) as e:
        parse_config({**BASE, **patch}, "my.yaml")
    assert f"my.yaml: {field}" in str(e.value)


def test_duplicate_pool_names_and_mixed_profiles():
    p = {"name": "a", "engine": "llama_cpp"}
    with pytest.raises(ConfigError, match="used twice"):
        parse_config({**BASE, "pools": [p, p]})
    with pytest.raises(ConfigError, match="no profile"):
        parse_config({**BASE, "pools": [dict(p, profile="x.json"), dict(p, name="b")]})


def test_llama_cpp_needs_a_model():
    with pytest.raises(ConfigError, match="model.gguf"):
        parse_config({"pools": [{"name": "a", "engine": "llama_cpp"}]})


def test_engine_settings_validated_by_the_engine_model(tmp_path):
    pytest.importorskip("llama_cpp")
    bad = {**BASE, "pools": [{"name": "a", "engine": "llama_cpp", "engine_settings": {"n_slots": "many"}}]}
    with pytest.raises(ConfigError, match=r"pools\[0\]\.engine_settings\.n_slots"):
        validate_engine_settings(parse_config(bad), "cfg")
    fake = {**BASE, "pools": [{"name": "a", "engine": "fake", "engine_settings": {"n_slots": 0}}]}
    with pytest.raises(ConfigError, match=r"pools\[0\]\.engine_settings\.n_slots"):
        validate_engine_settings(parse_config(fake), "cfg")


def test_load_yaml_and_json_resolve_relative_paths(tmp_path):
    (tmp_path / "p.json").write_text("{}")
    cfg = {**BASE, "pools": [{"name": "a", "engine": "llama_cpp", "profile": "p.json"}]}
    (tmp_path / "c.json").write_text(json.dumps(cfg))
    import yaml

    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    for name in ("c.json", "c.yaml"):
        c = load_config(tmp_path / name)
        assert c.pools[0].profile == str(tmp_path / "p.json")
        assert c.model.gguf == EMBEDDED_MODEL
    (tmp_path / "broken.yaml").write_text("pools: [\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(tmp_path / "broken.yaml")
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(tmp_path / "missing.yaml")


def test_hf_model_resolved_only_when_a_local_directory(tmp_path):
    (tmp_path / "weights").mkdir()
    for hf, want in (("weights", str(tmp_path / "weights")), ("org/model", "org/model"), ("/abs/m", "/abs/m")):
        cfg = {"model": {"hf": hf}, "pools": [{"name": "g", "engine": "vllm"}]}
        (tmp_path / "c.json").write_text(json.dumps(cfg))
        assert load_config(tmp_path / "c.json").model.hf == want


def test_api_keys_from_env(monkeypatch):
    c = parse_config({**BASE, "server": {"api_keys": ["a"], "api_keys_env": "RAYHET_TEST_KEYS"}})
    monkeypatch.setenv("RAYHET_TEST_KEYS", "b, c")
    assert c.server.resolved_api_keys() == {"a", "b", "c"}


def test_embedded_default():
    c = embedded_config()
    assert [p.name for p in c.pools] == ["cpu"] and c.model.gguf == EMBEDDED_MODEL
