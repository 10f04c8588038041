"""The CPU INT8 graph form (export/graph_cpu.py): same numbers as the traced graph, fewer passes over wide tensors."""
from __future__ import annotations

from collections import Counter

import numpy as np
import onnx
import pytest

from asanet_rt.export.calibration import make_session, synthetic_tiles
from asanet_rt.export.graph_cpu import GRN_SUM_OF_SQUARES, cpu_int8_form, decompose_softmax, fuse_gelu, rewrite_grn
from asanet_rt.export.graph_utils import add_outputs, copy_model, logits_tensor, name_nodes
from asanet_rt.export.network import build_model
from asanet_rt.export.onnx_export import ExportOptions
from asanet_rt.export.pipeline import trace_fp32
from asanet_rt.metadata import ArchSpec, ModelMetadata

from model_utils import randomise

ARCH = ArchSpec((1, 1, 2, 1), (16, 32, 64, 128), 32, 4)
OPTIONS = ExportOptions(outputs=("logits",), batch=(1, 2), tile=(64, 128))


@pytest.fixture(scope="module")
def fp32():
    model = randomise(build_model(ARCH), seed=5)  # non-zero GRN gamma and beta: the beta fold must be right
    model.metadata = ModelMetadata.build(ARCH, preset=None)
    return name_nodes(copy_model(trace_fp32(model, OPTIONS)))


def logits(model, feed):
    name = logits_tensor(model)
    return make_session(add_outputs(model, [name])).run([name], feed)[0]


def feeds():
    tiles = synthetic_tiles(2, 96, seed=1)
    yield {"optical": tiles[0].optical, "sar": tiles[0].sar}
    yield {"optical": np.concatenate([t.optical for t in tiles]), "sar": np.concatenate([t.sar for t in tiles])}


@pytest.mark.parametrize("mode", ["keep", "matmul"])
def test_rewrites_are_exact(fp32, mode):
    blocks = 2 * sum(ARCH.depths)  # two streams
    model = copy_model(fp32)
    gelus = fuse_gelu(model)  # every block's, and the SFM / CFM gate MLPs'
    assert gelus == blocks + 2 * len(ARCH.depths) and rewrite_grn(model, mode) == blocks
    ops = Counter(n.op_type for n in model.graph.node)
    assert ops["Erf"] == 0 and ops["Gelu"] == gelus and ops["Sqrt"] == blocks
    onnx.checker.check_model(model, full_check=True)
    for feed in feeds():  # batch 1 and 2, a tile size other than the traced one
        np.testing.assert_allclose(logits(model, feed), logits(fp32, feed), rtol=1e-4, atol=2e-4)


def test_softmax_decomposition_is_exact_and_the_logits_stay_findable():
    model = randomise(build_model(ARCH), seed=6)
    model.metadata = ModelMetadata.build(ARCH, preset=None)
    graph = name_nodes(copy_model(trace_fp32(model, ExportOptions(outputs=("probabilities",), batch=(1, 2),
                                                                   tile=(64, 128)))))
    softmaxes = sum(n.op_type == "Softmax" for n in graph.graph.node)
    before = logits_tensor(graph)
    form = copy_model(graph)
    assert decompose_softmax(form) == softmaxes >= 2  # the CFMs' and the output's
    assert not any(n.op_type == "Softmax" for n in form.graph.node)
    assert logits_tensor(form) == before  # the report and the sensitivity pass still find the logits
    for feed in feeds():
        got = make_session(form).run(["probabilities"], feed)[0]
        np.testing.assert_allclose(got, make_session(graph).run(["probabilities"], feed)[0], atol=1e-5)
        np.testing.assert_allclose(got.sum(1), 1.0, atol=1e-5)


def test_cpu_form_runs_fewer_wide_passes(fp32):
    before = Counter(n.op_type for n in fp32.graph.node)
    after = Counter(n.op_type for n in cpu_int8_form(copy_model(fp32)).graph.node)
    # per block: GELU's Div, Erf, Add, Mul, Mul -> one Gelu; GRN's gamma Mul and residual Add disappear
    blocks = 2 * sum(ARCH.depths)
    assert after["Mul"] <= before["Mul"] - 3 * blocks + blocks  # + one x * factor per block
    sums = [n for n in cpu_int8_form(copy_model(fp32)).graph.node if n.name.endswith(GRN_SUM_OF_SQUARES)]
    assert len(sums) == blocks and all(n.op_type == "MatMul" for n in sums)


def test_patterns_that_do_not_match_are_left_alone():
    from onnx import TensorProto, helper

    # x / 2 -> Erf ...: not GELU's constant; must stay as it is
    nodes = [helper.make_node("Div", ["x", "two"], ["d"], name="div"), helper.make_node("Erf", ["d"], ["e"], name="erf"),
             helper.make_node("Add", ["e", "one"], ["a"], name="add"), helper.make_node("Mul", ["x", "a"], ["m"], name="m"),
             helper.make_node("Mul", ["m", "half"], ["y"], name="h")]
    inits = [onnx.numpy_helper.from_array(np.array(v, np.float32), n) for n, v in
             (("two", 2.0), ("one", 1.0), ("half", 0.5))]
    model = helper.make_model(helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
                                                [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])], inits))
    assert fuse_gelu(model) == 0 and rewrite_grn(model) == 0 and len(model.graph.node) == 5


def test_each_int8_target_quantises_its_own_form(fp32):
    from asanet_rt.export.int8 import make_int8

    tiles = synthetic_tiles(1, 64)
    ops = {target: Counter(n.op_type for n in make_int8(fp32, tiles, target, "minmax", "none").model.graph.node)
           for target in ("cpu", "openvino", "tensorrt")}
    assert ops["cpu"]["Gelu"] and ops["openvino"]["Gelu"] and not ops["tensorrt"]["Gelu"]
    assert ops["cpu"]["Softmax"] == 0 and ops["openvino"]["Softmax"] == ops["tensorrt"]["Softmax"] > 0
    assert ops["cpu"]["MatMul"] > ops["openvino"]["MatMul"] == ops["tensorrt"]["MatMul"]  # GRN's sums
    with pytest.raises(Exception, match="graph form 'nope'"):
        make_int8(fp32, tiles, "cpu", "minmax", "none", graph_form="nope")
