"""Profiles: the shipped Llama-2-7b tables, the schema's error messages, save/load round trips."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from rayhet.errors import ProfileError
from rayhet.profiles import Profile, bucket_index, load_profile, load_profiles, save_profile

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "profiles" / "llama-2-7b"
ANCHORS = ROOT.parent / "shared" / "anchors" / "melange"


def _valid() -> dict:
    return json.loads((SHIPPED / "l4.json").read_text())


def _write(tmp_path: Path, data: dict, name: str = "p.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(data))
    return path


def test_shipped_profiles_match_the_paper_grid_and_prices():
    profiles = {p.pool: p for p in load_profiles(SHIPPED)}
    assert sorted(profiles) == ["a100", "a10g", "h100", "l4"]
    assert {k: p.price_per_hour for k, p in profiles.items()} == {"l4": 0.7, "a10g": 1.01, "a100": 3.67, "h100": 7.516}
    assert len(profiles["l4"].input_edges) == len(profiles["a10g"].input_edges) == 6
    assert profiles["a100"].input_edges == profiles["h100"].input_edges == [25, 100, 250, 500, 1000, 2000, 4000, 8000, 12000, 16000]
    for p in profiles.values():
        assert p.slo.unknown and p.slo.tpot_ms is None
        assert p.output_edges == [25, 100, 250, 500, 1000, 2000]
        assert p.provenance.source and "3d13f19" in p.provenance.source
        assert p.model == "meta-llama/Llama-2-7b-hf"
    # the source's last row has 3 of 6 entries for A100 and H100: the rest is unservable, not invented
    assert [r is None for r in profiles["h100"].max_rate[-1]] == [False] * 3 + [True] * 3
    assert profiles["h100"].rate(9, 5) is None and profiles["h100"].rate(0, 0) == pytest.approx(40.64087824)
    assert profiles["l4"].rate(5, 5) == 0.02


@pytest.mark.skipif(not ANCHORS.is_dir(), reason="Melange anchor data not present")
def test_generator_reproduces_the_committed_files(tmp_path):
    spec = importlib.util.spec_from_file_location("make_profiles", SHIPPED / "make_profiles.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.main(["--anchors", str(ANCHORS), "--out", str(tmp_path)]) == 0
    for name in ("l4", "a10g", "a100", "h100"):
        assert (tmp_path / f"{name}.json").read_text() == (SHIPPED / f"{name}.json").read_text()


def test_round_trip(tmp_path):
    p = load_profile(SHIPPED / "h100.json")
    q = load_profile(save_profile(p, tmp_path / "x" / "h100.json"))
    assert q == p


@pytest.mark.parametrize(
    "mutate, field, words",
    [
        (lambda d: d["max_rate"][2].pop(), "max_rate", "row 2 has 5 values"),  # ragged
        (lambda d: d.update(input_edges=[25, 100, 100, 500, 1000, 2000]), "input_edges", "strictly increasing"),
        (lambda d: d["max_rate"][1].__setitem__(3, -0.5), "max_rate", "max_rate[1][3] = -0.5"),
        (lambda d: d.update(schema_version=7), "schema_version", "unknown schema version 7"),
        (lambda d: d.update(price_per_hour=-1), "price_per_hour", "greater than or equal to 0"),
        (lambda d: d.update(colour="blue"), "colour", "Extra inputs"),
        (lambda d: d["provenance"].update(measured_at="yesterday"), "provenance.measured_at", "ISO date"),
        (lambda d: d.update(max_rate=d["max_rate"][:-1]), "max_rate", "5 rows, expected 6"),
    ],
)
def test_errors_name_the_file_and_the_field(tmp_path, mutate, field, words):
    data = _valid()
    mutate(data)
    path = _write(tmp_path, data)
    with pytest.raises(ProfileError) as e:
        load_profile(path)
    msg = str(e.value)
    assert str(path) in msg and field in msg and words in msg, msg


def test_unreadable_files(tmp_path):
    with pytest.raises(ProfileError, match="no such profile file"):
        load_profile(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ProfileError, match=r"bad.json: not valid JSON \(line 1"):
        load_profile(bad)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ProfileError, match="holds no"):
        load_profiles(tmp_path / "empty")


def test_duplicate_pool_names_in_a_directory(tmp_path):
    _write(tmp_path, _valid(), "a.json")
    _write(tmp_path, _valid(), "b.json")
    with pytest.raises(ProfileError, match=r"b.json: pool 'l4' is also defined in .*a.json"):
        load_profiles(tmp_path)


def test_cpu_pool_needs_vcpus():
    data = _valid()
    data["hardware"] = {"accelerator": None}
    with pytest.raises(ProfileError, match="vcpus"):
        from rayhet.profiles import parse_profile

        parse_profile(data, "cpu.json")
    data["hardware"] = {"accelerator": None, "vcpus": 16}
    assert Profile.model_validate(data).is_cpu


def test_bucket_index_is_right_closed():
    edges = [25, 100, 250]
    assert [bucket_index(v, edges) for v in (0, 1, 25, 26, 100, 101, 250, 251)] == [0, 0, 0, 1, 1, 2, 2, None]
