"""`rayhet plan`: table and JSON output, sweeps, bounds flags, errors, the plot, and subcommand wiring."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from rayhet import cli

ROOT = Path(__file__).resolve().parents[2]
PROFILES = str(ROOT / "profiles" / "llama-2-7b")
LMSYS = ROOT.parent / "shared" / "anchors" / "melange" / "lmsys-chat-1m.csv"


@pytest.fixture
def short_workload(tmp_path) -> str:
    """Requests that every shipped GPU can serve (inputs <= 2000, outputs <= 1000)."""
    rng = np.random.default_rng(0)
    rows = np.stack([rng.integers(1, 2000, 500), rng.integers(1, 1000, 500)], 1)
    path = tmp_path / "short.csv"
    path.write_text("\n".join(f"{a},{b}" for a, b in rows) + "\n")
    return str(path)


def run_json(capsys, *args) -> dict:
    assert cli.main(["plan", "--profiles", PROFILES, *args, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_json_sweep_mix_never_dearer_than_any_single_pool(capsys, short_workload):
    doc = run_json(capsys, "--workload", short_workload, "--rate", "1,4,16")
    assert [r["rate"] for r in doc["results"]] == [1, 4, 16]
    assert [p["name"] for p in doc["pools"]] == ["l4", "a10g", "a100", "h100"]  # cheapest first
    for r in doc["results"]:
        plan = r["plan"]
        assert plan["status"] == "optimal"
        for name, base in r["baselines"].items():
            assert base["status"] == "optimal"  # every GPU serves this short workload
            assert plan["cost_per_hour"] <= base["cost_per_hour"] + 1e-9
            assert r["savings_pct"][name] == pytest.approx(100 * (1 - plan["cost_per_hour"] / base["cost_per_hour"]))
        for i, j, shares in plan["routing"]:
            assert sum(shares.values()) == pytest.approx(1.0)


def test_table_output(capsys, short_workload):
    assert cli.main(["plan", "--profiles", PROFILES, "--workload", short_workload, "--rate", "8"]) == 0
    out = capsys.readouterr().out
    assert "mix replicas (l4/a10g/a100/h100)" in out and "saving vs best single" in out
    assert "at 8 req/s:" in out and "solved in" in out
    row = next(l for l in out.splitlines() if l.strip().startswith("8 "))
    mix, *singles = [float(c) for c in row.split()[1:2] + row.split()[3:7]]
    assert mix <= min(singles)


def test_bounds_headroom_and_price_flags(capsys, short_workload):
    base = run_json(capsys, "--workload", short_workload, "--rate", "8")["results"][0]["plan"]
    doc = run_json(capsys, "--workload", short_workload, "--rate", "8", "--min-replicas", "h100=1",
                   "--max-replicas", "l4=0", "--headroom", "0.25", "--price", "a100=2.5", "--slices", "4")
    plan = doc["results"][0]["plan"]
    assert plan["replicas"]["h100"] >= 1 and plan["replicas"]["l4"] == 0 and plan["rate"] == 10.0
    assert next(p for p in doc["pools"] if p["name"] == "a100")["price_per_hour"] == 2.5
    assert plan["cost_per_hour"] != base["cost_per_hour"]


def test_errors_exit_2_with_a_message(capsys, short_workload, tmp_path):
    assert cli.main(["plan", "--profiles", PROFILES, "--workload", short_workload, "--rate", "8", "--max-replicas", "tpu=2"]) == 2
    assert "--max-replicas: unknown pool(s) ['tpu']" in capsys.readouterr().err
    assert cli.main(["plan", "--profiles", PROFILES, "--workload", short_workload, "--rate", "x"]) == 2
    assert "--rate" in capsys.readouterr().err
    assert cli.main(["plan", "--profiles", PROFILES, "--workload", short_workload]) == 2
    assert "--rate is required" in capsys.readouterr().err
    long = tmp_path / "long.csv"
    long.write_text("15000,900\n10,10\n")
    assert cli.main(["plan", "--profiles", PROFILES, "--workload", str(long), "--rate", "1"]) == 2
    err = capsys.readouterr().err
    assert "no pool can serve 1 bucket(s)" in err and "(9, 4)" in err and "--drop-unservable" in err


def test_rate_from_azure_timestamps(capsys, tmp_path):
    f = tmp_path / "azure.csv"
    f.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n" + "".join(
        f"2023-11-16 18:00:{s:02d}.0000000,{100 + s},{20 + s}\n" for s in range(0, 41, 2)))
    doc = run_json(capsys, "--workload", str(f))
    assert doc["results"][0]["rate"] == pytest.approx(0.5) and doc["workload"]["measured_rate"] == pytest.approx(0.5)


def test_plot_rate_labels_do_not_crowd_each_other():
    from rayhet.plan_command import _tick_labels

    assert _tick_labels([0.003, 0.01, 0.1, 0.2, 0.3, 1, 30]) == ["0.003", "0.01", "0.1", "0.2", "", "1", "30"]
    assert _tick_labels([4, 1, 2]) == ["4", "1", "2"]


def test_plot_writes_a_png(capsys, short_workload, tmp_path):
    pytest.importorskip("matplotlib")
    png = tmp_path / "cost.png"
    assert cli.main(["plan", "--profiles", PROFILES, "--workload", short_workload, "--rate", "1,2,4", "--plot", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.skipif(not LMSYS.is_file(), reason="LMSYS anchor sample not present")
def test_done_when_lmsys_rates_1_to_32(capsys):
    """The issue's check: on the shipped profiles and LMSYS, the mix is never dearer than the best single GPU."""
    doc = run_json(capsys, "--workload", str(LMSYS), "--rate", "1,2,4,8,16,32", "--drop-unservable")
    for r in doc["results"]:
        best = min(b["cost_per_hour"] for b in r["baselines"].values() if b["cost_per_hour"] is not None)
        assert r["plan"]["status"] == "optimal" and r["plan"]["cost_per_hour"] <= best + 1e-9
        assert r["plan"]["dropped_buckets"] == [[9, 3], [9, 4], [9, 5]]  # no shipped profile measured these
        assert r["baselines"]["l4"]["cost_per_hour"] is None  # L4 was profiled only up to 2000 input tokens


def test_unknown_subcommand_module_is_reported(monkeypatch, capsys):
    monkeypatch.setitem(cli.COMMANDS, "later", ("rayhet.not_written_yet", "a subcommand another module will add"))
    assert cli.main(["later"]) == 2
    assert "rayhet.not_written_yet is missing" in capsys.readouterr().err


def test_subcommand_modules_are_imported_only_when_chosen(monkeypatch, tmp_path, capsys):
    (tmp_path / "fake_sub.py").write_text(
        "def add_arguments(p):\n    p.add_argument('--n', type=int, default=1)\n"
        "def run(args):\n    print('ran', args.n)\n    return 0\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(cli.COMMANDS, "fake", ("fake_sub", "test subcommand"))
    assert cli.main(["fake", "--n", "3"]) == 0 and "ran 3" in capsys.readouterr().out
    assert "fake_sub" in sys.modules
    del sys.modules["fake_sub"]
    with pytest.raises(SystemExit):
        cli.main(["plan", "--help"])
    assert "fake_sub" not in sys.modules and "--drop-unservable" in capsys.readouterr().out


def test_console_entry_point_runs(short_workload):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), *sys.path]))
    # the installed console script when there is one (what a user runs), else the module; either way the
    # whole of stdout must be the JSON (HiGHS >= 1.16 printed its banner there: issue 12)
    script = Path(sys.executable).with_name("rayhet")
    cmd = [str(script)] if script.exists() else [sys.executable, "-m", "rayhet.cli"]
    proc = subprocess.run([*cmd, "plan", "--profiles", PROFILES, "--workload", short_workload,
                           "--rate", "2", "--json"], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    plan = json.loads(proc.stdout)["results"][0]["plan"]
    assert math.isfinite(plan["cost_per_hour"]) and sum(plan["replicas"].values()) >= 1
