"""Variants of the toy ONNX model (tests/toy_models.py) for builder tests: fp16 casts, int8 Q/DQ, an asanet
local function, and a graph TensorRT cannot parse. Each keeps the asanet-rt I/O contract and metadata."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from asanet_rt.metadata import METADATA_KEY, ModelMetadata
from toy_models import OUTPUTS, make_toy_onnx

# All four outputs: with fewer, the toy keeps dead ArgMax/Cast-to-uint8 nodes, and TensorRT rejects uint8
# intermediate tensors.
TOY = {"outputs": OUTPUTS}


def _edit(src: Path, dst: Path, edit: Callable[[onnx.ModelProto], None], **export: object) -> Path:
    model = onnx.load(str(src))
    edit(model)
    props = {p.key: p.value for p in model.metadata_props}
    meta = ModelMetadata.from_json(props[METADATA_KEY]).with_export(**export)
    helper.set_model_props(model, {METADATA_KEY: meta.to_json()})
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(dst))
    return dst


def _replace_inits(model: onnx.ModelProto, arrays: dict[str, np.ndarray], drop: tuple[str, ...] = ()) -> None:
    keep = [i for i in model.graph.initializer if i.name not in arrays and i.name not in drop]
    del model.graph.initializer[:]
    model.graph.initializer.extend(keep + [numpy_helper.from_array(a, n) for n, a in arrays.items()])


def _init(model: onnx.ModelProto, name: str) -> np.ndarray:
    return next(numpy_helper.to_array(i) for i in model.graph.initializer if i.name == name)


def _rewire(model: onnx.ModelProto, nodes: list[onnx.NodeProto]) -> None:
    del model.graph.node[:]
    model.graph.node.extend(nodes)


def make_fp16_toy(folder: Path, **toy: object) -> Path:
    """The toy with its convolutions in float16: cast in after normalisation, cast the logits back to float32."""
    src = make_toy_onnx(folder / "toy_fp32_src.onnx", **{**TOY, **toy})

    def edit(model: onnx.ModelProto) -> None:
        _replace_inits(model, {n: _init(model, n).astype(np.float16) for n in ("w", "b", "box")})
        nodes = []
        for node in model.graph.node:
            if node.op_type == "Conv" and node.input[0] == "xn":
                nodes.append(helper.make_node("Cast", ["xn"], ["xn16"], to=TensorProto.FLOAT16))
                node.input[0] = "xn16"
            if node.op_type == "Conv" and node.output[0] == "logits":
                node.output[0] = "logits16"
                nodes += [node, helper.make_node("Cast", ["logits16"], ["logits"], to=TensorProto.FLOAT)]
                continue
            nodes.append(node)
        _rewire(model, nodes)
    return _edit(src, folder / "toy_fp16.onnx", edit, precision="fp16")


def make_int8_toy(folder: Path, **toy: object) -> Path:
    """The toy with an INT8 first convolution: Q/DQ on its input (per tensor) and weights (per channel)."""
    src = make_toy_onnx(folder / "toy_fp32_src.onnx", **{**TOY, **toy})

    def edit(model: onnx.ModelProto) -> None:
        w = _init(model, "w")
        w_scale = (np.abs(w).reshape(w.shape[0], -1).max(axis=1) / 127).astype(np.float32)
        w_q = np.clip(np.round(w / w_scale.reshape(-1, 1, 1, 1)), -127, 127).astype(np.int8)
        _replace_inits(model, {"w_q": w_q, "w_scale": w_scale, "x_scale": np.array(0.05, np.float32),
                               "x_zp": np.array(0, np.int8)}, drop=("w",))
        nodes = []
        for node in model.graph.node:
            if node.op_type == "Conv" and node.input[0] == "xn":
                nodes += [helper.make_node("QuantizeLinear", ["xn", "x_scale", "x_zp"], ["xq"]),
                          helper.make_node("DequantizeLinear", ["xq", "x_scale", "x_zp"], ["xdq"]),
                          helper.make_node("DequantizeLinear", ["w_q", "w_scale"], ["w_dq"], axis=0)]
                node.input[0], node.input[1] = "xdq", "w_dq"
            nodes.append(node)
        _rewire(model, nodes)
    return _edit(src, folder / "toy_int8.onnx", edit, precision="int8", int8_target="tensorrt")


def make_function_toy(folder: Path, **toy: object) -> Path:
    """The toy with its normalisation (Sub, Div) as an ONNX local function ``asanet.Normalize``."""
    src = make_toy_onnx(folder / "toy_fp32_src.onnx", **{**TOY, **toy})

    def edit(model: onnx.ModelProto) -> None:
        body = [helper.make_node("Sub", ["x", "mean"], ["centred"]), helper.make_node("Div", ["centred", "std"], ["y"])]
        model.functions.append(helper.make_function("asanet", "Normalize", ["x", "mean", "std"], ["y"], body,
                                                    [helper.make_opsetid("", 17)]))
        model.opset_import.append(helper.make_opsetid("asanet", 1))
        nodes = []
        for node in model.graph.node:
            if node.op_type == "Sub":
                nodes.append(helper.make_node("Normalize", ["x6", "mean", "std"], ["xn"], domain="asanet",
                                              name="normalize"))
            elif node.op_type != "Div":
                nodes.append(node)
        _rewire(model, nodes)
    return _edit(src, folder / "toy_function.onnx", edit, ops="plugins")


def make_unparsable_toy(folder: Path) -> Path:
    """A contract-shaped model with one node TensorRT has no importer (and no plugin) for."""
    src = make_toy_onnx(folder / "toy_fp32_src.onnx", **TOY)

    def edit(model: onnx.ModelProto) -> None:
        nodes = []
        for node in model.graph.node:
            if node.op_type == "Div":
                node.output[0] = "xn_pre"
                nodes += [node, helper.make_node("MysteryOp", ["xn_pre"], ["xn"], domain="example.mystery",
                                                 name="mystery_node")]
                continue
            nodes.append(node)
        _rewire(model, nodes)
        model.opset_import.append(helper.make_opsetid("example.mystery", 1))
    model = onnx.load(str(src))
    edit(model)
    dst = folder / "toy_unparsable.onnx"
    onnx.save(model, str(dst))  # no checker: the op's schema is unknown on purpose
    return dst
