"""``asanet-rt classify`` as a user runs it, and the runtime's promise not to import torch."""
from __future__ import annotations

import json
import subprocess
import sys

import rasterio

from asanet_rt.cli import main

from runtime_helpers import TERRAMESH, TILE_ID, listing, toy_model, write_pair  # noqa: F401 - fixture


def test_classify_command(toy_model, tmp_path, capsys):
    rgb = TERRAMESH / "S2RGB" / f"{TILE_ID}.tif"
    s1 = TERRAMESH / "S1RTC" / f"{TILE_ID}.tif"
    out = tmp_path / "lc.tif"
    args = ["classify", str(rgb), str(s1), "-o", str(out), "--model", str(toy_model), "--sar-scale", "db:-25:0",
            "--tile", "128", "--overlap", "32", "--batch", "2", "--confidence", str(tmp_path / "conf.tif"),
            "--confidence-dtype", "uint8"]
    assert main(args) == 0
    captured = capsys.readouterr()
    assert f"wrote {out}" in captured.out and "Mpx/s" in captured.out and "class_0" in captured.out
    assert "tiles/s" in captured.err and "ETA" in captured.err  # the progress bar
    with rasterio.open(out) as src:
        assert src.shape == (224, 224) and src.nodata == 255
    assert (tmp_path / "lc.qml").exists() and (tmp_path / "conf.tif").exists()
    # again: refused without --overwrite, nothing touched
    before = out.read_bytes()
    assert main(args) == 2
    assert "lc.tif: exists; pass --overwrite" in capsys.readouterr().err
    assert out.read_bytes() == before
    assert main(args + ["--overwrite", "-q", "--json"]) == 0
    captured = capsys.readouterr()
    summary = json.loads(captured.out)
    assert summary["width"] == 224 and summary["tiles"] == 9 and summary["batch"] == 2
    assert "tiles/s" not in captured.err


def test_classify_command_errors_name_the_file(toy_model, tmp_path, capsys):
    opt_path, sar_path, *_ = write_pair(tmp_path, 40, 40)
    before = listing(tmp_path)
    assert main(["classify", str(opt_path), str(tmp_path / "missing.tif"), "-o", str(tmp_path / "lc.tif"),
                 "--model", str(toy_model)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("asanet-rt classify: error: ") and "missing.tif: SAR file not found" in err
    assert main(["classify", str(opt_path), str(sar_path), "-o", str(tmp_path / "lc.tif"),
                 "--model", str(tmp_path / "model.onnx")]) == 2
    assert "model.onnx: model file not found" in capsys.readouterr().err
    assert listing(tmp_path) == before


def test_runtime_does_not_import_torch():
    code = ("import sys, asanet_rt, asanet_rt.classifier, asanet_rt.scene_pipeline, asanet_rt.runtime_cli, "
            "asanet_rt.backends.onnxruntime, asanet_rt.quicklook, asanet_rt.writer, asanet_rt.scene; "
            "bad = [m for m in ('torch', 'asanet_rt.export', 'asanet_rt.engines') if m in sys.modules]; "
            "assert not bad, bad; "
            "import asanet_rt.cli; asanet_rt.cli.build_parser(); "
            "assert 'torch' not in sys.modules, 'the CLI imported torch'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_classify_on_openvino_with_a_probability_output(toy_model, tmp_path, capsys):
    import numpy as np
    import pytest

    pytest.importorskip("openvino")
    opt, sar, *_ = write_pair(tmp_path, 96, 80, seed=2)
    maps = {}
    for backend in ("ort", "openvino"):
        out = tmp_path / f"{backend}.tif"
        assert main(["classify", str(opt), str(sar), "-o", str(out), "--model", str(toy_model), "--backend", backend,
                     "--threads", "1", "--probabilities", str(tmp_path / f"p_{backend}.tif"), "--no-progress",
                     "--json"]) == 0
        summary = json.loads(capsys.readouterr().out)
        assert summary["backend"] == {"ort": "onnxruntime"}.get(backend, backend)
        assert summary["outputs"]["probabilities"] == str(tmp_path / f"p_{backend}.tif")
        with rasterio.open(tmp_path / f"p_{backend}.tif") as src:
            maps[backend] = src.read()
    np.testing.assert_allclose(maps["openvino"], maps["ort"], atol=1e-4)


def test_classify_refuses_unknown_backends_and_options_they_do_not_take(toy_model, tmp_path, capsys):
    import pytest

    opt, sar, *_ = write_pair(tmp_path, 64, 64)
    base = ["classify", str(opt), str(sar), "-o", str(tmp_path / "lc.tif"), "--model"]
    with pytest.raises(SystemExit):
        main(base + [str(toy_model), "--backend", "tflite"])
    assert "'tflite': choose auto or one of onnxruntime, openvino" in capsys.readouterr().err
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"\0" * 64)
    assert main(base + [str(engine), "--threads", "2"]) == 2
    assert "backend tensorrt does not take threads" in capsys.readouterr().err
    assert not (tmp_path / "lc.tif").exists()
