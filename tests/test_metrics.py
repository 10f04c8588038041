"""Metrics against a case computed by hand, with mmseg's rules (dataset-level sums, ignore index, NaN classes)."""
from __future__ import annotations

import numpy as np
import pytest

from asanet_rt.metrics import ConfusionMatrix


def test_hand_computed_case():
    # 3 classes; class 2 never appears in labels nor predictions -> NaN, left out of the means.
    label = np.array([[0, 0, 1, 1], [0, 1, 1, 255]])
    pred = np.array([[0, 1, 1, 1], [0, 0, 1, 2]])
    cm = ConfusionMatrix(3)
    cm.update(pred, label)
    scores = cm.result(("a", "b", "c"))
    # kept pixels: 7; class 0: label 3, pred 3, hit 2 -> IoU 2/4; class 1: label 4, pred 4, hit 3 -> IoU 3/5
    np.testing.assert_allclose(scores.iou[:2], [0.5, 0.6])
    assert np.isnan(scores.iou[2])
    assert scores.miou == pytest.approx(0.55)
    np.testing.assert_allclose(scores.accuracy[:2], [2 / 3, 3 / 4])
    assert scores.overall_accuracy == pytest.approx(5 / 7)
    # kappa: po = 5/7, pe = (3*3 + 4*4) / 49 = 25/49
    assert scores.kappa == pytest.approx((5 / 7 - 25 / 49) / (1 - 25 / 49))
    np.testing.assert_allclose(scores.f1[:2], [2 / 3, 3 / 4])  # precision equals recall here
    assert scores.confusion.tolist() == [[2, 1, 0], [1, 3, 0], [0, 0, 0]]


def test_accumulates_over_images_before_dividing():
    cm = ConfusionMatrix(2)
    cm.update(np.array([0, 0]), np.array([0, 1]))      # image 1: class 1 IoU 0
    cm.update(np.array([1] * 8), np.array([1] * 8))    # image 2: class 1 IoU 1
    scores = cm.result()
    # class 1 over the dataset: label 9, pred 8, intersect 8 -> IoU 8/9 (the mean of per-image IoUs would be 0.5)
    assert scores.iou[1] == pytest.approx(8 / 9)


def test_prediction_outside_classes_counts_as_miss():
    cm = ConfusionMatrix(2)
    cm.update(np.array([0, 7]), np.array([0, 0]))
    scores = cm.result()
    assert scores.accuracy[0] == pytest.approx(0.5) and scores.iou[0] == pytest.approx(0.5)


def test_shape_mismatch():
    with pytest.raises(ValueError, match="differs"):
        ConfusionMatrix(2).update(np.zeros((2, 2)), np.zeros((2, 3)))
