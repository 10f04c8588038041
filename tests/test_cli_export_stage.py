"""The export stage's subcommands as a user runs them: info and export, plus the torch-free import promise."""
from __future__ import annotations

import json
import subprocess
import sys

import onnx
import pytest
import torch

from asanet_rt.cli import main
from asanet_rt.export.network import build_model
from asanet_rt.metadata import ArchSpec

from model_utils import write_small_checkpoint


@pytest.fixture(scope="module")
def small_checkpoint(tmp_path_factory):
    return write_small_checkpoint(tmp_path_factory.mktemp("ckpt") / "small.pth")


def test_info_official_fixture(parity_fixture, capsys):
    assert main(["info", str(parity_fixture / "checkpoint.pth")]) == 0
    out = capsys.readouterr().out
    assert "depths 1-1-1-1, widths 32-64-128-256, decoder 48" in out
    # 4,230,018 parameters in the file, 27,821 of them in the auxiliary head (fixture README)
    assert "4,202,197 for inference, 4,230,018 with the auxiliary head" in out
    assert "buildings" in out and "blue, green, red" in out


def test_info_json_tiny_cost(tmp_path, capsys):
    path = tmp_path / "tiny.pth"
    torch.save(build_model(ArchSpec.from_name("tiny", 7)).state_dict(), path)
    assert main(["info", str(path), "--dataset", "whu-opt-sar", "--tile", "256", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["params"] == 82_461_623
    assert 25.0 < info["gmacs"] < 26.5  # the paper quotes 25 "GFLOPs" (MACs) at 256x256
    assert info["metadata"]["classes"][0] == "farmland"


def test_info_bad_file_is_a_clear_error(tmp_path, capsys):
    bad = tmp_path / "notes.pth"
    bad.write_text("hello")
    assert main(["info", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "notes.pth" in err and "error" in err


def test_export_command_writes_onnx(small_checkpoint, tmp_path, capsys):
    out = tmp_path / "m.onnx"
    assert main(["export", str(small_checkpoint), "-o", str(out), "--tile", "32:128", "--batch", "1:2",
                 "--outputs", "classes,confidence", "--input-bands", "red,green,blue"]) == 0
    assert "wrote" in capsys.readouterr().out
    model = onnx.load(str(out))
    assert [o.name for o in model.graph.output] == ["classes", "confidence"]
    assert main(["export", str(small_checkpoint), "-o", str(out), "--tile", "32:128"]) == 2
    assert "--overwrite" in capsys.readouterr().err


def test_export_bad_tile_range(small_checkpoint, tmp_path, capsys):
    assert main(["export", str(small_checkpoint), "-o", str(tmp_path / "m.onnx"), "--tile", "100:200"]) == 2
    assert "multiples of 32" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_runtime_package_and_cli_help_do_not_import_torch():
    code = ("import sys, asanet_rt, asanet_rt.cli; "
            "asanet_rt.cli.build_parser(); "
            "assert 'torch' not in sys.modules, 'torch was imported'")
    subprocess.run([sys.executable, "-c", code], check=True)
