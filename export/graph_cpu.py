"""Export-time rewrites that make the INT8 CPU graph cheaper to run, with the same math.

Between two quantised convolutions a ConvNeXt-V2 block runs GELU and GRN in float on its widest tensor (4C
channels at full resolution). As traced, that is thirteen passes over the tensor (two DequantizeLinear, Div, Erf,
Add, Mul, Mul for GELU; Mul, ReduceSum, Mul, Mul, Add for GRN; QuantizeLinear), because ONNX Runtime cannot fuse
a GELU whose input DequantizeLinear it has duplicated, and GRN is written as its definition. Rewritten here:

- ``fuse_gelu``: the erf GELU pattern becomes one ``com.microsoft.Gelu`` node (ONNX Runtime's and OpenVINO's
  ONNX front end both run it; opset 17 has no GELU of its own). Only for CPU-target graphs: TensorRT's parser does
  not know the contrib domain.
- ``rewrite_grn``: ``x + gamma * (x * nx) + beta`` with ``nx = |x|_hw / (mean_c |x|_hw + eps)`` becomes
  ``x * (1 + gamma * nx)`` (two passes over the tensor fewer), and ``beta`` folded into the bias of the following
  1x1 convolution (``W2 @ (y + beta) + b2 = W2 @ y + (W2 @ beta + b2)``). The per-channel factor is computed on
  the (N, C, 1, 1) vector, so the wide tensor sees one reduction and one multiply.

Both are exact rewrites in real arithmetic; float rounding differs by a few ulps.
"""
from __future__ import annotations

import math

import numpy as np
import onnx
from onnx import helper, numpy_helper

from .graph_utils import consumers, producers

MS_DOMAIN = "com.microsoft"
#: name suffix of the MatMul that sums GRN's squares (``rewrite_grn(..., "matmul")``): not a quantisation candidate
GRN_SUM_OF_SQUARES = "/grn_SumSq"


def cpu_int8_form(model: onnx.ModelProto) -> onnx.ModelProto:
    """The graph the ``cpu`` INT8 target quantises: fused GELU, GRN with a channels-last MatMul sum of squares.

    Measured with ONNX Runtime on the tiny model at 256 px, batch 1 (``benchmarks/int8_speed.py``).
    """
    fuse_gelu(model)
    rewrite_grn(model, "matmul")
    decompose_softmax(model)
    return model


def openvino_int8_form(model: onnx.ModelProto) -> onnx.ModelProto:
    """The graph the ``openvino`` INT8 target quantises: one GELU op, GRN as one per-channel factor; GRN's
    reduction and the softmaxes stay as traced (OpenVINO's CPU plugin runs them in its blocked layouts, and the
    channels-last MatMul form costs it layout reorders). Measured in ``benchmarks/int8_speed.py``."""
    fuse_gelu(model)
    rewrite_grn(model, "keep")
    return model


def decompose_softmax(model: onnx.ModelProto, axis: int = 1) -> int:
    """``Softmax(axis=1)`` as ``exp(x - max) / sum(exp(x - max))`` over that axis; in place, returns how many.

    ONNX Runtime's Softmax on a non-last axis transposes the tensor there and back (about 10 ms for the
    7-class 256 x 256 output on one core), while its reductions over axis 1 of an NCHW tensor run at memory
    speed (under 1 ms). The same formula as its kernel: the max is subtracted before ``Exp``.
    """
    replaced, dead, new_inits = [], set(), {}
    for node in model.graph.node:
        if node.op_type != "Softmax":
            continue
        ax = next((a.i for a in node.attribute if a.name == "axis"), -1)
        if ax != axis:
            continue
        x, y, t = node.input[0], node.output[0], f"{node.name}/softmax_"
        axes = f"softmax_axes_{axis}"
        new_inits[axes] = numpy_helper.from_array(np.array([axis], np.int64), axes)
        replaced += [helper.make_node("ReduceMax", [x], [t + "max"], name=t + "ReduceMax", axes=[axis], keepdims=1),
                     helper.make_node("Sub", [x, t + "max"], [t + "shifted"], name=t + "Sub"),
                     helper.make_node("Exp", [t + "shifted"], [t + "exp"], name=t + "Exp"),
                     helper.make_node("ReduceSum", [t + "exp", axes], [t + "sum"], name=t + "ReduceSum", keepdims=1),
                     helper.make_node("Div", [t + "exp", t + "sum"], [y], name=t + "Div")]
        dead.add(node.name)
    if dead:
        _remove(model, dead)
        have = {i.name for i in model.graph.initializer}
        model.graph.initializer.extend(v for k, v in new_inits.items() if k not in have)
        model.graph.node.extend(replaced)
        from .graph_utils import toposort

        toposort(model)
    return len(dead)


def _const(model: onnx.ModelProto, name: str) -> np.ndarray | None:
    """The value of an initializer or Constant node output, else None."""
    for init in model.graph.initializer:
        if init.name == name:
            return numpy_helper.to_array(init)
    for node in model.graph.node:
        if node.op_type == "Constant" and node.output[0] == name:
            for attr in node.attribute:
                if attr.name == "value":
                    return numpy_helper.to_array(attr.t)
    return None


def _scalar(model: onnx.ModelProto, name: str) -> float | None:
    value = _const(model, name)
    return float(value.reshape(-1)[0]) if value is not None and value.size == 1 else None


def _other(node: onnx.NodeProto, name: str) -> str:
    """The input of a binary node that is not ``name``."""
    return node.input[1] if node.input[0] == name else node.input[0]


def _only_user(users: dict, name: str, op_type: str) -> onnx.NodeProto | None:
    found = users.get(name, [])
    return found[0] if len(found) == 1 and found[0].op_type == op_type else None


def _remove(model: onnx.ModelProto, dead: set[str]) -> None:
    keep = [n for n in model.graph.node if n.name not in dead]
    del model.graph.node[:]
    model.graph.node.extend(keep)


def _ensure_domain(model: onnx.ModelProto, domain: str, version: int = 1) -> None:
    if not any(o.domain == domain for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid(domain, version))


def fuse_gelu(model: onnx.ModelProto) -> int:
    """Replace ``0.5 * x * (1 + erf(x / sqrt(2)))`` (any operand order) by ``com.microsoft.Gelu``; in place.

    Returns how many were replaced. Nodes must be named (``graph_utils.name_nodes``).
    """
    users, made = consumers(model), producers(model)
    dead: set[str] = set()
    replaced = []
    for div in list(model.graph.node):
        if div.op_type not in ("Div", "Mul") or div.name in dead:
            continue
        x = div.input[0]
        c = _scalar(model, div.input[1])
        if c is None or not (math.isclose(c, math.sqrt(2), rel_tol=1e-4) if div.op_type == "Div"
                             else math.isclose(c, 1 / math.sqrt(2), rel_tol=1e-4)):
            continue
        erf = _only_user(users, div.output[0], "Erf")
        add = erf and _only_user(users, erf.output[0], "Add")
        if not add or _scalar(model, _other(add, erf.output[0])) != 1.0:
            continue
        mul = _only_user(users, add.output[0], "Mul")
        if not mul:
            continue
        half = None
        if _other(mul, add.output[0]) == x:  # (x * (1 + erf)) * 0.5
            half = _only_user(users, mul.output[0], "Mul")
            if not half or _scalar(model, _other(half, mul.output[0])) != 0.5:
                continue
            chain, out = [div, erf, add, mul, half], half.output[0]
        else:  # (0.5 * x) * (1 + erf)
            half = made.get(_other(mul, add.output[0]))
            if not half or half.op_type != "Mul" or x not in half.input or \
                    _scalar(model, _other(half, x)) != 0.5 or len(users.get(half.output[0], [])) != 1:
                continue
            chain, out = [div, erf, add, half, mul], mul.output[0]
        dead.update(n.name for n in chain)
        replaced.append(helper.make_node("Gelu", [x], [out], name=f"{div.name}/Gelu", domain=MS_DOMAIN))
    if replaced:
        _remove(model, dead)
        model.graph.node.extend(replaced)
        _ensure_domain(model, MS_DOMAIN)
    return len(replaced)


def rewrite_grn(model: onnx.ModelProto, sum_of_squares: str = "keep") -> int:
    """Rewrite every traced GRN (see the module doc) in place; returns how many. Nodes must be named.

    ``sum_of_squares``: ``keep`` (``x * x`` then ReduceSum, as traced: fast where the tensor is NCHW) or
    ``matmul`` (channels-last ``x * x`` summed over
    the pixels by a ones-row MatMul: ONNX Runtime runs INT8 blocks channels-last, where its reductions over
    leading axes are slow and a (1, HW) x (HW, C) product is a fast GEMV; its own transposes cancel ours).
    """
    users, made = consumers(model), producers(model)
    graph = model.graph
    new_nodes, new_inits, dead = [], [], set()
    count = 0
    for sq in list(graph.node):
        # x * x -> ReduceSum(H, W) -> Sqrt = gx
        if sq.op_type != "Mul" or sq.input[0] != sq.input[1]:
            continue
        x = sq.input[0]
        rsum = _only_user(users, sq.output[0], "ReduceSum")
        sqrt = rsum and _only_user(users, rsum.output[0], "Sqrt")
        if not sqrt:
            continue
        axes = _const(model, rsum.input[1]) if len(rsum.input) > 1 else None
        if axes is None or sorted(int(a) for a in axes.reshape(-1)) != [2, 3]:
            continue
        gx = sqrt.output[0]
        gx_users = users.get(gx, [])
        mean = next((u for u in gx_users if u.op_type == "ReduceMean"), None)
        div = next((u for u in gx_users if u.op_type == "Div" and u.input[0] == gx), None)
        if mean is None or div is None or len(gx_users) != 2:
            continue
        add_eps = _only_user(users, mean.output[0], "Add")
        if not add_eps or add_eps.output[0] != div.input[1]:
            continue
        # x * nx -> gamma * . -> [+ beta] -> + x
        xn = _only_user(users, div.output[0], "Mul")
        if not xn or _other(xn, div.output[0]) != x:
            continue
        gmul = _only_user(users, xn.output[0], "Mul")
        gamma = gmul and _const(model, _other(gmul, xn.output[0]))
        if gamma is None:
            continue
        nxt = _only_user(users, gmul.output[0], "Add")
        if not nxt:
            continue
        beta = None
        chain = [sq, rsum, sqrt, xn, gmul]
        if _other(nxt, gmul.output[0]) != x:
            beta = _const(model, _other(nxt, gmul.output[0]))
            res = _only_user(users, nxt.output[0], "Add")
            if beta is None or not res or _other(res, nxt.output[0]) != x:
                continue
            chain += [nxt, res]
        else:
            res = nxt
            chain.append(res)
        y = res.output[0]
        conv = None
        if beta is not None and np.any(beta):
            conv = _only_user(users, y, "Conv")
            weight = conv and _const(model, conv.input[1])
            if weight is None or weight.shape[2:] != (1, 1) or conv.attribute and any(
                    a.name == "group" and a.i != 1 for a in conv.attribute):
                continue  # beta cannot be folded: leave this GRN as it is
        tag = sq.name
        c = gamma.size
        gname, one = f"{tag}/grn_gamma", f"{tag}/grn_one"
        new_inits += [numpy_helper.from_array(gamma.astype(np.float32).reshape(1, c, 1, 1), gname),
                      numpy_helper.from_array(np.ones((1,), np.float32), one)]
        norm = f"{tag}/grn_l2"
        scale_g, factor = f"{tag}/grn_gnx", f"{tag}/grn_factor"
        if sum_of_squares == "matmul":
            new_nodes += _sum_of_squares_matmul(tag, x, norm, c)
            new_inits.append(numpy_helper.from_array(np.array([0, -1, c], np.int64), f"{tag}/grn_nlc"))
            new_inits.append(numpy_helper.from_array(np.array([0, c, 1, 1], np.int64), f"{tag}/grn_nc11"))
            new_inits.append(numpy_helper.from_array(np.array([1], np.int64), f"{tag}/grn_i1"))
            new_inits.append(numpy_helper.from_array(np.array([2], np.int64), f"{tag}/grn_i2"))
        else:
            new_nodes += [helper.make_node("Mul", [x, x], [f"{tag}/grn_sq"], name=f"{tag}/grn_Square"),
                          helper.make_node("ReduceSum", [f"{tag}/grn_sq", rsum.input[1]], [f"{tag}/grn_sumsq"],
                                           name=f"{tag}/grn_ReduceSum", keepdims=1),
                          helper.make_node("Sqrt", [f"{tag}/grn_sumsq"], [norm], name=f"{tag}/grn_Sqrt")]
        new_nodes += [
            helper.make_node("ReduceMean", [norm], [mean.output[0]], name=mean.name, axes=[1], keepdims=1),
            helper.make_node("Add", list(add_eps.input), list(add_eps.output), name=add_eps.name),
            helper.make_node("Div", [norm, add_eps.output[0]], [div.output[0]], name=div.name),
            helper.make_node("Mul", [div.output[0], gname], [scale_g], name=f"{tag}/grn_scale"),
            helper.make_node("Add", [scale_g, one], [factor], name=f"{tag}/grn_add_one"),
            helper.make_node("Mul", [x, factor], [y], name=f"{tag}/grn_apply"),
        ]
        dead.update(n.name for n in chain + [mean, add_eps, div])
        if conv is not None:
            weight = _const(model, conv.input[1])[:, :, 0, 0].astype(np.float64)
            bias = _const(model, conv.input[2]).astype(np.float64) if len(conv.input) > 2 and conv.input[2] \
                else np.zeros(weight.shape[0])
            folded = (bias + weight @ beta.reshape(-1).astype(np.float64)).astype(np.float32)
            bname = f"{conv.name}/bias_with_grn_beta"
            new_inits.append(numpy_helper.from_array(folded, bname))
            inputs = list(conv.input[:2]) + [bname]
            del conv.input[:]
            conv.input.extend(inputs)
        count += 1
    if count:
        _remove(model, dead)
        graph.initializer.extend(new_inits)
        graph.node.extend(new_nodes)
        from .graph_utils import toposort

        toposort(model)
    return count


def _sum_of_squares_matmul(tag: str, x: str, norm: str, channels: int) -> list[onnx.NodeProto]:
    """``norm = sqrt(sum_hw x^2)`` as (N, C, 1, 1), computed channels-last with a ones-row MatMul."""
    t = f"{tag}/grn_"
    ones_shape = helper.make_tensor("one", onnx.TensorProto.FLOAT, [1], [1.0])
    return [
        helper.make_node("Transpose", [x], [t + "nhwc"], name=t + "Transpose", perm=[0, 2, 3, 1]),
        helper.make_node("Mul", [t + "nhwc", t + "nhwc"], [t + "sq"], name=t + "Square"),
        helper.make_node("Reshape", [t + "sq", t + "nlc"], [t + "sq_nlc"], name=t + "Reshape"),
        helper.make_node("Shape", [t + "sq_nlc"], [t + "shape"], name=t + "Shape"),
        helper.make_node("Slice", [t + "shape", t + "i1", t + "i2"], [t + "hw"], name=t + "Slice"),
        helper.make_node("Concat", [t + "i1", t + "hw"], [t + "ones_shape"], name=t + "Concat", axis=0),
        helper.make_node("ConstantOfShape", [t + "ones_shape"], [t + "ones"], name=t + "Ones", value=ones_shape),
        helper.make_node("MatMul", [t + "ones", t + "sq_nlc"], [t + "sumsq"],
                         name=f"{tag}{GRN_SUM_OF_SQUARES}"),
        helper.make_node("Reshape", [t + "sumsq", t + "nc11"], [t + "sumsq_nc11"], name=t + "Reshape_1"),
        helper.make_node("Sqrt", [t + "sumsq_nc11"], [norm], name=t + "Sqrt"),
    ]
