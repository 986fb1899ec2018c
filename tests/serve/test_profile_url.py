"""`rayhet profile --url` against a live app (real Serve, real llama.cpp, the real ingress's streaming with
`continuous_usage_stats`): the engine model observed from outside, as for a vLLM pool, end to end."""

from __future__ import annotations

import argparse
import contextlib
import io
import json

import pytest

pytestmark = pytest.mark.serve

APP = "profiled"
PREFIX = "/profiled"
CONFIG = {
    "model": {"id": "rayhet-tiny", "gguf": "embedded:tiny"},
    "pools": [{"name": "cpu", "engine": "llama_cpp", "num_cpus": 1,
               "engine_settings": {"n_threads": 1, "n_ctx": 512, "n_slots": 4}}],
    "server": {"ingress_num_cpus": 0},
}


def test_rayhet_profile_over_url_fits_a_model_of_the_served_pool_and_checks_it(serve_url, tmp_path, capsys):
    from rayhet.profiles import load_profile
    from rayhet.profiling import add_arguments, run
    from rayhet.testing.driver import deployed

    out = tmp_path / "served.json"
    argv = ["--url", f"{serve_url}{PREFIX}", "--model", "rayhet-tiny", "--max-context", "512", "--max-batch", "4",
            "--step-tokens", "256", "--kv-tokens", "2048", "--slo-tpot-ms", "100", "--slo-ttft-ms", "2000",
            "--out", str(out), "--price-per-hour", "0.05", "--input-edges", "64", "--output-edges", "16",
            "--held-out", "1", "--held-out-requests", "4", "--min-requests", "4", "--min-duration", "2",
            "--max-window", "10", "--warmup", "0.5", "--max-points", "5", "--no-progress"]
    p = argparse.ArgumentParser()
    add_arguments(p)
    with deployed(CONFIG, APP, PREFIX):
        assert run(p.parse_args(argv)) == 0
        calibrated = _calibrate(f"{serve_url}{PREFIX}", out, tmp_path)
    said = capsys.readouterr()
    profile = load_profile(out)
    em = profile.engine_model
    assert profile.schema_version == 2 and em is not None, said.err
    assert {pt.label.split()[0] for pt in em.points} == {"prefill", "decode", "mixed"}
    assert any(v > 0 for v in em.step.values()) and em.engine_limits().max_context == 512
    (held,) = em.held_out
    assert (held.input_bucket, held.output_bucket) == (0, 0)
    # Points were measured over HTTP, each with its twin. (Whether one passes depends on this machine: the tiny
    # model's steps take well under a millisecond, so on 2 vCPUs the proxy and the ingress, which no step
    # model sees, bound the app far below the engine's prediction; seen here: 130 predicted, 28 req/s failing.)
    assert profile.sweep and (held.measured_rate or held.measured_fail_rate)
    assert len(held.twins) == len(profile.sweep)
    # the speed probe ran around the held-out bucket over HTTP too
    assert "speed probe" in said.err and set(held.speed_drift) == {"prefill", "decode"}
    assert f"over HTTP at {serve_url}{PREFIX}" in out.read_text()
    # `rayhet calibrate` on the same live app, with the profile just made: lone requests timed against its model
    fitted, said_cal = calibrated
    assert set(fitted["fitted"]) == {"cpu"}, said_cal
    over = fitted["fitted"]["cpu"]
    assert over["request_s"] >= 0 and over["step_scale"] > 0 and "6 lone requests" in over["source"]
    assert len(fitted["requests"]) == 6 and {r["pool"] for r in fitted["requests"]} == {"cpu"}
    assert "serving_overhead: {request_s:" in said_cal and "step_scale:" in said_cal


def _calibrate(url: str, profile, tmp_path):
    """Run `rayhet calibrate` (6 requests) against the app at `url` with CONFIG and `profile`."""
    import numpy as np

    from rayhet.cli import main
    from rayhet.sim.trace import Trace, write_azure

    cfg = tmp_path / "fleet.json"
    cfg.write_text(json.dumps({**CONFIG, "pools": [{**CONFIG["pools"][0], "profile": str(profile)}]}))
    trace = write_azure(Trace(np.arange(20.0), np.full(20, 40), np.full(20, 12)), tmp_path / "sizes.csv")
    res = tmp_path / "calibration.json"
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = main(["calibrate", "--config", str(cfg), "--trace", str(trace), "--url", url, "--requests", "6",
                   "--out", str(res)])
    assert rc == 0, buf.getvalue()
    return json.loads(res.read_text()), buf.getvalue()
