"""What an ONNX file holds, for ``asanet-rt inspect`` and the engine builder: I/O, metadata, precision, op flavour.

Torch- and TensorRT-free. Uses the ``onnx`` package when installed (full graph facts); otherwise ONNX Runtime for
the I/O and the metadata, and a minimal protobuf scan of the file for the asanet ops and local functions (so the
engine builder sees a plugin export without ``onnx``); the graph's precision then stays unknown.
"""
from __future__ import annotations

import mmap
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

from .errors import AsanetError
from .metadata import METADATA_KEY, ModelMetadata
from . import protowire
from .model_files import check_onnx_file

#: ONNX domain of the fused ops (docs/design.md, "Plugin ops").
ASANET_DOMAIN = "asanet"
_QDQ = {"QuantizeLinear", "DequantizeLinear"}
# onnx.TensorProto element types by number, so this module reads them without importing onnx.
_ELEM_TYPES = {1: "float32", 2: "uint8", 3: "int8", 4: "uint16", 5: "int16", 6: "int32", 7: "int64", 9: "bool",
               10: "float16", 11: "float64", 12: "uint32", 13: "uint64", 16: "bfloat16"}
_FLOAT16 = 10
_ORT_TYPES = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(uint8)": "uint8",
              "tensor(int8)": "int8", "tensor(int64)": "int64", "tensor(int32)": "int32", "tensor(bool)": "bool"}


@dataclass
class TensorSpec:
    """One graph input or output: name, element type, shape (ints, or dimension names for dynamic axes)."""

    name: str
    dtype: str
    shape: list[Any]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "dtype": self.dtype, "shape": list(self.shape)}


@dataclass
class OnnxInfo:
    """Facts about one ONNX file."""

    path: str
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    metadata: ModelMetadata | None
    opsets: dict[str, int] = field(default_factory=dict)
    precision: str | None = None            # int8 (any Q/DQ), fp16 (any float16 tensor), fp32; None if unknown
    asanet_ops: dict[str, int] = field(default_factory=dict)   # asanet-domain op type -> node count
    local_functions: list[str] = field(default_factory=list)   # "domain.name"
    nodes: int = 0
    producer: str = ""
    reader: str = "onnx"                    # "onnx" or "onnxruntime" (fewer facts)

    @property
    def ops_flavour(self) -> str:
        """``plugins`` when the graph calls asanet-domain ops, else ``portable``."""
        return "plugins" if self.asanet_ops else "portable"

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path, "kind": "onnx", "reader": self.reader, "producer": self.producer,
            "inputs": [t.to_dict() for t in self.inputs], "outputs": [t.to_dict() for t in self.outputs],
            "opsets": dict(self.opsets), "nodes": self.nodes, "precision": self.precision,
            "ops_flavour": self.ops_flavour, "asanet_ops": dict(self.asanet_ops),
            "local_functions": list(self.local_functions),
            "metadata": self.metadata.to_dict() if self.metadata else None,
        }


def read_onnx_info(path: str | os.PathLike) -> OnnxInfo:
    """Read ``path``'s I/O, metadata and graph facts (weights stored outside the file are not loaded)."""
    path = Path(path)
    if not path.is_file():
        raise AsanetError(f"{path}: ONNX file not found")
    check_onnx_file(path)
    try:
        import onnx
    except ModuleNotFoundError:
        return _read_with_onnxruntime(path)
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # noqa: BLE001 - protobuf raises its own DecodeError family
        raise AsanetError(f"{path}: not a readable ONNX file ({type(exc).__name__}: {exc})") from exc
    return onnx_info_from_model(model, str(path))


def onnx_info_from_model(model: Any, path: str) -> OnnxInfo:
    """``OnnxInfo`` of an in-memory ``onnx.ModelProto``."""
    graph = model.graph
    initializers = {init.name for init in graph.initializer}
    props = {p.key: p.value for p in model.metadata_props}
    meta = ModelMetadata.from_json(props[METADATA_KEY], source=path) if METADATA_KEY in props else None
    asanet_ops: dict[str, int] = {}
    for node in graph.node:
        if node.domain == ASANET_DOMAIN:
            asanet_ops[node.op_type] = asanet_ops.get(node.op_type, 0) + 1
    return OnnxInfo(
        path=path,
        inputs=[_spec(v) for v in graph.input if v.name not in initializers],
        outputs=[_spec(v) for v in graph.output],
        metadata=meta,
        opsets={op.domain or "ai.onnx": int(op.version) for op in model.opset_import},
        precision=graph_precision(model),
        asanet_ops=asanet_ops,
        local_functions=[f"{f.domain}.{f.name}" for f in model.functions],
        nodes=len(graph.node),
        producer=" ".join(p for p in (model.producer_name, model.producer_version) if p),
    )


def _spec(value_info: Any) -> TensorSpec:
    tensor_type = value_info.type.tensor_type
    shape = [d.dim_param if d.dim_param else (int(d.dim_value) if d.HasField("dim_value") else "?")
             for d in tensor_type.shape.dim]
    return TensorSpec(value_info.name, _ELEM_TYPES.get(tensor_type.elem_type, str(tensor_type.elem_type)), shape)


def _all_nodes(model: Any) -> Iterator[Any]:
    """Every node: the main graph, local function bodies, and subgraphs (If/Loop bodies)."""
    stack: list[Iterable[Any]] = [model.graph.node] + [f.node for f in model.functions]
    while stack:
        for node in stack.pop():
            yield node
            for attr in node.attribute:
                if attr.HasField("g"):
                    stack.append(attr.g.node)
                stack.extend(g.node for g in attr.graphs)


def graph_precision(model: Any) -> str:
    """int8 if any Q/DQ node, else fp16 if any float16 tensor (initializer, cast, constant, I/O), else fp32."""
    graph = model.graph
    fp16 = any(init.data_type == _FLOAT16 for init in graph.initializer)
    fp16 = fp16 or any(v.type.tensor_type.elem_type == _FLOAT16
                       for v in list(graph.input) + list(graph.output) + list(graph.value_info))
    for node in _all_nodes(model):
        if node.op_type in _QDQ:
            return "int8"
        if fp16:
            continue
        for attr in node.attribute:
            if node.op_type == "Cast" and attr.name == "to" and attr.i == _FLOAT16:
                fp16 = True
            elif attr.HasField("t") and attr.t.data_type == _FLOAT16:
                fp16 = True
    return "fp16" if fp16 else "fp32"


def _read_with_onnxruntime(path: Path) -> OnnxInfo:
    """Fallback without the ``onnx`` package: I/O and metadata through an ONNX Runtime session."""
    try:
        import onnxruntime as ort
    except ModuleNotFoundError as exc:
        raise AsanetError(f"{path}: reading ONNX needs the 'onnx' or 'onnxruntime' package") from exc
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    try:
        sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own exception family
        raise AsanetError(f"{path}: not a loadable ONNX model ({type(exc).__name__}: {exc})") from exc
    text = sess.get_modelmeta().custom_metadata_map.get(METADATA_KEY)
    meta = ModelMetadata.from_json(text, source=str(path)) if text else None

    def specs(values: Any) -> list[TensorSpec]:
        return [TensorSpec(v.name, _ORT_TYPES.get(v.type, v.type), list(v.shape)) for v in values]

    asanet_ops, functions, nodes = scan_asanet_ops(path)
    return OnnxInfo(str(path), specs(sess.get_inputs()), specs(sess.get_outputs()), meta, asanet_ops=asanet_ops,
                    local_functions=functions, nodes=nodes, reader="onnxruntime")


# ------------------------------------------------------------------------------------------------------------
# A minimal protobuf reader (ModelProto -> graph nodes' op_type/domain, local functions' name/domain)
# ------------------------------------------------------------------------------------------------------------
# Field numbers from onnx.proto: ModelProto.graph = 7, ModelProto.functions = 25; GraphProto.node = 1;
# NodeProto.op_type = 4, NodeProto.domain = 7; FunctionProto.name = 1, FunctionProto.domain = 10.
_MODEL_GRAPH, _MODEL_FUNCTIONS, _GRAPH_NODE = 7, 25, 1
_NODE_OP_TYPE, _NODE_DOMAIN, _FUNCTION_NAME, _FUNCTION_DOMAIN = 4, 7, 1, 10


def _fields(buf: memoryview, start: int, end: int) -> Iterator[tuple[int, int, int]]:
    """(field number, start, end) of each length-delimited field in ``buf[start:end]``; other fields skipped."""
    for number, wire, value in protowire.fields(buf, start, end):
        if wire == protowire.BYTES:
            a, b = value  # type: ignore[misc]
            yield number, a, b


def _strings(buf: memoryview, start: int, end: int, wanted: tuple[int, ...]) -> dict[int, str]:
    return {n: bytes(buf[a:b]).decode("utf-8", "replace") for n, a, b in _fields(buf, start, end) if n in wanted}


def scan_asanet_ops(path: str | os.PathLike) -> tuple[dict[str, int], list[str], int]:
    """asanet-domain op type -> count, local functions (``domain.name``) and the main graph's node count, read
    straight from the protobuf (no ``onnx`` package). Weights are skipped, never decoded."""
    path = Path(path)
    ops: dict[str, int] = {}
    functions: list[str] = []
    nodes = 0
    try:
        with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
            buf = memoryview(mapped)
            try:
                for number, start, end in _fields(buf, 0, len(buf)):
                    if number == _MODEL_GRAPH:
                        for field_no, a, b in _fields(buf, start, end):
                            if field_no != _GRAPH_NODE:
                                continue
                            nodes += 1
                            node = _strings(buf, a, b, (_NODE_OP_TYPE, _NODE_DOMAIN))
                            if node.get(_NODE_DOMAIN) == ASANET_DOMAIN:
                                op = node.get(_NODE_OP_TYPE, "")
                                ops[op] = ops.get(op, 0) + 1
                    elif number == _MODEL_FUNCTIONS:
                        fn = _strings(buf, start, end, (_FUNCTION_NAME, _FUNCTION_DOMAIN))
                        functions.append(f"{fn.get(_FUNCTION_DOMAIN, '')}.{fn.get(_FUNCTION_NAME, '')}")
            finally:
                buf.release()
    except ValueError as exc:
        raise AsanetError(f"{path}: not a readable ONNX file ({exc})") from exc
    except OSError as exc:
        raise AsanetError(f"{path}: cannot read the ONNX file ({exc})") from exc
    return ops, functions, nodes
