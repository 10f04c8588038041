"""ONNX export: parity with the torch network over the tile range, both op flavours, metadata, bad input."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from asanet_rt.errors import AsanetError
from asanet_rt.export.graph_ops import adaptive_avg_pool2d_exact
from asanet_rt.export.network import build_model
from asanet_rt.export.onnx_export import ExportOptions, export_onnx
from asanet_rt.metadata import METADATA_KEY, ArchSpec, ModelMetadata

from model_utils import randomise

ARCH = ArchSpec((1, 1, 1, 1), (16, 32, 48, 64), 24, 5)


@pytest.fixture(scope="module")
def small_model():
    model = randomise(build_model(ARCH), seed=7)
    model.metadata = ModelMetadata.build(ARCH, preset=None)
    return model


def session(path) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def raw_pair(n: int, h: int, w: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return (rng.uniform(0, 255, (n, 3, h, w)).astype(np.float32),
            rng.uniform(0, 255, (n, 1, h, w)).astype(np.float32))


def torch_reference(model, meta: ModelMetadata, optical: np.ndarray, sar: np.ndarray,
                    bands: tuple[str, ...]) -> np.ndarray:
    """Pre-process by hand (band order, normalisation, SAR replication) and run the eager network."""
    perm = [bands.index(name) for name in meta.optical_channels]
    opt = (optical[:, perm] - np.array(meta.optical_mean, np.float32).reshape(1, 3, 1, 1)) / np.array(
        meta.optical_std, np.float32).reshape(1, 3, 1, 1)
    s = np.repeat((sar - np.float32(meta.sar_mean[0])) / np.float32(meta.sar_std[0]), 3, axis=1)
    with torch.no_grad():
        return model(torch.from_numpy(opt), torch.from_numpy(s)).numpy()


@pytest.mark.parametrize("h,w", [(32, 32), (16, 16), (4, 5), (6, 7), (2, 3), (13, 29), (1, 1)])
def test_exact_adaptive_pool_matches_torch(h, w):
    x = torch.randn(2, 3, h, w)
    for bins in (1, 2, 3, 6):
        torch.testing.assert_close(adaptive_avg_pool2d_exact(x, bins), torch.nn.functional.adaptive_avg_pool2d(
            x, bins), atol=1e-6, rtol=1e-6)


@pytest.fixture(scope="module")
def exported(small_model, tmp_path_factory):
    folder = tmp_path_factory.mktemp("onnx")
    paths = {}
    for ops in ("portable", "plugins"):
        options = ExportOptions(optical_bands=("red", "green", "blue"), outputs=("logits", "classes", "confidence",
                                                                                   "probabilities"),
                                batch=(1, 4), tile=(32, 512), ops=ops)
        paths[ops] = export_onnx(small_model, folder / f"{ops}.onnx", options).path
    return paths


# 512 puts a 16x16 map into the PPM: 3 and 6 bins are uneven there; 96x160 and 224x64 are non-square.
@pytest.mark.parametrize("n,h,w", [(1, 32, 32), (2, 96, 160), (1, 224, 64), (1, 512, 512)])
def test_raw_export_matches_torch_over_tile_range(small_model, exported, n, h, w):
    optical, sar = raw_pair(n, h, w, seed=h + w)
    expected = torch_reference(small_model, small_model.metadata, optical, sar, ("red", "green", "blue"))
    logits, classes, confidence, probs = session(exported["portable"]).run(None, {"optical": optical, "sar": sar})
    np.testing.assert_allclose(logits, expected, atol=1e-4, rtol=0)
    assert classes.dtype == np.uint8 and classes.shape == (n, h, w)
    top2 = np.sort(expected, axis=1)[:, -2:]
    clear = (top2[:, 1] - top2[:, 0]) > 1e-4
    assert (classes == expected.argmax(1))[clear].all()
    np.testing.assert_allclose(probs.sum(1), 1, atol=1e-5)
    np.testing.assert_allclose(confidence, probs.max(1), atol=1e-6)


@pytest.mark.parametrize("n,h,w", [(1, 64, 96), (3, 128, 128)])
def test_plugin_flavour_matches_portable(exported, n, h, w):
    optical, sar = raw_pair(n, h, w, seed=3)
    portable = session(exported["portable"]).run(["logits"], {"optical": optical, "sar": sar})[0]
    plugins = session(exported["plugins"]).run(["logits"], {"optical": optical, "sar": sar})[0]
    np.testing.assert_allclose(plugins, portable, atol=1e-4, rtol=0)


def test_plugin_flavour_has_custom_ops_with_function_bodies(exported):
    model = onnx.load(str(exported["plugins"]))
    used = {n.op_type for n in model.graph.node if n.domain == "asanet"}
    assert used == {"GRN", "SFM", "CFMGate", "CFMFuse"}
    assert {f.name for f in model.functions if f.domain == "asanet"} == used
    portable = onnx.load(str(exported["portable"]))
    assert not any(n.domain for n in portable.graph.node) and not portable.functions


def test_normalized_input_matches_network(small_model, tmp_path):
    path = export_onnx(small_model, tmp_path / "n.onnx", ExportOptions(input="normalized", outputs=("logits",),
                                                                       tile=(32, 256))).path
    rng = np.random.default_rng(5)
    opt, sar = rng.normal(size=(1, 3, 64, 96)).astype(np.float32), rng.normal(size=(1, 3, 64, 96)).astype(
        np.float32)
    with torch.no_grad():
        expected = small_model(torch.from_numpy(opt), torch.from_numpy(sar)).numpy()
    got = session(path).run(None, {"optical": opt, "sar": sar})[0]
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)


def test_metadata_readable_without_torch(exported):
    code = ("import sys, onnx; from asanet_rt.metadata import ModelMetadata, METADATA_KEY; "
            f"m = onnx.load({str(exported['portable'])!r}); "
            "meta = ModelMetadata.from_json({p.key: p.value for p in m.metadata_props}[METADATA_KEY]); "
            "assert 'torch' not in sys.modules; print(meta.export['tile'], meta.export['optical_bands'])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[32, 512] ['red', 'green', 'blue']"


def test_graph_passes_checker_with_dynamic_shapes(exported):
    model = onnx.load(str(exported["portable"]))
    onnx.checker.check_model(model, full_check=True)
    dims = [d.dim_param or d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", 3, "height", "width"]
    assert METADATA_KEY in {p.key for p in model.metadata_props}


@pytest.mark.parametrize("options,needle", [
    (ExportOptions(tile=(250, 512)), "multiples of 32"),
    (ExportOptions(tile=(512, 256)), "min <= max"),
    (ExportOptions(outputs=("logits", "masks")), "choose one or more"),
    (ExportOptions(optical_bands=("red", "green", "nir")), "must name each"),
    (ExportOptions(batch=(0, 4)), "1 <= min"),
])
def test_bad_options_are_clear_errors(small_model, tmp_path, options, needle):
    with pytest.raises(AsanetError, match=needle):
        export_onnx(small_model, tmp_path / "bad.onnx", options)
    assert list(tmp_path.iterdir()) == []


def test_missing_output_folder_leaves_nothing(small_model, tmp_path):
    with pytest.raises(AsanetError, match="does not exist"):
        export_onnx(small_model, tmp_path / "nope" / "m.onnx", ExportOptions(tile=(32, 64)))


def test_existing_output_needs_overwrite(small_model, tmp_path):
    target = tmp_path / "m.onnx"
    target.write_bytes(b"keep me")
    with pytest.raises(AsanetError, match="--overwrite"):
        export_onnx(small_model, target, ExportOptions(tile=(32, 64)), overwrite=False)
    assert target.read_bytes() == b"keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]
