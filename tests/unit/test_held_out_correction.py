"""A profile whose own held-out check shows its engine model over-predicting is planned with its capacity
scaled down (rayhet.capacity.held_out_verdict); one whose checks agree, whose model under-predicts, or whose
failed check the model repeats on the same arrivals (its twin), is not."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from rayhet.capacity import held_out_corrected, held_out_verdict, service_profile
from rayhet.profiles import load_profile

# the H200 profile as shipped until 2026-11-30 (its held-out point failed at 12.9 req/s by an older rule): a
# record to build decisive and non-decisive checks from
H200 = Path(__file__).resolve().parent / "data" / "h200-model-2026-11-29.json"
SHIPPED_H200 = Path(__file__).resolve().parents[2] / "profiles" / "rayhet-1b" / "h200-model.json"
CPU2 = Path(__file__).resolve().parents[2] / "profiles" / "rayhet-120m" / "cpu2.json"
DEFAULT_LARGE = Path(__file__).resolve().parents[2] / "rayhet" / "data" / "default" / "profiles" / "large.json"


def with_held_out(path: Path, tmp_path: Path, **fields) -> Path:
    """A copy of `path` whose first held-out record has `fields` changed."""
    d = json.loads(path.read_text())
    d["engine_model"]["held_out"][0].update(fields)
    out = tmp_path / path.name
    out.write_text(json.dumps(d))
    return out


def test_a_decisive_failed_check_scales_the_whole_grid_by_the_measured_middle(tmp_path):
    # the H200 file's held-out record predates measured_fail_rate, and its points' flags followed older rules:
    # no verdict from it as shipped
    assert held_out_verdict(load_profile(H200)).factor == 1.0
    f = with_held_out(H200, tmp_path, measured_fail_rate=12.88)  # predicted 20.5, passed 10.8
    v = held_out_verdict(load_profile(f))
    assert v.bucket == (6, 4) and v.passed_at == pytest.approx(10.831, rel=1e-3)
    assert v.factor == pytest.approx((10.831 * 12.88) ** 0.5 / 20.545, rel=1e-3)  # the bracket's middle
    p = load_profile(f)
    scaled = held_out_corrected(p, str(f))
    for row, srow in zip(p.max_rate, scaled.max_rate):
        for r, s in zip(row, srow):
            assert (r is None and s is None) or s == pytest.approx(r * v.factor)


def test_checks_that_agree_under_predict_or_fail_by_luck_change_nothing(tmp_path):
    # the 120M CPU profile: two held-out buckets agree; the third failed at predicted / 1.15 itself, but the
    # replica model failed on the same arrivals too (its twin): the sample's luck, not the model's error
    p = load_profile(CPU2)
    assert held_out_verdict(p).factor == 1.0
    h = next(h for h in p.engine_model.held_out if (h.input_bucket, h.output_bucket) == (2, 0))
    assert h.measured_fail_rate <= h.predicted_rate / 1.15 * (1 + 1e-9)
    # ... the same record with that twin passing would be evidence
    d = json.loads(CPU2.read_text())
    for rec in d["engine_model"]["held_out"]:
        if (rec["input_bucket"], rec["output_bucket"]) == (2, 0):
            rec["twins"] = [{**t, "meets_slo": True} for t in rec["twins"]]
    f = tmp_path / "cpu2.json"
    f.write_text(json.dumps(d))
    v = held_out_verdict(load_profile(f))
    assert v.bucket == (2, 0) and v.factor == pytest.approx((0.5625 * 0.6690) ** 0.5 / 0.7693, rel=1e-3)
    # the default app's large pool: its 128/64 check failed where its twin passed
    assert held_out_verdict(load_profile(DEFAULT_LARGE)).factor == pytest.approx(0.811, abs=1e-3)
    # a model that under-predicts (the engine passed above the prediction) is never scaled up
    f = with_held_out(H200, tmp_path, measured_rate=30.0, measured_fail_rate=35.0)
    assert held_out_verdict(load_profile(f)).factor == 1.0
    # a failure only just under the prediction is within the check's band: not evidence enough
    f = with_held_out(H200, tmp_path, measured_rate=17.0, measured_fail_rate=20.545 / 1.1)
    assert held_out_verdict(load_profile(f)).factor == 1.0


def test_service_profile_scales_by_default_says_so_once_and_ignore_keeps_the_model(tmp_path, caplog):
    f = with_held_out(H200, tmp_path, measured_fail_rate=12.88)
    raw = load_profile(f)
    with caplog.at_level(logging.WARNING, logger="rayhet.capacity"):
        scaled = service_profile(f)
        service_profile(f)
    said = [r.getMessage() for r in caplog.records if "over-predicts" in r.getMessage()]
    assert len(said) == 1 and str(f) in said[0] and "(6, 4)" in said[0] and "0.57" in said[0]
    assert scaled.max_rate[0][0] == pytest.approx(raw.max_rate[0][0] * (10.831 * 12.88) ** 0.5 / 20.545, rel=1e-3)
    assert service_profile(f, held_out="ignore").max_rate == raw.max_rate
    with pytest.raises(ValueError, match="held_out"):
        service_profile(f, held_out="sometimes")


def test_the_config_and_rayhet_plan_take_the_choice(tmp_path, capsys):
    f = with_held_out(H200, tmp_path, measured_fail_rate=12.88)
    from rayhet import cli
    from rayhet.config import RayhetConfig
    from rayhet.errors import ConfigError

    with pytest.raises((ConfigError, ValueError), match="held_out"):
        RayhetConfig.model_validate({"pools": [{"name": "a", "engine": "fake"}], "planner": {"held_out": "maybe"}})
    work = tmp_path / "w.csv"
    work.write_text("3000,700\n" * 50)  # the held-out bucket's sizes

    def replicas(*args) -> int:
        assert cli.main(["plan", "--profiles", str(f), "--workload", str(work), "--rate", "40", "--json",
                         *args]) == 0
        return json.loads(capsys.readouterr().out)["results"][0]["plan"]["replicas"]["h200"]

    assert replicas("--held-out", "scale") > replicas("--held-out", "ignore")


def test_the_shipped_h200_profile_passed_its_check_and_is_planned_as_it_is():
    p = load_profile(SHIPPED_H200)
    (h,) = p.engine_model.held_out
    assert h.measured_fail_rate > h.predicted_rate / 1.15  # the check's failing rate is above what must pass
    assert held_out_verdict(p).factor == 1.0
