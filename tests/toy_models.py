"""A tiny ONNX model that honours the asanet-rt I/O contract (docs/design.md), for fast runtime and builder tests.

It is not ASANet: a per-pixel linear classifier over the normalised optical + SAR channels, followed by a 3x3
average (so that tile borders matter, like a real network's receptive field). Its outputs are exactly what the
contract names, and its metadata is real ModelMetadata JSON.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from asanet_rt.metadata import METADATA_KEY, ArchSpec, ModelMetadata

OUTPUTS = ("logits", "probabilities", "classes", "confidence")


def toy_metadata(num_classes: int = 4, outputs: Sequence[str] = ("logits",), tile: tuple[int, int] = (32, 512),
                 batch: tuple[int, int] = (1, 8), optical_bands: Sequence[str] = ("red", "green", "blue"),
                 precision: str = "fp32") -> ModelMetadata:
    arch = ArchSpec((1, 1, 1, 1), (8, 16, 32, 64), 16, num_classes)
    meta = ModelMetadata.build(arch, source="toy")
    return meta.with_export(input="raw", optical_bands=list(optical_bands), outputs=list(outputs),
                            batch=list(batch), tile=list(tile), precision=precision, ops="portable", opset=17)


def toy_weights(num_classes: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.normal(0, 1, (num_classes, 6, 1, 1)).astype(np.float32), rng.normal(0, 0.1, num_classes).astype(
        np.float32)


def make_toy_onnx(path: str | Path, num_classes: int = 4, outputs: Sequence[str] = ("logits",),
                  seed: int = 0, **meta_kwargs) -> Path:
    """Write the toy model to ``path`` and return it."""
    meta = toy_metadata(num_classes, outputs, **meta_kwargs)
    bands = list(meta.export["optical_bands"])
    # network channel c takes input band perm[c]
    perm = [bands.index(name) for name in meta.optical_channels]
    w, b = toy_weights(num_classes, seed)
    mean = np.array(list(meta.optical_mean) + [meta.sar_mean[0]] * 3, np.float32).reshape(1, 6, 1, 1)
    std = np.array(list(meta.optical_std) + [meta.sar_std[0]] * 3, np.float32).reshape(1, 6, 1, 1)
    inits = [
        numpy_helper.from_array(np.array(perm, np.int64), "perm"),
        numpy_helper.from_array(mean, "mean"),
        numpy_helper.from_array(std, "std"),
        numpy_helper.from_array(w, "w"),
        numpy_helper.from_array(b, "b"),
        numpy_helper.from_array(np.full((num_classes, 1, 3, 3), 1 / 9, np.float32), "box"),
    ]
    nodes = [
        helper.make_node("Gather", ["optical", "perm"], ["opt_ordered"], axis=1),
        helper.make_node("Concat", ["sar", "sar", "sar"], ["sar3"], axis=1),
        helper.make_node("Concat", ["opt_ordered", "sar3"], ["x6"], axis=1),
        helper.make_node("Sub", ["x6", "mean"], ["xc"]),
        helper.make_node("Div", ["xc", "std"], ["xn"]),
        helper.make_node("Conv", ["xn", "w", "b"], ["lin"]),
        helper.make_node("Conv", ["lin", "box"], ["logits"], pads=[1, 1, 1, 1], group=num_classes),
        helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
        helper.make_node("ArgMax", ["logits"], ["argmax"], axis=1, keepdims=0),
        helper.make_node("Cast", ["argmax"], ["classes"], to=TensorProto.UINT8),
        helper.make_node("ReduceMax", ["probabilities"], ["confidence"], keepdims=0, axes=[1]),
    ]
    # Only the nodes the chosen outputs need: TensorRT rejects dead ArgMax/Cast nodes.
    needed = {"logits": {"logits"}, "probabilities": {"logits", "probabilities"},
              "classes": {"logits", "argmax", "classes"}, "confidence": {"logits", "probabilities", "confidence"}}
    keep = set().union(*(needed[name] for name in outputs))
    tail = {"logits", "probabilities", "argmax", "classes", "confidence"}
    nodes = [n for n in nodes if n.output[0] not in tail or n.output[0] in keep]
    dims = ["batch", "height", "width"]
    out_info = {
        "logits": helper.make_tensor_value_info("logits", TensorProto.FLOAT, [dims[0], num_classes] + dims[1:]),
        "probabilities": helper.make_tensor_value_info("probabilities", TensorProto.FLOAT,
                                                       [dims[0], num_classes] + dims[1:]),
        "classes": helper.make_tensor_value_info("classes", TensorProto.UINT8, dims),
        "confidence": helper.make_tensor_value_info("confidence", TensorProto.FLOAT, dims),
    }
    graph = helper.make_graph(
        nodes, "asanet_toy",
        [helper.make_tensor_value_info("optical", TensorProto.FLOAT, [dims[0], 3] + dims[1:]),
         helper.make_tensor_value_info("sar", TensorProto.FLOAT, [dims[0], 1] + dims[1:])],
        [out_info[name] for name in outputs], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="asanet-rt-tests")
    model.ir_version = 8
    helper.set_model_props(model, {METADATA_KEY: meta.to_json()})
    onnx.checker.check_model(model, full_check=True)
    path = Path(path)
    onnx.save(model, path)
    return path


def toy_reference(optical: np.ndarray, sar: np.ndarray, num_classes: int = 4, seed: int = 0,
                  optical_bands: Sequence[str] = ("red", "green", "blue")) -> np.ndarray:
    """The toy model's logits computed in numpy (zero padding at the image border, like the ONNX Conv)."""
    meta = toy_metadata(num_classes, optical_bands=optical_bands)
    perm = [list(optical_bands).index(name) for name in meta.optical_channels]
    w, b = toy_weights(num_classes, seed)
    x = np.concatenate([optical[:, perm], np.repeat(sar, 3, axis=1)], axis=1).astype(np.float64)
    mean = np.array(list(meta.optical_mean) + [meta.sar_mean[0]] * 3).reshape(1, 6, 1, 1)
    std = np.array(list(meta.optical_std) + [meta.sar_std[0]] * 3).reshape(1, 6, 1, 1)
    lin = np.einsum("kc,nchw->nkhw", w[:, :, 0, 0], (x - mean) / std) + b.reshape(1, -1, 1, 1)
    padded = np.pad(lin, ((0, 0), (0, 0), (1, 1), (1, 1)))
    h, w_ = lin.shape[2:]
    return sum(padded[:, :, dy:dy + h, dx:dx + w_] for dy in range(3) for dx in range(3)) / 9
