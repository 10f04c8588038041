"""FP16 ONNX: weights and activations cast in the graph (strongly typed), float32 I/O, sensitive parts in FP32.

TensorRT 11 and TensorRT-RTX build *strongly typed* networks: every layer runs in the type the ONNX graph gives
its tensors, with no builder flag to pick precision. So the FP16 file carries FP16 weights and activations
itself, with explicit Casts around the parts kept in FP32. The conversion is ONNX Runtime's maintained
``float16.convert_float_to_float16`` (the onnxconverter-common algorithm) with ``keep_io_types=True`` (inputs stay
raw float32; float32 outputs stay float32, a float16 ``probabilities`` output stays float16) and a node block list
built from the graph's structure, group by group:

- ``layernorm``: LayerNormalization (mean/variance over channels);
- ``grn``: GRN's statistics: ``x*x``, the sum over H, W (which overflows FP16's 65504 from a few hundred pixels of
  moderate activations up), its square root, the channel mean and the division; ``x * n`` and the affine tail
  stay FP16;
- ``softmax``: the CFM's channel softmax and the output softmax;
- ``pooling``: global average pooling sums, the pooling-matrix products of the adaptive average pooling (and
  the matrices), and the tiny gate MLPs on pooled vectors (SFM, CFM). Global *max* pooling stays FP16 (exact).

``DEFAULT_FP32_GROUPS`` is the set chosen by measurement (``measure_groups``). ONNX Runtime's CPU provider runs
FP16 graphs partly in FP32 (it casts around ops it has no FP16 kernel for, whole regions at a time), so it cannot
show an FP16 overflow; ``grn_peak_sum_of_squares`` measures that risk directly on the FP32 graph instead.

Plugin flavour: the ``asanet`` ops run with FP16 inputs and outputs (the plugin contract: one dtype for all tensor
I/O of an op). Their function bodies are dtype-generic; where a kept-FP32 group lives inside an op, the body is
replaced by one that casts to float32 for exactly that part (GRN's statistics; CFMFuse's softmax), so ONNX
Runtime and TensorRT-RTX (which inline the bodies) compute what the portable FP16 graph computes, and the FP32
file's numbers are unchanged by the same body (Cast to float is the identity there).
"""
from __future__ import annotations

import logging
from typing import Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper

from asanet_rt.errors import AsanetError

from .graph_utils import (constant_names, consumers, copy_model, elem_type, forward_closure, is_pooled, name_nodes,
                          producers, toposort, value_types)

log = logging.getLogger(__name__)

FP16_GROUPS = ("layernorm", "grn", "softmax", "pooling")
#: Chosen by measurement (``measure_groups``; benchmarks/fp16_groups.py; numbers in docs/readme/precision.md):
#: LayerNorm in FP32 cuts the logit error by a third; GRN's sum of squares passes FP16's range at large tiles.
#: Softmax and pooling in FP32 changed nothing measurable, so they run in FP16 (fewer casts).
DEFAULT_FP32_GROUPS: tuple[str, ...] = ("layernorm", "grn")
#: Ops ONNX Runtime's converter keeps in float32 anyway (no float16 kernels or integer-only semantics).
_FLOAT_SPATIAL_POOLS = ("GlobalAveragePool", "ReduceMean", "ReduceSum", "ReduceL2")


def group_nodes(model: onnx.ModelProto) -> dict[str, list[str]]:
    """Node names of each FP32-candidate group in a shape-inferred FP32 graph."""
    model = name_nodes(model)
    types = value_types(model)
    made = producers(model)
    users = consumers(model)
    consts = constant_names(model)

    def pooled_out(node: onnx.NodeProto) -> bool:
        return all(is_pooled(types.get(o)) for o in node.output)

    groups: dict[str, list[onnx.NodeProto]] = {g: [] for g in FP16_GROUPS}
    groups["layernorm"] = [n for n in model.graph.node if n.op_type == "LayerNormalization"]
    groups["softmax"] = [n for n in model.graph.node if n.op_type == "Softmax"]
    for node in model.graph.node:
        if node.op_type == "ReduceSum" and node.input[0] in made:
            square = made[node.input[0]]
            if square.op_type == "Mul" and square.input[0] == square.input[1]:
                groups["grn"] += [square, *forward_closure(model, [node], pooled_out)]
    seeds: list[onnx.NodeProto] = []
    for node in model.graph.node:
        if node.op_type in ("GlobalAveragePool",) or (node.op_type == "ReduceMean" and pooled_out(node)
                                                      and node not in groups["grn"]):
            seeds.append(node)
        elif node.op_type == "GlobalMaxPool":
            seeds += [u for o in node.output for u in users.get(o, []) if pooled_out(u)]
        elif node.op_type == "MatMul" and not any(i in consts for i in node.input):
            seeds.append(node)
            groups["pooling"] += _matrix_builders(model, node, made, types)
    groups["pooling"] += forward_closure(model, seeds, pooled_out)
    seen: set[str] = set()
    result = {}
    for group in FP16_GROUPS:
        names = [n.name for n in groups[group] if n.name not in seen]
        seen.update(names)
        result[group] = names
    return result


def _matrix_builders(model: onnx.ModelProto, matmul: onnx.NodeProto, made: dict, types: dict) -> list:
    """The float nodes that build a pooling matrix (Cast of the bin masks, division by bin sizes, transpose)."""
    found, stack = [], [i for i in matmul.input]
    # the activation operand is the one whose producer chain reaches the network; matrices come from Shape ops
    stack = [i for i in stack if _from_shape(i, made)]
    seen = set()
    while stack:
        name = stack.pop()
        node = made.get(name)
        if node is None or node.name in seen or elem_type(types.get(name)) != TensorProto.FLOAT:
            continue
        seen.add(node.name)
        found.append(node)
        stack += list(node.input)
    return found


def _from_shape(name: str, made: dict, depth: int = 0) -> bool:
    """Whether ``name`` is computed from tensor shapes only (a pooling matrix), not from activations."""
    node = made.get(name)
    if node is None:
        return True  # initializer or graph input reached only through shape ops
    if node.op_type == "Shape":
        return True
    if depth > 40 or node.op_type in ("Conv", "MatMul", "LayerNormalization", "Resize"):
        return False
    return all(_from_shape(i, made, depth + 1) for i in node.input if i)


def convert_fp16(model: onnx.ModelProto, keep_fp32: Sequence[str] = DEFAULT_FP32_GROUPS) -> onnx.ModelProto:
    """FP16 copy of a finalized FP32 graph (either flavour) with ``keep_fp32`` groups left in FP32."""
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16

    bad = [g for g in keep_fp32 if g not in FP16_GROUPS]
    if bad:
        raise AsanetError(f"unknown FP32 group(s) {', '.join(bad)}; choose from {', '.join(FP16_GROUPS)}")
    model = name_nodes(copy_model(model))
    groups = group_nodes(model)
    block = [name for g in keep_fp32 for name in groups[g]]
    converted = convert_float_to_float16(model, keep_io_types=True, op_block_list=list(DEFAULT_OP_BLOCK_LIST),
                                         node_block_list=block)
    _drop_round_trips(converted)
    _fix_functions(converted, keep_fp32)
    # the converter leaves stale float32 value_info on renamed/cast tensors; shape inference redoes them
    del converted.graph.value_info[:]
    return toposort(converted)


def _drop_round_trips(model: onnx.ModelProto) -> None:
    """Join consecutive FP32 nodes directly: the converter casts every blocked node's output to FP16 and back.

    Left in place, those round trips round (and overflow: a GRN sum of squares passes 65504) between two nodes
    that were meant to stay FP32 together. Only the converter's own Cast pairs are touched.
    """
    graph = model.graph
    made = producers(model)
    rename: dict[str, str] = {}
    drop = set()
    for node in graph.node:
        if node.op_type != "Cast" or not node.name.endswith("_cast_to_fp32_node"):
            continue
        first = made.get(node.input[0])
        if first is not None and first.op_type == "Cast" and first.name.endswith("_cast_to_fp16_node"):
            rename[node.output[0]] = first.input[0]
            drop.add(node.name)
    outputs = {o.name for o in graph.output}
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name in rename:
                node.input[i] = rename[name]
    kept = [n for n in graph.node if n.name not in drop]
    used = {i for n in kept for i in n.input} | outputs
    # a half-precision copy nobody reads any more goes too
    kept = [n for n in kept if not (n.op_type == "Cast" and n.name.endswith("_cast_to_fp16_node")
                                     and not any(o in used for o in n.output))]
    del graph.node[:]
    graph.node.extend(kept)


def _fix_functions(model: onnx.ModelProto, keep_fp32: Sequence[str]) -> None:
    """Swap in mixed-precision bodies for the asanet ops whose FP32-kept part they contain."""
    # GRN's shared body (onnx_functions) already keeps its statistics in float32, as the plugin kernel does.
    bodies = {"CFMFuse": cfm_fuse_function_fp32_softmax if "softmax" in keep_fp32 else None}
    for i, function in enumerate(model.functions):
        make = bodies.get(function.name)
        if function.domain == "asanet" and make is not None:
            model.functions[i].CopyFrom(make())


def cfm_fuse_function_fp32_softmax() -> onnx.FunctionProto:
    """CFMFuse whose two channel softmaxes run in float32."""
    nodes = [
        helper.make_node("Split", ["w"], ["w1", "w2"], axis=1),
        helper.make_node("Cast", ["a"], ["a32"], to=TensorProto.FLOAT),
        helper.make_node("Split", ["a32"], ["a1", "a2"], axis=1),
        helper.make_node("Softmax", ["a1"], ["p1_32"], axis=1),
        helper.make_node("Softmax", ["a2"], ["p2_32"], axis=1),
        helper.make_node("CastLike", ["p1_32", "w"], ["p1"]),
        helper.make_node("CastLike", ["p2_32", "w"], ["p2"]),
        helper.make_node("Mul", ["w1", "p1"], ["m1"]),
        helper.make_node("Mul", ["w2", "p2"], ["m2"]),
        helper.make_node("Add", ["m1", "m2"], ["y"]),
    ]
    return helper.make_function("asanet", "CFMFuse", ["w", "a"], ["y"], nodes, [helper.make_opsetid("", 17)])


def fp32_share(model: onnx.ModelProto) -> dict[str, int]:
    """How many nodes compute in float32 vs float16 in a converted graph (for the report)."""
    types = value_types(onnx.shape_inference.infer_shapes(model))
    counts = {"float16": 0, "float32": 0}
    for node in model.graph.node:
        if node.op_type in ("Cast", "Constant", "Shape"):
            continue
        dtypes = {elem_type(types.get(o)) for o in node.output}
        if TensorProto.FLOAT16 in dtypes:
            counts["float16"] += 1
        elif TensorProto.FLOAT in dtypes:
            counts["float32"] += 1
    return counts


def measure_groups(model: onnx.ModelProto, meta, tiles, groups_to_try: Sequence[Sequence[str]] | None = None
                   ) -> list[dict]:
    """Logit error vs FP32 (ONNX Runtime) of FP16 conversions keeping each group (and all) in FP32."""
    from .int8 import LogitProbe
    from .onnx_export import finalize

    probe = LogitProbe(model, tiles)
    trials = groups_to_try or [(), *[(g,) for g in FP16_GROUPS], DEFAULT_FP32_GROUPS, FP16_GROUPS]
    results = []
    for keep in trials:
        err = probe.error(finalize(convert_fp16(model, keep), meta))
        results.append({"fp32_groups": list(keep), **{k: round(v, 6) for k, v in err.items()}})
    return results


def grn_peak_sum_of_squares(model: onnx.ModelProto, tiles) -> float:
    """The largest GRN sum of squares over H, W in the FP32 graph on ``tiles`` (FP16 overflows past 65504)."""
    from .calibration import make_session
    from .graph_utils import add_outputs

    if any(n.domain == "asanet" for n in model.graph.node):
        from onnx.inliner import inline_local_functions

        model = inline_local_functions(model)  # GRN's sum sits inside the fused op's body
        model = onnx.shape_inference.infer_shapes(model)
    model = name_nodes(copy_model(model))
    names = [n.output[0] for n in model.graph.node
             if n.op_type == "ReduceSum" and n.name in set(group_nodes(model)["grn"])]
    if not names:
        return 0.0
    session = make_session(add_outputs(model, names))
    return float(max(max(float(np.max(v)) for v in session.run(names, t.feed())) for t in tiles))
