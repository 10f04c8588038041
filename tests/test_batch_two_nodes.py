"""`batch` on a real two-node Ray cluster (two `ray start` on 127.0.0.1), one node killed mid-run: every scene is
written once, equal to the sequential run (tools/ray_two_nodes.py does the work and the checks)."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "tools" / "ray_two_nodes.py"


@pytest.mark.slow
def test_two_node_cluster_survives_a_killed_node(tmp_path: Path) -> None:
    pytest.importorskip("ray", reason="ray is not installed (pip install 'asanet-rt[ray]')")
    if not Path(sys.executable).with_name("ray").exists() and shutil.which("ray") is None:
        pytest.skip("the `ray` command is not installed")
    done = subprocess.run([sys.executable, str(SCRIPT), "--scenes", "8", "--size", "256", "--kill-after", "2",
                           "--keep", str(tmp_path / "work")], capture_output=True, text=True, timeout=400)
    report = json.loads(done.stdout[done.stdout.index("{"):])
    assert done.returncode == 0 and report["ok"], (report, done.stderr[-3000:])
    assert len(report["per_node"]) == 2 and report["done"] + report["skipped"] == 8
