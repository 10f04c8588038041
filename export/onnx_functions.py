"""ONNX local functions for the ``asanet`` custom ops: the portable body of each fused op.

A runtime that knows the op (TensorRT with our plugins) substitutes its kernel; every other runtime (ONNX
Runtime, TensorRT-RTX) inlines the body. Bodies use opset 17 ops and are dtype-generic (float or float16).
"""
from __future__ import annotations

import onnx
from onnx import FunctionProto, helper

from .graph_ops import DOMAIN

OPSET = 17
_IMPORTS = [helper.make_opsetid("", OPSET)]


def _function(name: str, inputs: list[str], outputs: list[str], nodes: list[onnx.NodeProto],
              attributes: list[str] | None = None) -> FunctionProto:
    return helper.make_function(DOMAIN, name, inputs, outputs, nodes, _IMPORTS, attributes=attributes or [])


def _const_like(name: str, value: float, like: str) -> list[onnx.NodeProto]:
    """A scalar of ``like``'s dtype (CastLike keeps the bodies dtype-generic)."""
    return [helper.make_node("Constant", [], [f"{name}_f"], value_float=value),
            helper.make_node("CastLike", [f"{name}_f", like], [name])]


def grn_function() -> FunctionProto:
    """GRN; its statistics (sum of squares over H, W, root, channel mean) run in float32 whatever the tensor
    dtype: an FP16 sum of squares passes 65504 at large tiles. For float32 graphs the casts are no-ops."""
    eps_attr = onnx.AttributeProto()
    eps_attr.name, eps_attr.ref_attr_name, eps_attr.type = "value_float", "eps", onnx.AttributeProto.FLOAT
    eps = helper.make_node("Constant", [], ["eps"])
    eps.attribute.append(eps_attr)
    nodes = [
        eps,
        helper.make_node("Constant", [], ["hw_axes"], value_ints=[2, 3]),
        helper.make_node("Constant", [], ["shape_c"], value_ints=[1, -1, 1, 1]),
        helper.make_node("Cast", ["x"], ["x32"], to=onnx.TensorProto.FLOAT),
        helper.make_node("Mul", ["x32", "x32"], ["x2"]),
        helper.make_node("ReduceSum", ["x2", "hw_axes"], ["ss"], keepdims=1),
        helper.make_node("Sqrt", ["ss"], ["gx"]),
        helper.make_node("ReduceMean", ["gx"], ["gmean"], axes=[1], keepdims=1),
        helper.make_node("Add", ["gmean", "eps"], ["denom"]),
        helper.make_node("Div", ["gx", "denom"], ["nx32"]),
        helper.make_node("CastLike", ["nx32", "x"], ["nx"]),
        helper.make_node("Mul", ["x", "nx"], ["xn"]),
        helper.make_node("Reshape", ["gamma", "shape_c"], ["g4"]),
        helper.make_node("Reshape", ["beta", "shape_c"], ["b4"]),
        helper.make_node("Mul", ["g4", "xn"], ["scaled"]),
        helper.make_node("Add", ["scaled", "b4"], ["shifted"]),
        helper.make_node("Add", ["shifted", "x"], ["y"]),
    ]
    return _function("GRN", ["x", "gamma", "beta"], ["y"], nodes, attributes=["eps"])


def sfm_function() -> FunctionProto:
    half, one, sqrt2 = _const_like("half", 0.5, "x1"), _const_like("one", 1.0, "x1"), _const_like(
        "sqrt2", 2 ** 0.5, "x1")

    def mlp_gate(v: str, tag: str) -> list[onnx.NodeProto]:
        # (N, C) -> Gemm -> exact GELU -> Gemm -> sigmoid + 1 -> (N, C, 1, 1)
        return [
            helper.make_node("Gemm", [v, "w1", "b1"], [f"h_{tag}"], transB=1),
            helper.make_node("Div", [f"h_{tag}", "sqrt2"], [f"hs_{tag}"]),
            helper.make_node("Erf", [f"hs_{tag}"], [f"he_{tag}"]),
            helper.make_node("Add", [f"he_{tag}", "one"], [f"hp_{tag}"]),
            helper.make_node("Mul", [f"h_{tag}", f"hp_{tag}"], [f"hm_{tag}"]),
            helper.make_node("Mul", [f"hm_{tag}", "half"], [f"gelu_{tag}"]),
            helper.make_node("Gemm", [f"gelu_{tag}", "w2", "b2"], [f"o_{tag}"], transB=1),
            helper.make_node("Sigmoid", [f"o_{tag}"], [f"s_{tag}"]),
            helper.make_node("Add", [f"s_{tag}", "one"], [f"g_{tag}"]),
            helper.make_node("Unsqueeze", [f"g_{tag}", "hw_axes"], [f"gate_{tag}"]),
        ]

    nodes = half + one + sqrt2 + [
        helper.make_node("Constant", [], ["hw_axes"], value_ints=[2, 3]),
        helper.make_node("Sub", ["x1", "x2"], ["d"]),
        helper.make_node("Neg", ["d"], ["nd"]),
        helper.make_node("ReduceMax", ["d"], ["p4"], axes=[2, 3], keepdims=0),
        helper.make_node("ReduceMax", ["nd"], ["q4"], axes=[2, 3], keepdims=0),
        *mlp_gate("p4", "p"), *mlp_gate("q4", "q"),
        helper.make_node("Mul", ["x1", "gate_p"], ["y1"]),
        helper.make_node("Mul", ["x2", "gate_q"], ["y2"]),
    ]
    return _function("SFM", ["x1", "x2", "w1", "b1", "w2", "b2"], ["y1", "y2"], nodes)


def cfm_gate_function() -> FunctionProto:
    nodes = [
        helper.make_node("Sigmoid", ["s"], ["sig"]),
        helper.make_node("Split", ["sig"], ["s1", "s2"], axis=1),
        helper.make_node("Mul", ["x1", "s1"], ["w1"]),
        helper.make_node("Mul", ["x2", "s2"], ["w2"]),
        helper.make_node("Concat", ["w1", "w2"], ["w"], axis=1),
    ]
    return _function("CFMGate", ["x1", "x2", "s"], ["w"], nodes)


def cfm_fuse_function() -> FunctionProto:
    nodes = [
        helper.make_node("Split", ["w"], ["w1", "w2"], axis=1),
        helper.make_node("Split", ["a"], ["a1", "a2"], axis=1),
        helper.make_node("Softmax", ["a1"], ["p1"], axis=1),
        helper.make_node("Softmax", ["a2"], ["p2"], axis=1),
        helper.make_node("Mul", ["w1", "p1"], ["m1"]),
        helper.make_node("Mul", ["w2", "p2"], ["m2"]),
        helper.make_node("Add", ["m1", "m2"], ["y"]),
    ]
    return _function("CFMFuse", ["w", "a"], ["y"], nodes)


FUNCTIONS = {"GRN": grn_function, "SFM": sfm_function, "CFMGate": cfm_gate_function, "CFMFuse": cfm_fuse_function}


def attach_functions(model: onnx.ModelProto) -> onnx.ModelProto:
    """Add the local function of every ``asanet`` op the graph uses, and the domain's opset import."""
    used = {node.op_type for node in model.graph.node if node.domain == DOMAIN}
    unknown = used - set(FUNCTIONS)
    if unknown:
        raise ValueError(f"no function body for asanet ops {sorted(unknown)}")
    existing = {f.name for f in model.functions if f.domain == DOMAIN}
    model.functions.extend(FUNCTIONS[name]() for name in sorted(used - existing))
    if used and not any(op.domain == DOMAIN for op in model.opset_import):
        model.opset_import.append(helper.make_opsetid(DOMAIN, 1))
    return model
