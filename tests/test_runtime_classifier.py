"""``Classifier.predict`` on arrays: padding, internal tiling, batching, output kinds, thread safety."""
from __future__ import annotations

import threading

import numpy as np
import pytest

from asanet_rt.classifier import Classifier, softmax
from asanet_rt.errors import AsanetError
from asanet_rt.tiling import TileGrid

from runtime_helpers import random_pair, tile_edge_mask, toy_model  # noqa: F401 - fixture
from toy_models import make_toy_onnx, toy_reference


def _ref(opt, sar):
    return softmax(toy_reference(np.asarray(opt, np.float32)[None], np.asarray(sar, np.float32)[None]), axis=1)[0]


def test_predict_matches_reference_and_shapes(toy_model):
    opt, sar = random_pair(64, 96)
    with Classifier.open(toy_model) as clf:
        assert clf.optical_bands == ("red", "green", "blue") and clf.tile_range == (32, 512)
        assert clf.default_tile == 512 and clf.batch_range == (1, 8)
        probs = clf.predict_proba(opt, sar)
        np.testing.assert_allclose(probs, _ref(opt, sar), atol=1e-5)
        classes, conf = clf.predict(opt, sar[0], return_confidence=True)  # SAR as (H, W)
        assert classes.shape == (64, 96) and classes.dtype == np.uint8
        np.testing.assert_array_equal(classes, probs.argmax(0))
        np.testing.assert_allclose(conf, probs.max(0), atol=1e-6)
        batched = clf.predict(np.stack([opt, opt[::-1]]), np.stack([sar, sar]))
        assert batched.shape == (2, 64, 96)
        np.testing.assert_array_equal(batched[0], classes)
        with pytest.raises(AsanetError, match="SAR array of shape"):
            clf.predict(opt, sar[:, :10])
        with pytest.raises(AsanetError, match="optical array of shape"):
            clf.predict(opt[:2], sar)


def test_predict_pads_odd_sizes_by_reflection(toy_model):
    opt, sar = random_pair(50, 70, seed=3)
    with Classifier.open(toy_model) as clf:
        probs = clf.predict_proba(opt, sar)
    assert probs.shape == (4, 50, 70)
    # the padded border differs from the zero-padded reference only on the last row and column
    np.testing.assert_allclose(probs[:, :-1, :-1], _ref(opt, sar)[:, :-1, :-1], atol=1e-5)
    tiny_opt, tiny_sar = random_pair(5, 9, seed=4)  # smaller than the minimum tile
    with Classifier.open(toy_model) as clf:
        assert clf.predict(tiny_opt, tiny_sar).shape == (5, 9)


def test_predict_tiles_larger_than_the_model_range(tmp_path):
    model = make_toy_onnx(tmp_path / "small_tiles.onnx", tile=(32, 64), batch=(1, 2))
    opt, sar = random_pair(150, 170, seed=5)
    with Classifier.open(model) as clf:
        probs = clf.predict_proba(opt, sar)
    grid = TileGrid.plan(150, 170, 64, 16, 32)
    assert grid.count > 4
    ref = _ref(opt, sar)
    inner = ~tile_edge_mask(grid)
    inner[[0, -1]] = False
    inner[:, [0, -1]] = False
    np.testing.assert_allclose(probs[:, inner], ref[:, inner], atol=1e-5)
    assert np.abs(probs - ref)[:, 1:-1, 1:-1].max() < 0.05  # tile borders blended away


@pytest.mark.parametrize("outputs", [("probabilities",), ("classes", "confidence"), ("classes",)])
def test_output_kinds(tmp_path, outputs):
    model = make_toy_onnx(tmp_path / "m.onnx", outputs=outputs)
    opt, sar = random_pair(64, 64, seed=6)
    ref = _ref(opt, sar)
    with Classifier.open(model) as clf:
        classes, conf = clf.predict(opt, sar, return_confidence=True)
    np.testing.assert_array_equal(classes, ref.argmax(0))
    if "classes" not in outputs or "confidence" in outputs:
        np.testing.assert_allclose(conf, ref.max(0), atol=1e-5)


def test_fixed_batch_model_and_large_batches(tmp_path):
    model = make_toy_onnx(tmp_path / "fixed.onnx", batch=(2, 2))
    opt, sar = random_pair(32, 32, seed=7)
    with Classifier.open(model) as clf:
        assert clf.predict(opt, sar).shape == (32, 32)  # one image padded to the fixed batch of 2
        five = clf.predict(np.stack([opt] * 5), np.stack([sar] * 5))  # split into batches of 2
    assert five.shape == (5, 32, 32) and (five == five[0]).all()


def test_shared_between_threads(toy_model):
    opt, sar = random_pair(64, 64, seed=8)
    results = []
    with Classifier.open(toy_model) as clf:
        expected = clf.predict(opt, sar)

        def work():
            for _ in range(5):
                results.append(clf.predict(opt, sar))

        threads = [threading.Thread(target=work) for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert len(results) == 15 and all((r == expected).all() for r in results)
