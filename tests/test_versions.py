"""One version parser for every runtime version string, and engine-builder names through the backend registry."""
from __future__ import annotations

import pytest

from asanet_rt.errors import AsanetError
from asanet_rt.versions import parse_version, version_label


@pytest.mark.parametrize("text, expected", [
    ("10.3.0.30", (10, 3, 0, 30)),
    ("11.0.0rc1", (11, 0, 0)),  # a pre-release part ends the release numbers; it is not '0' + '1'
    ("1.7.1", (1, 7, 1)),
    ("1.7.1.116", (1, 7, 1, 116)),
    ("2.5.1+cu121", (2, 5, 1)),
    ("10.13.0.post2", (10, 13, 0)),
    (" 8.6 ", (8, 6)),
    ("garbage", ()),
    ("", ()),
    (None, ()),
])
def test_parse_version(text, expected):
    assert parse_version(text) == expected


def test_release_candidates_order_before_the_next_release():
    assert parse_version("11.0.0rc1") < parse_version("11.0.1") and parse_version("11.0.0rc1")[:3] == (11, 0, 0)


def test_version_label():
    assert version_label("10.3.0.30") == "10.3.0" and version_label("1.7.1.116", 2) == "1.7"
    assert version_label("garbage") == "garbage"


def test_engine_builder_names_come_from_the_registry():
    from asanet_rt.engines.backend import BUILDERS, builder_name

    assert BUILDERS == ("tensorrt", "tensorrt_rtx")
    for spelling, name in (("trt", "tensorrt"), ("TensorRT", "tensorrt"), ("rtx", "tensorrt_rtx"),
                           ("tensorrt-rtx", "tensorrt_rtx"), ("auto", "auto")):
        assert builder_name(spelling) == name
    for other in ("onnxruntime", "openvino", "nonsense"):
        with pytest.raises(AsanetError, match="engines are built by auto, tensorrt"):
            builder_name(other)
