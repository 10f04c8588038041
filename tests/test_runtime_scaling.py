"""Value scaling specs and a model exported with normalised inputs (normalisation done by the runtime)."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from asanet_rt.classifier import Classifier, softmax
from asanet_rt.errors import AsanetError
from asanet_rt.metadata import METADATA_KEY
from asanet_rt.scaling import Scale

from runtime_helpers import random_pair
from toy_models import toy_metadata


def test_scale_specs():
    x = np.array([[[-30.0, -25.0, -12.5, 0.0, 5.0, np.nan]]], np.float32)
    np.testing.assert_allclose(Scale.parse("db:-25:0").apply(x)[0, 0, :5], [0, 0, 127.5, 255, 255])
    assert np.isnan(Scale.parse("db:-25:0").apply(x)[0, 0, 5])
    power = np.array([[[10 ** -2.5, 10 ** -1.25, 1.0]]], np.float32)  # -25, -12.5, 0 dB
    np.testing.assert_allclose(Scale.parse("linear-power:-25:0").apply(power)[0, 0], [0, 127.5, 255], atol=1e-3)
    amplitude = np.sqrt(power)
    np.testing.assert_allclose(Scale.parse("linear-amplitude:-25:0").apply(amplitude)[0, 0], [0, 127.5, 255],
                               atol=1e-3)
    refl = np.array([[[0, 1500, 3000, 9000]]], np.uint16)
    np.testing.assert_allclose(Scale.parse("reflectance:0:3000").apply(refl)[0, 0], [0, 127.5, 255, 255])
    assert str(Scale.parse(" Reflectance:0:3000 ")) == "reflectance:0:3000"
    assert Scale.parse("auto").resolve("uint8", "a.tif", "--optical-scale").kind == "none"
    with pytest.raises(AsanetError, match=r"a\.tif: int16 data needs an explicit --optical-scale"):
        Scale.parse("auto").resolve("int16", "a.tif", "--optical-scale")
    for bad in ("db", "db:1", "db:0:-5", "db:a:b", "none:1:2", "log:0:1"):
        with pytest.raises(AsanetError, match="--sar-scale"):
            Scale.parse(bad, "--sar-scale")
    bad, total = Scale.parse("db:-25:0").out_of_range(x[:, :, :5], np.ones(5, bool)[None])
    assert (bad, total) == (2, 5)  # -30 and 5 dB are clipped


def _normalized_model(path, meta):
    """A one-layer model taking normalised optical (N,3,H,W) and SAR (N,3,H,W): a 1x1 conv to 4 logits."""
    w = np.random.default_rng(0).normal(0, 1, (4, 6, 1, 1)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Concat", ["optical", "sar"], ["x"], axis=1),
         helper.make_node("Conv", ["x", "w"], ["logits"])], "normalized",
        [helper.make_tensor_value_info("optical", TensorProto.FLOAT, ["n", 3, "h", "w"]),
         helper.make_tensor_value_info("sar", TensorProto.FLOAT, ["n", 3, "h", "w"])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["n", 4, "h", "w"])],
        [numpy_helper.from_array(w, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    helper.set_model_props(model, {METADATA_KEY: meta.to_json()})
    onnx.save(model, str(path))
    return w


def test_normalized_input_model_is_fed_normalised_channels(tmp_path):
    meta = toy_metadata().with_export(input="normalized")  # bands red, green, blue; network blue, green, red
    w = _normalized_model(tmp_path / "norm.onnx", meta)
    opt, sar = random_pair(32, 32, seed=9)
    with Classifier.open(tmp_path / "norm.onnx") as clf:
        probs = clf.predict_proba(opt, sar)
    bgr = opt[::-1].astype(np.float32)
    x = np.concatenate([(bgr - np.array(meta.optical_mean).reshape(3, 1, 1)) / np.array(meta.optical_std).reshape(
        3, 1, 1), (np.repeat(sar, 3, axis=0) - np.array(meta.sar_mean).reshape(3, 1, 1)) / np.array(
        meta.sar_std).reshape(3, 1, 1)])
    logits = np.einsum("kc,chw->khw", w[:, :, 0, 0], x)
    np.testing.assert_allclose(probs, softmax(logits[None], axis=1)[0], atol=1e-5)
