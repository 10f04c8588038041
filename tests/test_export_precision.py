"""FP16 and INT8 exports: ONNX validity, Q/DQ form per target, plugin flavour, reports, calibration checks, errors."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, numpy_helper

from asanet_rt.errors import AsanetError
from asanet_rt.export.calibration import collect_ranges, make_session, read_tiles
from asanet_rt.export.graph_utils import add_outputs, logits_tensor
from asanet_rt.export.network import build_model
from asanet_rt.export.onnx_export import ExportOptions, read_metadata
from asanet_rt.export.pipeline import PrecisionOptions, export_model
from asanet_rt.metadata import ArchSpec, ModelMetadata

from model_utils import randomise

ARCH = ArchSpec((1, 1, 1, 1), (16, 32, 64, 128), 32, 4)
OPTIONS = ExportOptions(optical_bands=("red", "green", "blue"), outputs=("logits", "classes"), batch=(1, 2),
                        tile=(64, 128))
#: Floors measured on the parity-fixture model (random weights, bias-balanced heads: many near-tied pixels) on the
#: four TerraMesh tiles at 128 px: FP16 99.9 %, INT8 96-98 % depending on target. A trained model agrees more.
FP16_FLOOR = 0.995
INT8_FLOOR = 0.95


@pytest.fixture(scope="module")
def small_model():
    model = randomise(build_model(ARCH), seed=3)
    model.metadata = ModelMetadata.build(ARCH, preset=None)
    return model


@pytest.fixture(scope="module")
def terramind():
    from runtime_helpers import TERRAMESH

    return str(TERRAMESH)


@pytest.fixture(scope="module")
def traced():
    """FP32 graphs by export options, shared by every export below (tracing is the slow step)."""
    return {}


@pytest.fixture(scope="module")
def exports(small_model, terramind, tmp_path_factory, traced):
    """One export per precision / target / flavour, shared by the tests below."""
    folder = tmp_path_factory.mktemp("precision")
    made = {}
    for key, ops, precision in [
        ("fp16", "portable", PrecisionOptions("fp16", calib=(terramind,), calib_tiles=2)),
        ("int8_trt", "portable", PrecisionOptions("int8", "tensorrt", calib=(terramind,), calib_tiles=4,
                                                  keep_fp="none")),
        ("int8_cpu", "portable", PrecisionOptions("int8", "cpu", calib=(terramind,), calib_tiles=4, keep_fp="none")),
        ("int8_cpu_plugins", "plugins", PrecisionOptions("int8", "cpu", calib=(terramind,), calib_tiles=4,
                                                         keep_fp="none")),
    ]:
        options = ExportOptions(**{**OPTIONS.__dict__, "ops": ops})
        made[key] = export_model(small_model, folder / f"{key}.onnx", options, precision, traced=traced)
    return made


def ort_logits(path, tiles):
    session = make_session(str(path))
    return [session.run(["logits"], t.feed())[0] for t in tiles]


def initializers(model):
    return {i.name: i for i in model.graph.initializer}


def test_fp16_is_typed_in_the_graph_with_float32_io(exports):
    path = exports["fp16"].path
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    assert [i.type.tensor_type.elem_type for i in model.graph.input] == [TensorProto.FLOAT] * 2
    assert model.graph.output[0].type.tensor_type.elem_type == TensorProto.FLOAT  # logits as declared
    types = {i.data_type for i in model.graph.initializer if i.data_type in (TensorProto.FLOAT, TensorProto.FLOAT16)}
    assert TensorProto.FLOAT16 in types
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    weights = initializers(model)
    assert all(weights[c.input[1]].data_type == TensorProto.FLOAT16 for c in convs if c.input[1] in weights)
    meta = read_metadata(path)
    assert meta.export["precision"] == "fp16" and meta.export["fp16_fp32_groups"] == ["layernorm", "grn"]
    # LayerNorm statistics stay float32: every LayerNormalization reads a float32 tensor
    inferred = onnx.shape_inference.infer_shapes(model)
    vi = {v.name: v.type.tensor_type.elem_type for v in inferred.graph.value_info}
    assert all(vi[n.input[0]] == TensorProto.FLOAT for n in model.graph.node if n.op_type == "LayerNormalization")


def test_fp16_agrees_with_fp32_and_reports(exports, terramind):
    report_path = exports["fp16"].path.with_name("fp16.report.json")
    report = json.loads(report_path.read_text())
    assert report["precision"] == "fp16" and report["vs_reference"]["argmax_agreement"] > 0.98
    assert report["vs_reference"]["max_abs_logit_error"] < 0.1
    assert report["fp16"]["fp32_groups"] == ["layernorm", "grn"] and report["fp16"]["nodes"]["float32"] > 0
    assert exports["fp16"].path.with_name("fp16.report.md").read_text().startswith("# Accuracy report")


def _qdq(model):
    inits = initializers(model)
    q = [n for n in model.graph.node if n.op_type == "QuantizeLinear"]
    dq = [n for n in model.graph.node if n.op_type == "DequantizeLinear"]
    return inits, q, dq


def test_int8_tensorrt_form_is_symmetric_int8(exports):
    model = onnx.load(str(exports["int8_trt"].path))
    onnx.checker.check_model(model, full_check=True)
    inits, q, dq = _qdq(model)
    assert q and dq
    for node in q:  # activations: int8, zero point 0, one scale
        zp = numpy_helper.to_array(inits[node.input[2]])
        assert zp.dtype == np.int8 and np.all(zp == 0) and zp.size == 1
    weight_dq = [n for n in dq if n.input[0] in inits]
    assert weight_dq
    for node in weight_dq:  # weights: int8 per channel (axis 0, one scale per output channel), zero point 0
        w = numpy_helper.to_array(inits[node.input[0]])
        assert w.dtype == np.int8, "TensorRT takes no int32 bias DequantizeLinear"
        scale = numpy_helper.to_array(inits[node.input[1]])
        assert scale.size == w.shape[0] and np.all(numpy_helper.to_array(inits[node.input[2]]) == 0)
    meta = read_metadata(exports["int8_trt"].path)
    assert meta.export["precision"] == "int8" and meta.export["int8_target"] == "tensorrt"
    assert meta.export["calibration"]["method"] == "percentile" and meta.export["kept_float"]


def test_int8_cpu_form_is_uint8_activations_int8_weights(exports):
    model = onnx.load(str(exports["int8_cpu"].path))
    onnx.checker.check_model(model, full_check=True)
    inits, q, dq = _qdq(model)
    zero_points = [numpy_helper.to_array(inits[n.input[2]]) for n in q]
    assert all(z.dtype == np.uint8 for z in zero_points)
    assert any(int(z) != 0 for z in zero_points)  # asymmetric: the zero point moves with the range
    weights = [numpy_helper.to_array(inits[n.input[0]]) for n in dq if n.input[0] in inits]
    assert {w.dtype for w in weights} == {np.dtype(np.int8), np.dtype(np.int32)}  # int8 weights, int32 biases
    conv_weights = [w for w in weights if w.dtype == np.int8 and w.ndim == 4]
    assert conv_weights and all(w.shape[0] > 1 for w in conv_weights)
    assert read_metadata(exports["int8_cpu"].path).export["int8_target"] == "cpu"


def test_int8_keeps_gates_and_pooling_float_and_reports_why(exports):
    report = json.loads(exports["int8_cpu"].path.with_name("int8_cpu.report.json").read_text())
    kept = report["int8"]["kept_float"]
    reasons = " ".join(k["reason"] for k in kept)
    assert "SFM gate" in reasons and "CFM gate" in reasons and "pooling-matrix" in reasons
    stems = [k["name"] for k in kept if k["reason"].startswith("stem")]
    assert len(stems) == 2 and all("downsample_layers.0" in name for name in stems)  # one per stream
    model = onnx.load(str(exports["int8_cpu"].path))
    made = {o: n for n in model.graph.node for o in n.output}
    for k in kept:  # no kept node reads a DequantizeLinear output
        node = next(n for n in model.graph.node if n.name == k["name"])
        assert all(made.get(i) is None or made[i].op_type != "DequantizeLinear" for i in node.input)
    assert report["vs_reference"]["argmax_agreement"] > 0.5 and report["int8"]["calibration"]["tiles"] == 3
    assert "## INT8" in exports["int8_cpu"].path.with_name("int8_cpu.report.md").read_text()


def test_int8_report_headline_is_held_out(exports):
    # four TerraMesh scenes give four 128 px tiles; --calib-tiles 4 asked: three calibrate, one is held out
    report = json.loads(exports["int8_cpu"].path.with_name("int8_cpu.report.json").read_text())
    ev, cal = report["evaluation"], report["int8"]["calibration"]
    assert ev["held_out"] and ev["tiles"] == 1 and "not used for calibration" in ev["source"]
    assert cal["tiles"] == 3 and len(set(cal["sources"])) == 3
    assert report["in_sample"]["tiles"] == 3 and "in-sample" in report["in_sample"]["source"]
    assert "calibrating on 3, 1 held out" in report["warnings"][0]
    md = exports["int8_cpu"].path.with_name("int8_cpu.report.md").read_text()
    assert "In-sample, on 3 tile(s)" in md and "**Warning**: --calib-tiles 4" in md
    assert "1 held-out tile(s)" in " ".join(exports["int8_cpu"].notes)


def _tile(path: str, y: int, x: int, edge: int = 32):
    from asanet_rt.export.calibration import Tile

    zeros = np.zeros((1, 3, edge, edge), np.float32)
    return Tile(zeros, zeros[:, :1], f"{path}@{y},{x}", origin=(path, y, x, edge, edge))


def test_split_calibration_holds_tiles_out_and_warns():
    from asanet_rt.export.calibration import split_calibration

    tiles = [_tile("a.tif", 0, 32 * i) for i in range(10)]
    split = split_calibration(tiles, 8)  # more than asked: the extra ones are held out, no warning
    assert len(split.calibration) == 8 and split.held_out == tiles[8:] and not split.warnings
    split = split_calibration(tiles[:4], 8)  # fewer than asked: a quarter held out, and a warning says so
    assert len(split.calibration) == 3 and len(split.held_out) == 1
    assert split.warnings == ["--calib-tiles 8: only 4 tile(s) found; calibrating on 3, 1 held out to measure "
                              "accuracy. Give more or larger scenes for a sturdier calibration"]
    split = split_calibration(tiles[:1], 8)  # one tile: calibrate on it, say that the report is in-sample
    assert split.calibration == tiles[:1] and not split.held_out and "in-sample" in split.warnings[1]
    split = split_calibration(tiles[:4], 4, hold_out=False)
    assert len(split.calibration) == 4 and not split.held_out and not split.warnings
    assert not set(map(id, split_calibration(tiles, 6).held_out)) & set(map(id, split_calibration(tiles, 6).calibration))


def test_tiles_overlap_by_file_and_window():
    a = _tile("a.tif", 0, 0)
    assert a.overlaps(_tile("a.tif", 16, 16)) and not a.overlaps(_tile("a.tif", 32, 0))
    assert not a.overlaps(_tile("b.tif", 0, 0))


def _labelled_folder(tmp_path: Path, terramind, name: str = "637U_59R_1_3.tif") -> tuple[Path, str]:
    """A folder-layout copy of one TerraMesh tile, its land cover 1..9 folded onto a 4-class model (``% 4``)."""
    import rasterio

    folder = tmp_path / "labelled"
    for sub in ("optical", "sar", "labels"):
        (folder / sub).mkdir(parents=True)
    for src, dst in (("S2RGB", "optical"), ("S1RTC", "sar")):
        shutil.copy(Path(terramind, src, name), folder / dst / name)
    with rasterio.open(f"{terramind}/LULC/{name}") as src:
        _write(folder / "labels" / name, (src.read() % 4).astype(np.uint8))
    return folder, name


def test_labelled_tiles_used_for_calibration_are_in_sample(small_model, tmp_path, terramind, traced, caplog):
    folder, name = _labelled_folder(tmp_path, terramind)
    pair = f"{folder / 'optical' / name},{folder / 'sar' / name}"
    with caplog.at_level("WARNING"):
        export_model(small_model, tmp_path / "m.onnx", OPTIONS, PrecisionOptions(
            "int8", "cpu", calib=(pair,), calib_tiles=2, keep_fp="none", labels=(str(folder),)), traced=traced)
    report = json.loads((tmp_path / "m.report.json").read_text())
    assert not report["evaluation"]["held_out"] and "in-sample" in report["evaluation"]["source"]
    assert "Evaluated on 1 in-sample tile(s)" in (tmp_path / "m.report.md").read_text()
    assert "only 1 tile(s) found" in caplog.text and "none left to hold out" in caplog.text


def test_plugin_int8_runs_and_matches_portable_int8(exports, terramind, small_model):
    model = onnx.load(str(exports["int8_cpu_plugins"].path))
    assert {n.op_type for n in model.graph.node if n.domain == "asanet"} == {"GRN", "SFM", "CFMGate", "CFMFuse"}
    # Q/DQ stay outside the fused ops: function bodies hold no quantisation
    assert not any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for f in model.functions for n in f.node)
    # the same quantisation: every convolution's input has the portable graph's scale and zero point (to float
    # rounding: the cpu form computes GELU and GRN with other ops), except the second pointwise conv of each
    # block: the cpu form feeds it GRN's output without beta (folded into its bias), the plugin flavour GRN's own
    portable_model = onnx.load(str(exports["int8_cpu"].path))
    scales_plugin, scales_portable = _input_qparams(model), _input_qparams(portable_model)
    shared = set(scales_plugin) & set(scales_portable)
    assert len(shared) >= len(scales_plugin) - 4  # CFM's stacked fc1/fc2 conv has its own name in the plugin graph
    after_grn = {n for n in shared if "/stages." in n and n.endswith("/Conv_1")}
    assert len(after_grn) == 2 * sum(ARCH.depths)
    for name in shared - after_grn:
        (scale_a, zero_a), (scale_b, zero_b) = scales_plugin[name], scales_portable[name]
        assert scale_a == pytest.approx(scale_b, rel=1e-3) and abs(zero_a - zero_b) <= 1, name
    # and close numbers: float-noise rounding flips only (no larger than INT8's own error against FP32)
    tiles = read_tiles([terramind], ("red", "green", "blue"), 128, 4)
    plugin = ort_logits(exports["int8_cpu_plugins"].path, tiles)
    portable = ort_logits(exports["int8_cpu"].path, tiles)
    report = json.loads(exports["int8_cpu"].path.with_name("int8_cpu.report.json").read_text())
    int8_error = report["vs_reference"]["mean_abs_logit_error"]
    diff = np.mean([np.abs(a - b).mean() for a, b in zip(plugin, portable)])
    agree = np.mean([(a.argmax(1) == b.argmax(1)).mean() for a, b in zip(plugin, portable)])
    assert diff < int8_error and agree > report["vs_reference"]["argmax_agreement"] - 0.02


def _input_qparams(model):
    """Conv node name -> (scale, zero point) of its activation input's DequantizeLinear."""
    inits = initializers(model)
    made = {o: n for n in model.graph.node for o in n.output}
    result = {}
    for node in model.graph.node:
        dq = made.get(node.input[0]) if node.op_type == "Conv" else None
        if dq is not None and dq.op_type == "DequantizeLinear":
            result[node.name] = (float(numpy_helper.to_array(inits[dq.input[1]])),
                                 int(numpy_helper.to_array(inits[dq.input[2]])))
    return result


def test_calibration_ranges_match_a_direct_count(small_model, exports, terramind, traced):
    """The collected statistics equal min/max computed independently on the same tiles."""
    from asanet_rt.export.pipeline import trace_fp32

    fp32 = trace_fp32(small_model, OPTIONS, traced)
    tiles = read_tiles([terramind], ("red", "green", "blue"), 96, 3)
    convs = [n for n in fp32.graph.node if n.op_type == "Conv"]
    names = [convs[0].input[0], convs[5].input[0], convs[-1].output[0]]
    session = make_session(add_outputs(fp32, names), optimize=False)
    values = [session.run(names, t.feed()) for t in tiles]
    for method in ("minmax", "percentile", "entropy"):
        cal = collect_ranges(fp32, tiles, names, method, symmetric=False)
        for i, name in enumerate(names):
            lo = min(float(v[i].min()) for v in values)
            hi = max(float(v[i].max()) for v in values)
            assert cal.observed[name] == pytest.approx((lo, hi), rel=1e-6)
            assert cal.counts[name] == sum(v[i].size for v in values)
            a, b = cal.ranges[name]
            assert lo - 1e-6 <= a <= b <= hi + 1e-6
            if method == "minmax":
                assert (a, b) == pytest.approx((lo, hi))
    sym = collect_ranges(fp32, tiles, names, "percentile", symmetric=True)
    assert all(a == -b for a, b in sym.ranges.values())


def test_keep_fp_list_and_auto(small_model, terramind, tmp_path, traced):
    options = OPTIONS
    first = export_model(small_model, tmp_path / "auto.onnx", options,
                         PrecisionOptions("int8", "tensorrt", calib=(terramind,), calib_tiles=1, keep_fp="auto"),
                         traced=traced)
    report = json.loads((tmp_path / "auto.report.json").read_text())
    assert report["int8"]["keep_fp"] == "auto" and report["int8"]["sensitivity_top"]
    name = report["int8"]["sensitivity_top"][0]["name"]
    export_model(small_model, tmp_path / "list.onnx", options,
                 PrecisionOptions("int8", "tensorrt", calib=(terramind,), calib_tiles=1, keep_fp=(name,)),
                 traced=traced)
    model = onnx.load(str(tmp_path / "list.onnx"))
    made = {o: n for n in model.graph.node for o in n.output}
    node = next(n for n in model.graph.node if n.name == name)
    assert made[node.input[0]].op_type != "DequantizeLinear"
    assert name in read_metadata(tmp_path / "list.onnx").export["kept_float"]
    with pytest.raises(AsanetError, match="no quantisable node named"):
        export_model(small_model, tmp_path / "bad.onnx", options,
                     PrecisionOptions("int8", "cpu", calib=(terramind,), calib_tiles=1, keep_fp=("nope",)),
                     traced=traced)
    assert first.metadata.export["int8_target"] == "tensorrt"


def _write(path, array, **profile):
    import rasterio

    from affine import Affine

    profile = {"crs": "EPSG:32632", "transform": Affine(10, 0, 500000, 0, -10, 6000000), **profile}
    with rasterio.open(path, "w", driver="GTiff", height=array.shape[1], width=array.shape[2], count=array.shape[0],
                       dtype=array.dtype, **profile) as dst:
        dst.write(array)


def test_bad_calibration_data_is_a_clear_error(small_model, tmp_path):
    empty = tmp_path / "empty"
    (empty / "optical").mkdir(parents=True)
    (empty / "sar").mkdir()
    run = lambda calib: export_model(small_model, tmp_path / "m.onnx", OPTIONS,  # noqa: E731
                                     PrecisionOptions("int8", "cpu", calib=(str(calib),), keep_fp="none"))
    with pytest.raises(AsanetError, match="empty"):
        run(empty)
    with pytest.raises(AsanetError, match="no tiles found"):
        run(tmp_path)
    with pytest.raises(AsanetError, match="calibration imagery"):
        export_model(small_model, tmp_path / "m.onnx", OPTIONS, PrecisionOptions("int8", "cpu"))
    bands = tmp_path / "bands"
    (bands / "optical").mkdir(parents=True)
    (bands / "sar").mkdir()
    _write(bands / "optical" / "a.tif", np.zeros((4, 64, 64), np.uint8))
    _write(bands / "sar" / "a.tif", np.zeros((1, 64, 64), np.float32))
    with pytest.raises(AsanetError, match=r"a\.tif: optical raster has 4 band"):
        run(bands)
    _write(bands / "optical" / "a.tif", np.zeros((3, 64, 64), np.uint8))
    _write(bands / "sar" / "a.tif", np.zeros((5, 64, 64), np.float32))
    with pytest.raises(AsanetError, match=r"a\.tif: SAR raster has 5 bands"):
        run(bands)
    assert not (tmp_path / "m.onnx").exists()


def test_labels_give_miou_in_the_report(small_model, tmp_path, terramind, traced):
    # labels in the model's class indices: TerraMesh land cover 1..9 folded onto this 4-class model
    folder, name = _labelled_folder(tmp_path, terramind)
    export_model(small_model, tmp_path / "m.onnx", OPTIONS, PrecisionOptions("fp16", labels=(str(folder),)),
                 traced=traced)
    report = json.loads((tmp_path / "m.report.json").read_text())
    seg = report["segmentation"]
    assert set(seg) == {"reference", "fp16"} and 0 <= seg["fp16"]["mIoU"] <= 1
    assert set(seg["fp16"]["per_class"]) == set(small_model.metadata.classes)
    assert "mIoU" in (tmp_path / "m.report.md").read_text()


def test_fixture_model_agreement_floors(parity_fixture, terramind, tmp_path):
    """FP16 and INT8 on the official-code fixture model, real imagery, against the floors above."""
    try:
        from asanet_rt.export.checkpoint import load_checkpoint
        model = load_checkpoint(parity_fixture / "checkpoint.pth")
    except ImportError as exc:
        pytest.skip(f"checkpoint loading unavailable here ({exc})")
    options, cache = ExportOptions(outputs=("logits",), tile=(64, 128)), {}
    fp16 = export_model(model, tmp_path / "fp16.onnx", options, PrecisionOptions("fp16", calib=(terramind,)),
                        traced=cache)
    int8 = export_model(model, tmp_path / "int8.onnx", options,
                        PrecisionOptions("int8", "cpu", calib=(terramind,), keep_fp="none"), traced=cache)
    agree16 = json.loads((tmp_path / "fp16.report.json").read_text())["vs_reference"]["argmax_agreement"]
    agree8 = json.loads((tmp_path / "int8.report.json").read_text())["vs_reference"]["argmax_agreement"]
    assert agree16 >= FP16_FLOOR and agree8 >= INT8_FLOOR, (agree16, agree8)
    assert fp16.metadata.export["precision"] == "fp16" and int8.metadata.export["precision"] == "int8"


def test_cli_export_int8(small_model, terramind, tmp_path, capsys):
    try:
        import asanet_rt.export.checkpoint  # noqa: F401
    except ImportError as exc:
        pytest.skip(f"checkpoint loading unavailable here ({exc})")
    import torch

    from asanet_rt.cli import main

    ckpt = tmp_path / "small.pth"
    torch.save({"state_dict": small_model.state_dict()}, ckpt)
    out = tmp_path / "m.onnx"
    code = main(["export", str(ckpt), "-o", str(out), "--tile", "64:128", "--precision", "int8", "--int8-target",
                 "cpu", "--calib", terramind, "--calib-tiles", "2", "--keep-fp", "none", "--calib-method", "minmax"])
    assert code == 0, capsys.readouterr().err
    text = capsys.readouterr().out
    assert "int8 for cpu" in text and "argmax agreement" in text
    assert out.with_name("m.report.json").exists() and read_metadata(out).export["calibration"]["method"] == "minmax"
    assert logits_tensor(onnx.load(str(out)))


def test_int8_targets_are_validated(terramind):
    PrecisionOptions("int8", "openvino", calib=(terramind,)).validate()
    with pytest.raises(AsanetError, match="choose tensorrt, cpu or openvino"):
        PrecisionOptions("int8", "gpu", calib=(terramind,)).validate()
