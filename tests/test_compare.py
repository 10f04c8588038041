"""``asanet-rt compare``: the same inputs through two artifacts, Polygraphy statistics, agreement, worst pixels."""
from __future__ import annotations

import json

import numpy as np
import pytest

from asanet_rt.cli import main
from asanet_rt.errors import AsanetError
from asanet_rt.export.compare import compare_artifacts, make_inputs
from asanet_rt.export.network import build_model
from asanet_rt.export.onnx_export import ExportOptions, read_metadata
from asanet_rt.export.pipeline import PrecisionOptions, export_model
from asanet_rt.metadata import ArchSpec, ModelMetadata

from model_utils import randomise

ARCH = ArchSpec((1, 1, 1, 1), (16, 32, 64, 128), 32, 4)


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory):
    model = randomise(build_model(ARCH), seed=5)
    model.metadata = ModelMetadata.build(ARCH, preset=None)
    folder = tmp_path_factory.mktemp("compare")
    options = ExportOptions(optical_bands=("red", "green", "blue"), outputs=("logits", "probabilities"),
                            batch=(1, 2), tile=(64, 128))
    cache: dict = {}
    paths = {}
    for precision in ("fp32", "fp16"):
        paths[precision] = export_model(model, folder / f"{precision}.onnx", options, PrecisionOptions(precision),
                                        traced=cache, report=False).path
    normalized = ExportOptions(input="normalized", outputs=("classes",), batch=(1, 2), tile=(64, 128))
    paths["normalized"] = export_model(model, folder / "normalized.onnx", normalized, report=False).path
    return model, paths


def test_torch_network_against_its_onnx(artifacts):
    model, paths = artifacts
    result = compare_artifacts(model, paths["fp32"], tile=96, batch=2, seed=1, atol=1e-4)
    assert result.passed and [o.name for o in result.outputs] == ["logits", "probabilities"]
    logits = result.outputs[0]
    assert logits.shape == (2, 4, 96, 96) and logits.max_abs < 1e-4 and logits.argmax_agreement == 1.0
    # a checkpoint follows the graph's input contract: normalised inputs, classes only
    normalized = compare_artifacts(paths["normalized"], model, tile=64, seed=2)
    assert [o.name for o in normalized.outputs] == ["classes"] and normalized.outputs[0].argmax_agreement == 1.0


def test_fp32_against_fp16_statistics_and_worst_pixels(artifacts):
    _, paths = artifacts
    result = compare_artifacts(paths["fp32"], paths["fp16"], tile=64, seed=3, worst=4)
    logits = result.outputs[0]
    assert 0 < logits.mean_abs <= logits.median_abs * 10 and logits.mean_abs <= logits.max_abs < 0.1
    assert logits.passed is None and result.passed  # no tolerance asked: report only
    assert len(logits.worst) == 4 and logits.worst[0]["abs_diff"] == pytest.approx(logits.max_abs, rel=1e-5)
    assert logits.argmax_agreement > 0.97
    strict = compare_artifacts(paths["fp32"], paths["fp16"], tile=64, seed=3, atol=1e-7, rtol=1e-7)
    assert not strict.passed and strict.outputs[0].passed is False


def test_cli_compare_json_inputs_file_and_exit_codes(artifacts, tmp_path, capsys):
    _, paths = artifacts
    meta = read_metadata(paths["fp32"])
    inputs = tmp_path / "inputs.npz"
    np.savez(inputs, **make_inputs(meta, tile=64, batch=1, seed=9))
    assert main(["compare", str(paths["fp32"]), str(paths["fp16"]), "--inputs", str(inputs), "--json",
                 "--outputs", "probabilities"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["inputs"].startswith(str(inputs)) and data["outputs"][0]["name"] == "probabilities"
    assert {"max_abs", "mean_abs", "max_rel", "argmax_agreement", "worst"} <= set(data["outputs"][0])
    assert main(["compare", str(paths["fp32"]), str(paths["fp16"]), "--tile", "64", "--atol", "0",
                 "--rtol", "0"]) == 1
    assert "FAIL" in capsys.readouterr().out
    bad = tmp_path / "bad.npz"
    np.savez(bad, image=np.zeros(3))
    assert main(["compare", str(paths["fp32"]), str(paths["fp16"]), "--inputs", str(bad)]) == 2
    assert "bad.npz" in capsys.readouterr().err


def test_compare_errors_name_the_problem(artifacts, tmp_path):
    _, paths = artifacts
    with pytest.raises(AsanetError, match="missing.onnx"):
        compare_artifacts(paths["fp32"], tmp_path / "missing.onnx")
    with pytest.raises(AsanetError, match="share no output"):
        compare_artifacts(paths["fp32"], paths["normalized"])
    with pytest.raises(AsanetError, match="not produced by both"):
        compare_artifacts(paths["fp32"], paths["fp16"], outputs=["classes"])


def test_sides_are_runners_checkpoint_file_included(artifacts, tmp_path):
    """Both sides run through the one Runner interface: an in-memory network via TorchRunner.from_model (following
    the graph's contract), a checkpoint file the same way, ONNX through the registry."""
    import torch

    from asanet_rt.backends import Runner
    from asanet_rt.export.compare import open_side
    from asanet_rt.export.torch_runner import TorchRunner

    model, paths = artifacts
    graph = open_side(paths["normalized"])
    torch_side = open_side(model, like=graph.metadata)
    try:
        assert isinstance(graph, Runner) and isinstance(torch_side, TorchRunner)
        assert torch_side.inputs.kind == "normalized" and torch_side.backend == "torch"
        assert set(torch_side.output_names) == {"logits", "probabilities", "classes", "confidence"}
        feed = make_inputs(graph.metadata, tile=64, seed=4)
        assert feed["sar"].shape[1] == 3  # normalised input: SAR replicated, as the graph takes it
        out = torch_side.infer(feed, ["classes"])
        assert list(out) == ["classes"] and out["classes"].shape == (1, 64, 64)
        np.testing.assert_array_equal(out["classes"], graph.infer(feed)["classes"])
    finally:
        graph.close()
        torch_side.close()
    raw = TorchRunner.from_model(model)
    assert raw.inputs.kind == "raw" and raw.inputs.optical_bands == tuple(model.metadata.optical_channels)
    ckpt = tmp_path / "net.pth"
    torch.save(model.state_dict(), ckpt)
    result = compare_artifacts(ckpt, paths["fp32"], tile=64, seed=6, atol=1e-4)
    assert result.a == str(ckpt) and result.passed and result.outputs[0].argmax_agreement == 1.0
