"""Every example and Serve config comes up on a 2-CPU Ray, or says its minimum cluster and is skipped (issue 12).

The deploys run in one subprocess (deploy_on_two_cpus.py) with its own `ray.init(num_cpus=2)`: the whole
app, ingress and controller included, must fit in 2 CPUs, as on the 2-core machines this project is tried
on. This directory sorts before tests/serve, so the subprocess's Ray is gone before the session cluster
starts (two clusters at once would fight over the 2 cores).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.serve

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
MIN_CLUSTER = re.compile(r"minimum cluster:\s*(.+)", re.IGNORECASE)

# every config a user may start: the Serve configs and rayhet configs in the repo, and the Python example
CONFIG_FILES = sorted([*ROOT.glob("examples/*.yaml"), *ROOT.glob("deployments/**/*.yaml"), ROOT / "examples/python_api.py"])


def minimum_cluster(path: Path) -> str | None:
    """What the file's first lines say it needs ('Minimum cluster: ...'), or None."""
    for line in path.read_text().splitlines()[:15]:
        m = MIN_CLUSTER.search(line)
        if m:
            return m.group(1).split(". ")[0].strip().rstrip(".")  # its first sentence
    return None


def fits_two_cpus(need: str) -> bool:
    """'2 CPUs' fits; anything with a GPU, a node group or more CPUs does not."""
    m = re.match(r"(\d+) CPUs?\b", need)
    return bool(m) and int(m.group(1)) <= 2 and "GPU" not in need


def case_of(path: Path) -> str:
    if path.suffix == ".py":
        return f"python:{path}"
    head = path.read_text()
    return f"serve:{path}" if "applications:" in head else f"config:{path}"


@pytest.fixture(scope="module")
def deployed(tmp_path_factory):
    """Results of deploying, on a fresh 2-CPU Ray, every case that claims to fit."""
    from rayhet.testing.models import write_gguf

    gguf = write_gguf(tmp_path_factory.mktemp("fit") / "mine.gguf", "tiny")
    cases = ["default", f"gguf:{gguf}:2"]  # the README's first command, and `threads=N` on an N-CPU Ray
    cases += [case_of(p) for p in CONFIG_FILES if p.suffix != ".json" and fits_two_cpus(minimum_cluster(p) or "")]
    proc = subprocess.run([sys.executable, str(HERE / "deploy_on_two_cpus.py"), *cases], capture_output=True,
                          text=True, timeout=900, cwd=ROOT)
    results = {}
    for line in proc.stdout.splitlines():
        if line.startswith("{"):
            r = json.loads(line)
            results[r["case"]] = r
    assert results, f"the deploy script reported nothing (rc {proc.returncode}): {proc.stderr[-3000:]}"
    return results, gguf


def _check(results: dict, case: str) -> dict:
    r = results.get(case)
    assert r is not None, f"{case}: no result (the script died before it)"
    assert r["ok"], f"{case}: {r['error']}"
    return r


def test_default_app_fits_two_cpus(deployed):
    results, _ = deployed
    r = _check(results, "default")
    assert r["deployments"] == ["ingress", "pool-large", "pool-small"]


def test_one_pool_with_every_cpu_as_threads(deployed):
    """`serve run rayhet.app:build gguf=model.gguf threads=2` on a 2-CPU machine becomes ready (issue 12, 2)."""
    results, gguf = deployed
    _check(results, f"gguf:{gguf}:2")


@pytest.mark.parametrize("path", CONFIG_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_config_fits_two_cpus_or_says_its_minimum(path, deployed):
    need = minimum_cluster(path)
    assert need, f"{path.relative_to(ROOT)}: the first lines must say 'Minimum cluster: ...'"
    if not fits_two_cpus(need):
        pytest.skip(f"{path.relative_to(ROOT)} needs {need}")
    results, _ = deployed
    _check(results, case_of(path))
