"""Real TensorRT-RTX engines from real (small) ASANet exports, on CPU: fp32, fp16, int8 and the plugin flavour.

This runs the very builder code that TensorRT 10/11 runs (one code path over the common API), on the graphs users
export: dynamic pooling matrices, NCHW blocks, Q/DQ, casts, and the asanet ops' local functions.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from asanet_rt.cli import main
from asanet_rt.export.network import build_model
from asanet_rt.metadata import ArchSpec

from model_utils import randomise

pytest.importorskip("tensorrt_rtx", reason="needs the TensorRT-RTX builder (pip install -e '.[rtx]')")
CALIB = Path(__file__).parent / "data" / "terramind"  # S2RGB/ + S1RTC/: real Sentinel-2/-1 tiles


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    arch = ArchSpec((1, 1, 1, 1), (16, 32, 48, 64), 24, 4)
    path = tmp_path_factory.mktemp("ckpt") / "small.pth"
    torch.save(randomise(build_model(arch), seed=11).state_dict(), path)
    return path


@pytest.mark.parametrize("precision,ops,extra", [
    ("fp32", "portable", []),
    ("fp16", "portable", []),
    ("int8", "portable", ["--int8-target", "tensorrt", "--calib", str(CALIB), "--calib-tiles", "2",
                          "--calib-method", "minmax", "--keep-fp", "none"]),
    ("fp32", "plugins", []),
])
def test_rtx_engine_from_asanet_export(checkpoint, tmp_path, capsys, precision, ops, extra):
    onnx_path, engine = tmp_path / "m.onnx", tmp_path / "m.engine"
    assert main(["export", str(checkpoint), "-o", str(onnx_path), "--tile", "64:256", "--batch", "1:2",
                 "--input-bands", "red,green,blue", "--precision", precision, "--ops", ops, *extra]) == 0
    assert main(["build", str(onnx_path), "-o", str(engine), "--backend", "tensorrt_rtx", "--tile", "64:128:256",
                 "--batch", "1:1:2", "-q"]) == 0
    assert engine.stat().st_size > 500_000
    capsys.readouterr()
    assert main(["inspect", str(engine), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["backend"] == "tensorrt_rtx" and info["precision"] == precision
    profile = info["profiles"][0]["optical"]
    assert (profile["min"], profile["opt"], profile["max"]) == ([1, 3, 64, 64], [1, 3, 128, 128], [2, 3, 256, 256])
    assert info["profiles"][0]["sar"]["max"] == [2, 1, 256, 256]
    meta = json.dumps(info)
    assert '"class_3"' in meta and '"optical_bands": ["red", "green", "blue"]' in meta
