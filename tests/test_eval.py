"""``asanet-rt eval``: layouts, label mappings, hand-computed metrics with the toy model, errors that name the file."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine

from asanet_rt.cli import main
from asanet_rt.errors import AsanetError
from asanet_rt.evaluate import evaluate, find_samples, plot_confusion, reduce_zero_label, whu_label_map
from toy_models import make_toy_onnx, toy_reference

K = 4  # toy classes
TRANSFORM = Affine(10.0, 0.0, 500000.0, 0.0, -10.0, 6000000.0)


def write_tif(path: Path, array: np.ndarray) -> Path:
    """A plain (un-georeferenced) GeoTIFF; (H, W) arrays become one band."""
    array = np.asarray(array)
    array = array[None] if array.ndim == 2 else array
    path.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(path, "w", driver="GTiff", width=array.shape[2], height=array.shape[1], count=array.shape[0],
                       dtype=array.dtype.name, crs="EPSG:32632", transform=TRANSFORM) as dst:
        dst.write(array)
    return path


def images(h: int, w: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """uint8 optical (3, H, W) and SAR (1, H, W) of random 8x8 blocks (so the toy predicts every class)."""
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, 256, (4, h // 8, w // 8), dtype=np.uint8)
    pixels = np.repeat(np.repeat(blocks, 8, axis=1), 8, axis=2)
    return pixels[:3], pixels[3:]


def toy_classes(optical: np.ndarray, sar: np.ndarray, classes: int = K) -> np.ndarray:
    """What the toy model predicts for one image stored as red, green, blue (its input order)."""
    logits = toy_reference(optical[None].astype(np.float32), sar[None].astype(np.float32), num_classes=classes)
    return logits[0].argmax(axis=0)


@pytest.fixture(scope="module")
def toy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_toy_onnx(tmp_path_factory.mktemp("eval_models") / "toy.onnx", num_classes=K)


@pytest.fixture(scope="module")
def toy7(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_toy_onnx(tmp_path_factory.mktemp("eval_models7") / "toy7.onnx", num_classes=7,
                         outputs=("classes",))


@pytest.fixture(scope="module")
def folder_case(tmp_path_factory: pytest.TempPathFactory):
    """Two images; 'a' labelled with the model's own classes, 'b' with every class shifted by one.

    Besides: 20 pixels of 'a' carry the ignore index and 5 a stray value (9), so neither counts.
    """
    root = tmp_path_factory.mktemp("folder_ds")
    preds, labels = {}, {}
    for name, (h, w), seed in (("a", (32, 64), 1), ("b", (64, 32), 2)):
        optical, sar = images(h, w, seed)
        write_tif(root / "optical" / f"{name}.tif", optical)
        write_tif(root / "sar" / f"{name}.tif", sar)
        pred = toy_classes(optical, sar)
        label = pred.copy() if name == "a" else (pred + 1) % K
        if name == "a":
            label.flat[:20] = 255
            label.flat[20:25] = 9
        write_tif(root / "label" / f"{name}.tif", label.astype(np.uint8))
        preds[name], labels[name] = pred, label
    return root, preds, labels


def test_folder_metrics_equal_hand_computed(toy, folder_case, tmp_path):
    root, preds, labels = folder_case
    result = evaluate(toy, root, layout="folder", batch=2, threads=1)
    # Hand count: image a is right where labelled (25 pixels skipped), image b is wrong everywhere,
    # with true class (c + 1) % K where the model says c.
    a_valid = np.ones(preds["a"].size, bool)
    a_valid[:25] = False
    n_a = np.bincount(preds["a"].ravel()[a_valid], minlength=K)  # correct pixels per class
    n_b = np.bincount(preds["b"].ravel(), minlength=K)  # predicted c, true c + 1
    true_c = n_a + np.roll(n_b, 1)  # class c is true for b's pixels predicted c - 1
    pred_c = n_a + n_b
    assert (n_a > 0).all() and (n_b > 0).sum() >= 3  # every class predicted: no degenerate NaN case
    iou = n_a / (true_c + pred_c - n_a)
    acc = n_a / true_c
    prec = n_a / pred_c
    total = n_a.sum() + n_b.sum()
    oa = n_a.sum() / total
    pe = (true_c * pred_c).sum() / total ** 2
    s = result.scores
    np.testing.assert_allclose(s.iou, iou, rtol=1e-12)
    np.testing.assert_allclose(s.f1, 2 * prec * acc / (prec + acc), rtol=1e-12)
    assert s.miou == pytest.approx(iou.mean(), rel=1e-12)
    assert s.overall_accuracy == pytest.approx(oa, rel=1e-12)
    assert s.kappa == pytest.approx((oa - pe) / (1 - pe), rel=1e-12)
    expected = np.diag(n_a)
    for c in range(K):
        expected[(c + 1) % K, c] += n_b[c]
    np.testing.assert_array_equal(s.confusion, expected)
    assert result.dataset["images"] == 2
    assert result.dataset["labelled_pixels"] == total
    assert result.dataset["ignored_pixels"] == 25
    assert result.warnings and "9 (5 px)" in result.warnings[0] and "a.tif" in result.warnings[0]

    # The CLI writes the same numbers as JSON, and a confusion-matrix PNG.
    out, png = tmp_path / "eval.json", tmp_path / "cm.png"
    assert main(["eval", str(toy), "--data", str(root), "--json-out", str(out), "--plot", str(png), "--threads", "1",
                 "-q"]) == 0
    data = json.loads(out.read_text())
    assert data["schema_version"] == 1 and data["kind"] == "asanet-rt.eval"
    assert data["dataset"]["layout"] == "folder"
    assert data["metrics"]["mIoU"] == pytest.approx(iou.mean(), abs=1e-6)
    assert data["metrics"]["confusion_matrix"] == expected.tolist()
    assert set(data["metrics"]["per_class"]) == {f"class_{i}" for i in range(K)}
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _rewritten(root, dest, change):
    """A copy of the folder-layout dataset at ``root`` in ``dest``, each raster passed through
    ``change(subfolder, data)``."""
    for sub in ("optical", "sar", "label"):
        for f in (root / sub).iterdir():
            with rasterio.open(f) as src:
                data = src.read()
            write_tif(dest / sub / f.name, change(sub, data))
    return dest


def test_band_order_follows_colour_names(toy, folder_case, tmp_path):
    """Stored B, G, R with --optical-bands 3,2,1 (the model takes red, green, blue) scores like the original."""
    root, preds, _ = folder_case
    swapped = _rewritten(root, tmp_path / "swapped", lambda sub, data: data[::-1] if sub == "optical" else data)
    ref = evaluate(toy, root, threads=1)
    same = evaluate(toy, swapped, threads=1, optical_bands=(3, 2, 1))
    np.testing.assert_array_equal(ref.scores.confusion, same.scores.confusion)
    differs = evaluate(toy, swapped, threads=1)
    assert not np.array_equal(ref.scores.confusion, differs.scores.confusion)


def test_whu_label_mapping():
    stored = np.array([0, 10, 20, 30, 40, 50, 60, 70, 1, 2, 7, 8, 15, 255, 80], np.uint8)
    np.testing.assert_array_equal(whu_label_map(stored),
                                  [255, 0, 1, 2, 3, 4, 5, 6, 0, 1, 6, 255, 255, 255, 255])
    np.testing.assert_array_equal(whu_label_map(np.array([[10, 0], [70, 40]], np.int32)), [[0, 255], [6, 3]])
    np.testing.assert_array_equal(reduce_zero_label(np.array([0, 1, 5, 255])), [255, 0, 4, 255])


def test_whu_layout_crop512_and_release(toy7, tmp_path):
    """The official crop512 tree (labels 1..7) and the release's labels (10..70) both score perfectly."""
    optical, sar = images(32, 32, 5)
    pred = toy_classes(optical, sar, classes=7)
    for encoding, scale in (("crop512", 1), ("release", 10)):
        root = tmp_path / encoding
        split = root / "test"
        write_tif(split / "opt_dir" / "t_000.tif", optical)
        write_tif(split / "sar_dir" / "t_000.tif", sar)
        label = ((pred + 1) * scale).astype(np.uint8)
        label[0, :] = 0  # no label -> ignored
        write_tif(split / "ann_dir" / "t_000.tif", label)
        write_tif(root / "train" / "opt_dir" / "x.tif", optical)  # the other split is not scored
        result = evaluate(toy7, root, threads=1)
        assert result.dataset["layout"] == "whu-opt-sar" and result.dataset["split"] == "test"
        assert result.dataset["images"] == 1 and result.dataset["ignored_pixels"] == 32
        assert result.scores.overall_accuracy == 1.0 and not result.warnings
        assert result.scores.class_names[0] == "class_0"


def test_whu_layout_needs_seven_classes(toy, tmp_path):
    split = tmp_path / "test"
    optical, sar = images(32, 32, 0)
    write_tif(split / "opt_dir" / "a.tif", optical)
    write_tif(split / "sar_dir" / "a.tif", sar)
    write_tif(split / "ann_dir" / "a.tif", np.ones((32, 32), np.uint8))
    with pytest.raises(AsanetError, match="predicts 4 classes but whu-opt-sar has 7"):
        evaluate(toy, tmp_path, threads=1)


def test_pie_and_ddhr_layouts_use_the_name_list(tmp_path):
    pie = tmp_path / "pie"
    for name in ("1", "2", "3"):
        for sub in ("rgb", "sar", "label"):
            (pie / sub).mkdir(parents=True, exist_ok=True)
            (pie / sub / f"{name}.tif").write_bytes(b"")
    (pie / "val.txt").write_text("3\n1\n")
    layout, samples = find_samples(pie)
    assert layout == "pie-rgb-sar" and [s.name for s in samples] == ["3", "1"]
    layout, samples = find_samples(pie, split="train")  # no train.txt: every image
    assert [s.name for s in samples] == ["1", "2", "3"]

    ddhr = tmp_path / "korea"
    for sub, suffix in (("GF2", ".jpg"), ("GF3", ".jpg"), ("label", ".png")):
        (ddhr / sub).mkdir(parents=True)
        for name in ("100", "101"):
            (ddhr / sub / f"{name}{suffix}").write_bytes(b"")
    (ddhr / "val.txt").write_text("101\n")
    layout, samples = find_samples(ddhr)
    assert layout == "ddhr-sk" and samples[0].optical.name == "101.jpg" and samples[0].label.name == "101.png"
    (ddhr / "val.txt").write_text("101\n102\n")
    with pytest.raises(AsanetError, match=r"102\.jpg: listed in .*val\.txt but not found"):
        find_samples(ddhr)


def test_missing_data_dir_and_no_pairs(toy, tmp_path):
    with pytest.raises(AsanetError, match=r"nowhere: data folder not found"):
        evaluate(toy, tmp_path / "nowhere")
    with pytest.raises(AsanetError, match="no dataset layout recognised"):
        find_samples(tmp_path)
    for sub in ("optical", "sar", "label"):
        (tmp_path / sub).mkdir()
    with pytest.raises(AsanetError, match=r"optical: no images found"):
        find_samples(tmp_path)
    optical, sar = images(32, 32, 0)
    write_tif(tmp_path / "optical" / "a.tif", optical)
    with pytest.raises(AsanetError, match=r"a\.tif: no SAR image of the same name"):
        find_samples(tmp_path)
    write_tif(tmp_path / "sar" / "a.tif", sar)
    with pytest.raises(AsanetError, match=r"a\.tif: no label of the same name"):
        find_samples(tmp_path)
    # The CLI reports it as an error naming the folder, exit status 2.
    assert main(["eval", str(toy), "--data", str(tmp_path / "nowhere")]) == 2


def test_size_mismatch_names_the_file(toy, tmp_path):
    optical, sar = images(32, 32, 0)
    write_tif(tmp_path / "optical" / "a.tif", optical)
    write_tif(tmp_path / "sar" / "a.tif", sar)
    write_tif(tmp_path / "label" / "a.tif", np.zeros((32, 64), np.uint8))
    with pytest.raises(AsanetError, match=r"label[/\\]a\.tif: label is 64 x 32 px but the optical image a\.tif is "
                                          r"32 x 32 px"):
        evaluate(toy, tmp_path, threads=1)
    write_tif(tmp_path / "label" / "a.tif", np.zeros((32, 32), np.uint8))
    write_tif(tmp_path / "sar" / "a.tif", np.zeros((1, 16, 32), np.uint8))
    with pytest.raises(AsanetError, match=r"sar[/\\]a\.tif: SAR is 32 x 16 px"):
        evaluate(toy, tmp_path, threads=1)
    write_tif(tmp_path / "sar" / "a.tif", np.zeros((1, 32, 32), np.uint16))
    with pytest.raises(AsanetError, match=r"a\.tif: uint16 data needs an explicit --sar-scale"):
        evaluate(toy, tmp_path, threads=1)
    assert evaluate(toy, tmp_path, threads=1, sar_scale="linear:0:1000").dataset["images"] == 1


def test_confusion_plot_without_labels_of_a_class(tmp_path):
    from asanet_rt.metrics import SegmentationScores

    scores = SegmentationScores.from_counts(np.array([[5, 1, 0], [0, 0, 0], [2, 0, 9]]), class_names=("x", "y", "z"))
    plot_confusion(scores, tmp_path / "cm.png")
    assert (tmp_path / "cm.png").stat().st_size > 1000


def test_checkpoint_onnx_and_openvino_agree(toy, folder_case, tmp_path):
    """The same network as a checkpoint (torch) and as ONNX scores the same; OpenVINO runs the toy like ORT."""
    torch = pytest.importorskip("torch")
    from asanet_rt.export.network import build_model
    from asanet_rt.export.onnx_export import ExportOptions, export_onnx
    from asanet_rt.metadata import ArchSpec, ModelMetadata
    from model_utils import randomise

    root, _, _ = folder_case
    arch = ArchSpec((1, 1, 1, 1), (16, 32, 48, 64), 24, K)
    net = randomise(build_model(arch), seed=11)
    ckpt = tmp_path / "net.pth"
    torch.save(net.state_dict(), ckpt)
    net.metadata = ModelMetadata.build(arch)
    onnx_path = tmp_path / "net.onnx"
    export_onnx(net, onnx_path, ExportOptions(batch=(1, 4), tile=(32, 128), outputs=("classes",),
                                              optical_bands=("red", "green", "blue")))
    by_torch = evaluate(ckpt, root, threads=1)
    by_onnx = evaluate(onnx_path, root, threads=1)
    assert by_torch.model["backend"] == "torch" and by_torch.model["optical_bands"] == ["blue", "green", "red"]
    assert by_onnx.model["optical_bands"] == ["red", "green", "blue"]
    diff = np.abs(by_torch.scores.confusion - by_onnx.scores.confusion).sum()
    assert diff <= 0.002 * by_torch.scores.confusion.sum()  # argmax ties may flip a pixel or two
    if importlib.util.find_spec("openvino") is not None:
        by_ov = evaluate(toy, root, backend="openvino", threads=1)
        np.testing.assert_array_equal(by_ov.scores.confusion, evaluate(toy, root, threads=1).scores.confusion)


def test_label_map_forms(tmp_path):
    """Inline pairs, JSON (object or pairs), two-column CSV/text with a header; the ignore word; clear errors."""
    from asanet_rt.labels import LabelMap

    inline = LabelMap.parse("1:0, 2:1,5:ignore")
    assert inline.table == ((1, 0), (2, 1), (5, None)) and inline.describe() == "1:0,2:1,5:ignore"
    (tmp_path / "m.json").write_text('{"1": 0, "2": 1, "5": null}')
    (tmp_path / "pairs.json").write_text("[[1, 0], [2, 1], [5, \"ignore\"]]")
    (tmp_path / "m.csv").write_text("value,class\n1,0\n2,1  # trees\n\n5,ignore\n")
    (tmp_path / "m.txt").write_text("1 0\n2\t1\n5 -\n")
    for name in ("m.json", "pairs.json", "m.csv", "m.txt"):
        assert LabelMap.parse(str(tmp_path / name)).table == inline.table, name
    assert LabelMap.parse({1: 0, 2: 1, 5: None}).table == inline.table
    assert LabelMap.parse(None, default="whu").name == "whu" and not LabelMap.parse("reduce-zero").explicit
    for bad, message in (("1:0,1:2", "value 1 is mapped twice"), ("1:x", "whole numbers"),
                         ("nonsense", "give identity, whu, reduce-zero"), ("1:-2", "negative"),
                         ("10:0,20:1.5", r"20:1\.5 is not VALUE:CLASS"),
                         (str(tmp_path / "absent.csv"), "absent.csv: file not found")):
        with pytest.raises(AsanetError, match=message):
            LabelMap.parse(bad)
    (tmp_path / "broken.json").write_text("{1: 0")
    with pytest.raises(AsanetError, match="broken.json: not valid JSON"):
        LabelMap.parse(str(tmp_path / "broken.json"))
    with pytest.raises(AsanetError, match=r"--label-map 1:0,2:7: 2:7 names a class the model does not have"):
        LabelMap.parse("1:0,2:7").check(4)
    LabelMap.parse("1:0,2:255").check(4)  # the ignore index is a valid target

    classes, unmapped = inline.apply(np.array([[1, 2, 5], [3, 255, 3]], np.uint8))
    np.testing.assert_array_equal(classes, [[0, 1, 255], [255, 255, 255]])
    assert unmapped == {3: 2}  # 5 is mapped to ignore and 255 is the ignore index: neither is reported


def test_label_map_renumbers_another_dataset(toy, folder_case, tmp_path):
    """Labels stored as 1..K plus a nodata 0 (Esri-style numbering) score like class indices once mapped."""
    root, _, _ = folder_case
    def esri_labels(sub: str, data: np.ndarray) -> np.ndarray:
        if sub == "label":
            data = np.where(data < K, data + 1, data).astype(np.uint8)  # classes 0..3 stored as 1..4
            data[0, -1, :3] = 0  # nodata, not in the map
        return data

    esri = _rewritten(root, tmp_path / "esri", esri_labels)
    ref = evaluate(toy, root, threads=1)
    unmapped_by_default = evaluate(toy, esri, threads=1)
    assert not np.array_equal(unmapped_by_default.scores.confusion, ref.scores.confusion)
    spec = ",".join(f"{c + 1}:{c}" for c in range(K))
    mapped = evaluate(toy, esri, threads=1, label_map=spec)
    # Only the 6 nodata pixels differ (3 per image): they are not scored, and reported.
    assert ref.scores.confusion.sum() - mapped.scores.confusion.sum() == 6
    assert mapped.dataset["label_map"] == spec
    assert any("--label-map does not name: 0 (6 px), 9 (5 px)" in w for w in mapped.warnings)
    (tmp_path / "esri.csv").write_text("value,class\n0,ignore\n9,ignore\n" + "".join(f"{c + 1},{c}\n" for c in range(K)))
    out = tmp_path / "esri.json"
    assert main(["eval", str(toy), "--data", str(esri), "--label-map", str(tmp_path / "esri.csv"), "--threads", "1",
                 "--json", str(out), "-q"]) == 0
    data = json.loads(out.read_text())
    assert data["metrics"]["confusion_matrix"] == mapped.scores.confusion.tolist()
    assert not any("does not name" in w for w in data["warnings"])
    assert main(["eval", str(toy), "--data", str(esri), "--label-map", "1:0,2:9"]) == 2


def test_eval_opens_models_through_the_registry(toy, folder_case):
    """Backend names and options go through the one registry: aliases work, wrong kinds are refused clearly."""
    root, _, _ = folder_case
    assert evaluate(toy, root, backend="ort", threads=1).model["backend"] == "onnxruntime"
    with pytest.raises(AsanetError, match="backend torch runs checkpoint files"):
        evaluate(toy, root, backend="torch")
    with pytest.raises(AsanetError, match="backend tensorrt runs engine files"):
        evaluate(toy, root, backend="trt")
