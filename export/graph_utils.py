"""Small ONNX graph queries shared by the precision passes: producers, consumers, static shapes, the logits tensor."""
from __future__ import annotations

from collections import defaultdict
from typing import Iterable, Sequence

import onnx
from onnx import TensorProto


def copy_model(model: onnx.ModelProto) -> onnx.ModelProto:
    clone = onnx.ModelProto()
    clone.CopyFrom(model)
    return clone


def name_nodes(model: onnx.ModelProto) -> onnx.ModelProto:
    """Give every unnamed node a unique name (block lists and exclusions address nodes by name)."""
    seen = {n.name for n in model.graph.node if n.name}
    for i, node in enumerate(model.graph.node):
        if not node.name:
            name = f"/{node.op_type}_{i}"
            while name in seen:
                name += "_"
            node.name = name
            seen.add(name)
    return model


def producers(model: onnx.ModelProto) -> dict[str, onnx.NodeProto]:
    return {out: node for node in model.graph.node for out in node.output}


def consumers(model: onnx.ModelProto) -> dict[str, list[onnx.NodeProto]]:
    users: dict[str, list[onnx.NodeProto]] = defaultdict(list)
    for node in model.graph.node:
        for name in node.input:
            users[name].append(node)
    return users


def value_types(model: onnx.ModelProto) -> dict[str, onnx.TypeProto]:
    """Types of every named tensor that shape inference (or the graph) declares."""
    graph = model.graph
    types = {vi.name: vi.type for vi in (*graph.value_info, *graph.input, *graph.output)}
    for init in graph.initializer:
        types.setdefault(init.name, onnx.helper.make_tensor_type_proto(init.data_type, list(init.dims)))
    return types


def static_dims(tp: onnx.TypeProto | None) -> list[int | None] | None:
    """Dims of a tensor type, ``None`` for symbolic ones; ``None`` if the rank is unknown."""
    if tp is None or not tp.HasField("tensor_type") or not tp.tensor_type.HasField("shape"):
        return None
    return [d.dim_value if d.HasField("dim_value") else None for d in tp.tensor_type.shape.dim]


def elem_type(tp: onnx.TypeProto | None) -> int:
    return tp.tensor_type.elem_type if tp is not None and tp.HasField("tensor_type") else 0


def is_pooled(tp: onnx.TypeProto | None) -> bool:
    """A per-channel vector: (N, C, 1, 1) or (N, C), i.e. the output of a global pooling."""
    dims = static_dims(tp)
    return dims is not None and (len(dims) == 2 or (len(dims) == 4 and dims[2] == 1 and dims[3] == 1))


def constant_names(model: onnx.ModelProto) -> set[str]:
    """Initializers and Constant-node outputs."""
    names = {init.name for init in model.graph.initializer}
    names |= {out for node in model.graph.node if node.op_type == "Constant" for out in node.output}
    return names


def logits_tensor(model: onnx.ModelProto) -> str:
    """The name of the logits tensor: the ``logits`` output, else the input of the head's Softmax or ArgMax."""
    outputs = {o.name for o in model.graph.output}
    if "logits" in outputs:
        return "logits"
    users = consumers(model)
    made = producers(model)
    for name in ("probabilities", "confidence", "classes"):
        if name not in outputs:
            continue
        node = made[name]
        # walk back through the output tail (Cast, ReduceMax) to the Softmax/ArgMax over classes
        while node.op_type in ("Cast", "ReduceMax") and node.input[0] in made:
            node = made[node.input[0]]
        if node.op_type in ("Softmax", "ArgMax"):
            return node.input[0]
        # graph_cpu.decompose_softmax: Div(Exp(Sub(x, ReduceMax(x))), ReduceSum(...))
        exp = made.get(node.input[0]) if node.op_type == "Div" else None
        sub = made.get(exp.input[0]) if exp is not None and exp.op_type == "Exp" else None
        if sub is not None and sub.op_type == "Sub" and made.get(sub.input[1]) is not None \
                and made[sub.input[1]].op_type == "ReduceMax":
            return sub.input[0]
    raise ValueError(f"no logits tensor found among outputs {sorted(outputs)}")


def add_outputs(model: onnx.ModelProto, names: Sequence[str]) -> onnx.ModelProto:
    """A copy of ``model`` that also returns ``names``, typed as the graph types them."""
    clone = copy_model(model)
    types = value_types(onnx.shape_inference.infer_shapes(clone))
    existing = {o.name for o in clone.graph.output}
    for name in names:
        if name not in existing:
            dtype = elem_type(types.get(name)) or TensorProto.FLOAT
            clone.graph.output.append(onnx.helper.make_tensor_value_info(name, dtype, None))
    return clone


def forward_closure(model: onnx.ModelProto, start: Iterable[onnx.NodeProto], keep) -> list[onnx.NodeProto]:
    """Nodes reachable downstream of ``start`` (inclusive) through nodes for which ``keep(node)`` holds."""
    users = consumers(model)
    found: dict[str, onnx.NodeProto] = {}
    stack = list(start)
    while stack:
        node = stack.pop()
        if node.name in found:
            continue
        found[node.name] = node
        for out in node.output:
            stack += [u for u in users.get(out, []) if u.name not in found and keep(u)]
    return list(found.values())


def toposort(model: onnx.ModelProto) -> onnx.ModelProto:
    """Order nodes so every input is produced before use (converters append their Casts at the end)."""
    graph = model.graph
    ready = {i.name for i in graph.input} | {i.name for i in graph.initializer} | {""}
    pending = list(graph.node)
    ordered = []
    while pending:
        rest = []
        for node in pending:
            if all(i in ready for i in node.input):
                ordered.append(node)
                ready.update(node.output)
            else:
                rest.append(node)
        if len(rest) == len(pending):
            raise ValueError(f"graph has a cycle or a dangling input at node {rest[0].name!r}")
        pending = rest
    del graph.node[:]
    graph.node.extend(ordered)
    return model
