"""`asanet-rt doctor` / tools/trt_selfcheck.py on a machine without a GPU or TensorRT: it says what is missing and
exits 1, without a traceback; a failing engine check is reported the same way."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from asanet_rt.cli import main
from asanet_rt.engines import doctor

ROOT = Path(__file__).resolve().parents[1]


def _ready() -> bool:
    report = doctor.facts()
    return not doctor._missing(report)


def test_doctor_names_what_is_missing(capsys):
    if _ready():
        pytest.skip("TensorRT, a CUDA driver and a GPU are present: the no-GPU path does not apply")
    assert main(["doctor"]) == 1
    out = capsys.readouterr().out
    for key in ("tensorrt", "cuda_driver", "cuda_python", "nvcc", "gpu"):
        assert any(line.startswith(key) for line in out.splitlines()), key
    assert "missing / failed:" in out and "NOT ready" in out


def test_selfcheck_script_exits_nonzero_without_traceback():
    if _ready():
        pytest.skip("TensorRT, a CUDA driver and a GPU are present: the no-GPU path does not apply")
    proc = subprocess.run([sys.executable, str(ROOT / "tools" / "trt_selfcheck.py"), "--json"], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr + proc.stdout
    assert '"problems"' in proc.stdout


def test_failed_engine_check_is_reported(monkeypatch, capsys, tmp_path):
    from asanet_rt.errors import AsanetError

    monkeypatch.setattr(doctor, "facts", lambda: {"tensorrt": "10.3.0", "cuda_driver": "12.6",
                                                  "cuda_python": "12.6.2", "gpu": "Orin, sm_87"})

    def fail(*args):
        raise AsanetError("model.onnx: TensorRT 10.3.0 could not parse the ONNX file")

    monkeypatch.setattr(doctor, "check_engine", fail)
    assert doctor.main(keep=str(tmp_path)) == 1
    assert "engine check: model.onnx: TensorRT 10.3.0 could not parse" in capsys.readouterr().out


def test_jetson_extra_keeps_cuda_python_below_the_jetpack6_driver():
    """cuda-python 13 needs a CUDA 13 driver; JetPack 6 has CUDA 12.6 (cudaErrorInsufficientDriver otherwise)."""
    import ast

    tree = ast.parse((ROOT / "setup.py").read_text())
    extras = next(ast.literal_eval(node.value) for node in ast.walk(tree)
                  if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "EXTRAS")
    assert "cuda-python>=12.6,<13" in extras["jetson"]
    assert not any(req.startswith("tensorrt") for req in extras["jetson"])  # JetPack's TensorRT, not PyPI's
