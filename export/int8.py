"""INT8 ONNX with explicit QuantizeLinear/DequantizeLinear, made by ONNX Runtime's static quantiser (QDQ format).

Two targets, because the two consumers want different Q/DQ forms:

- ``tensorrt``: signed INT8, symmetric (zero point 0) per-tensor activations and per-channel weights, float
  biases. TensorRT's explicit-quantisation mode accepts exactly this form (it has no zero points and no int32
  bias DequantizeLinear) and fuses each DQ -> Conv -> (Q) into an INT8 kernel.
- ``cpu``: ONNX Runtime's fast CPU form: uint8 asymmetric activations (the zero point absorbs the one-sided
  range after GELU/ReLU, one bit more resolution than symmetric int8), int8 symmetric per-channel weights,
  int32 biases; ORT fuses the groups into QLinearConv. The float work between the quantised convolutions is
  rewritten into ORT's fastest form first (``graph_cpu.cpu_int8_form``).
- ``openvino``: the same Q/DQ, on the form OpenVINO's CPU plugin runs fastest (``graph_cpu.openvino_int8_form``:
  one GELU op and GRN as one per-channel factor, but GRN's reduction and the softmaxes as traced, which its
  plugin runs in its own blocked layouts).

Only Conv, MatMul and Gemm are quantised (where INT8 pays). Kept in float by default: LayerNorm, GRN and
softmax (not in the quantised op set at all), the two stems (the first convolution of each stream, whose input
is the normalised image: on imagery unlike the calibration set its range is exceeded first), the SFM/CFM gate MLPs and other convolutions on globally pooled
per-channel vectors (no compute to save, and a gate error scales whole channels), and the pooling-matrix
products of the exact adaptive average pooling (activation x activation, exact averaging). ``keep_fp="auto"``
adds a sensitivity pass that leaves the layers whose quantisation hurts the logits most in float.

Calibration ranges are collected once on the portable graph (``calibration.collect_ranges``, checked
statistics) and handed to ``quantize_static`` as a calibration cache. The plugin flavour is quantised directly
(the quantiser leaves the ``asanet`` ops and their function bodies alone, so Q/DQ stay outside the fused ops)
with the portable graph's ranges carried over convolution by convolution (matched by weights), so both
flavours get identical scales.
"""
from __future__ import annotations

import contextlib
import hashlib
import logging
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import onnx
from onnx import numpy_helper

from asanet_rt.errors import AsanetError

from .calibration import CalibrationResult, Tile, collect_ranges, make_session
from .graph_cpu import GRN_SUM_OF_SQUARES, cpu_int8_form, openvino_int8_form
from .graph_utils import add_outputs, constant_names, copy_model, is_pooled, logits_tensor, name_nodes, value_types

log = logging.getLogger(__name__)

INT8_TARGETS = ("tensorrt", "cpu", "openvino")
#: Float forms the Q/DQ can be placed into (``make_int8(graph_form=...)``); each target uses its namesake.
GRAPH_FORMS = {"traced": lambda model: model, "cpu": cpu_int8_form, "openvino": openvino_int8_form}
QUANTIZED_OP_TYPES = ("Conv", "MatMul", "Gemm")
#: auto sensitivity pass: stop keeping layers in float once argmax agreement with FP32 reaches this ...
AGREEMENT_GOAL = 0.995
#: ... or once this share of the quantisable multiply-accumulates is kept in float.
MAX_FLOAT_SHARE = 0.15
#: and never keep more than this many layers (each float island costs two reformat kernels on TensorRT)
MAX_KEPT = 8


@dataclass(frozen=True)
class KeptLayer:
    """A quantisable node left in float, and why."""

    name: str
    reason: str
    sensitivity: float | None = None  # mean |logit error| when only this node is quantised (auto pass)

    def to_dict(self) -> dict:
        data = {"name": self.name, "reason": self.reason}
        if self.sensitivity is not None:
            data["sensitivity_mean_abs_logit_error"] = round(self.sensitivity, 6)
        return data


@dataclass
class Int8Result:
    model: onnx.ModelProto
    target: str
    calibration: CalibrationResult
    kept: list[KeptLayer]
    quantized: list[str]
    sensitivity: list[dict] = field(default_factory=list)


def parse_keep_fp(text: str | Sequence[str] | None) -> str | tuple[str, ...]:
    """``auto`` | ``none`` | comma list of node names."""
    if text is None:
        return "auto"
    if isinstance(text, str):
        if text.strip().lower() in ("auto", "none"):
            return text.strip().lower()
        names = tuple(p.strip() for p in text.split(",") if p.strip())
    else:
        names = tuple(text)
    if not names:
        raise AsanetError("--keep-fp: give auto, none, or a comma list of node names")
    return names


# ---------------------------------------------------------------------------------------------------- roles
def node_roles(model: onnx.ModelProto) -> dict[str, tuple[str, str]]:
    """For every Conv/MatMul/Gemm: ``(role, reason)``; role ``quantize`` or ``float`` (kept by default)."""
    types = value_types(model)
    consts = constant_names(model)
    stems = stem_convs(model)
    roles = {}
    for node in model.graph.node:
        if node.op_type not in QUANTIZED_OP_TYPES or node.name.endswith(GRN_SUM_OF_SQUARES):
            continue  # GRN's sum of squares is a reduction written as a product: never a quantisation candidate
        if node.name in stems:
            roles[node.name] = ("float", "stem (patchify) convolution on the normalised image: imagery unlike "
                                         "the calibration set leaves its range here first; negligible compute")
        elif node.op_type == "MatMul" and not any(i in consts for i in node.input):
            roles[node.name] = ("float", "pooling-matrix product (activation x activation): exact averaging, "
                                         "negligible compute")
        elif is_pooled(types.get(node.input[0])):
            where = "SFM gate MLP" if "/FRMs." in node.name else "CFM gate MLP" if "/FFMs." in node.name else \
                "pyramid-pooling branch"
            roles[node.name] = ("float", f"{where} on a globally pooled vector: negligible compute, its error "
                                         f"scales whole channels")
        else:
            roles[node.name] = ("quantize", "")
    return roles


def stem_convs(model: onnx.ModelProto) -> set[str]:
    """Convolutions that read the graph inputs through no other convolution (the streams' patchify stems)."""
    users: dict[str, list[onnx.NodeProto]] = {}
    for node in model.graph.node:
        for name in node.input:
            users.setdefault(name, []).append(node)
    stems, seen = set(), set()
    stack = [i.name for i in model.graph.input]
    while stack:
        tensor = stack.pop()
        for node in users.get(tensor, []):
            if node.name in seen:
                continue
            seen.add(node.name)
            if node.op_type == "Conv":
                stems.add(node.name)
            else:
                stack += list(node.output)
    return stems


def conv_macs(model: onnx.ModelProto, tile: int = 256) -> dict[str, float]:
    """Approximate multiply-accumulates per Conv at a ``tile`` input (for the float-share budget)."""
    inits = {i.name: i for i in model.graph.initializer}
    types = value_types(model)
    macs = {}
    for node in model.graph.node:
        if node.op_type != "Conv" or node.input[1] not in inits:
            continue
        w = inits[node.input[1]].dims
        dims = [d for d in (types.get(node.output[0]).tensor_type.shape.dim if node.output[0] in types else [])]
        # output H, W are symbolic in a dynamic graph: estimate from the stride path via the name's stage
        scale = _stride_from_name(node.name)
        hw = (tile / scale) ** 2 if scale else 1.0
        if len(dims) == 4 and dims[2].HasField("dim_value") and dims[2].dim_value == 1:
            hw = 1.0
        macs[node.name] = float(np.prod(w)) * hw
    return macs


def _stride_from_name(name: str) -> int:
    for tag, stride in (("stages.0", 4), ("stages.1", 8), ("stages.2", 16), ("stages.3", 32),
                        ("downsample_layers.0", 4), ("downsample_layers.1", 8), ("downsample_layers.2", 16),
                        ("downsample_layers.3", 32), ("FRMs.0", 4), ("FFMs.0", 4), ("FRMs.1", 8), ("FFMs.1", 8),
                        ("FRMs.2", 16), ("FFMs.2", 16), ("FRMs.3", 32), ("FFMs.3", 32), ("lateral_convs.0", 4),
                        ("fpn_convs.0", 4), ("lateral_convs.1", 8), ("fpn_convs.1", 8), ("lateral_convs.2", 16),
                        ("fpn_convs.2", 16), ("bottleneck", 32), ("fpn_bottleneck", 4), ("conv_seg", 4)):
        if f"/{tag}/" in name or f"/{tag}_" in name:
            return stride
    return 4


def activation_tensors(model: onnx.ModelProto, nodes: Sequence[str] | None = None) -> list[str]:
    """Float activation inputs and outputs of the quantisable nodes (the tensors that need ranges)."""
    consts = constant_names(model)
    wanted = set(nodes) if nodes is not None else None
    names = []
    for node in model.graph.node:
        if node.op_type in QUANTIZED_OP_TYPES and (wanted is None or node.name in wanted):
            names += [t for t in (*node.input[:2], node.output[0]) if t and t not in consts]
    return list(dict.fromkeys(names))


# ---------------------------------------------------------------------------------------------------- quantise
def quantize(model: onnx.ModelProto, calibration: CalibrationResult, target: str,
             exclude: Sequence[str] = ()) -> onnx.ModelProto:
    """Insert Q/DQ for ``target`` with ``quantize_static`` from precomputed ranges; ``exclude`` stays float."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.calibrate import save_tensors_data

    if target not in INT8_TARGETS:
        raise AsanetError(f"--int8-target {target!r}: choose one of {', '.join(INT8_TARGETS)}")
    trt = target == "tensorrt"
    method = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
              "entropy": CalibrationMethod.Entropy}[calibration.method]
    extra = {
        "ActivationSymmetric": trt,  # TensorRT: zero point 0; CPU: asymmetric uint8
        "WeightSymmetric": True,
        # TensorRT takes biases in float (no int32 DequantizeLinear); ORT's QLinearConv wants int32 biases.
        "QuantizeBias": not trt,
    }
    if trt:
        # TensorRT's placement: Q/DQ on the inputs of weighted layers only; it picks INT8 outputs itself where
        # the consumer is INT8. ORT's CPU kernels need the output Q to fuse DQ -> Conv -> Q into QLinearConv.
        extra["OpTypesToExcludeOutputQuantization"] = list(QUANTIZED_OP_TYPES)
    exclude = [*exclude, *(n.name for n in model.graph.node if n.name.endswith(GRN_SUM_OF_SQUARES))]
    with tempfile.TemporaryDirectory(prefix="asanet_int8_") as tmp:
        cache = Path(tmp) / "ranges.json"
        save_tensors_data(calibration.tensors_data(), cache)
        out = Path(tmp) / "int8.onnx"
        with _quiet_quantizer():
            quantize_static(copy_model(model), out, calibration_data_reader=None, calibration_cache_path=cache,
                            quant_format=QuantFormat.QDQ, op_types_to_quantize=list(QUANTIZED_OP_TYPES),
                            per_channel=True, reduce_range=False,
                            activation_type=QuantType.QInt8 if trt else QuantType.QUInt8,
                            weight_type=QuantType.QInt8, nodes_to_exclude=list(exclude),
                            calibrate_method=method, extra_options=extra)
        quantized = onnx.load(str(out))
    # the quantiser's inferred shapes can carry stale symbolic dims; finalize() infers them afresh
    del quantized.graph.value_info[:]
    return quantized


@contextlib.contextmanager
def _quiet_quantizer():
    """The quantiser warns about pre-processing on every call; the graph is already simplified and inferred."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


# ---------------------------------------------------------------------------------------------------- measure
class LogitProbe:
    """Runs models on fixed tiles and compares their logits with the FP32 model's."""

    def __init__(self, reference: onnx.ModelProto, tiles: Sequence[Tile]) -> None:
        self.tiles = list(tiles)
        self.reference = self.logits(reference)

    def logits(self, model: onnx.ModelProto) -> list[np.ndarray]:
        name = logits_tensor(model)
        session = make_session(add_outputs(model, [name]))
        return [session.run([name], t.feed())[0].astype(np.float32) for t in self.tiles]

    def error(self, model: onnx.ModelProto) -> dict[str, float]:
        """Mean and max |logit error| and argmax agreement against the FP32 model."""
        got = self.logits(model)
        abs_err = [np.abs(a - b) for a, b in zip(got, self.reference)]
        agree = sum(int((a.argmax(1) == b.argmax(1)).sum()) for a, b in zip(got, self.reference))
        pixels = sum(a.shape[0] * a.shape[2] * a.shape[3] for a in got)
        return {"mean_abs": float(np.mean([e.mean() for e in abs_err])),
                "max_abs": float(max(e.max() for e in abs_err)), "agreement": agree / pixels}


def float_islands(quantized: onnx.ModelProto, fp32: onnx.ModelProto, names: Sequence[str]) -> onnx.ModelProto:
    """``quantized`` with the nodes ``names`` back on their float inputs (original activations and weights).

    Equivalent to quantising with those nodes excluded, without re-running the quantiser: what makes a
    per-node sensitivity sweep affordable.
    """
    model = copy_model(quantized)
    float_nodes = {n.name: n for n in fp32.graph.node}
    float_inits = {i.name: i for i in fp32.graph.initializer}
    have = {i.name for i in model.graph.initializer}
    made = {out for node in model.graph.node for out in node.output}
    wanted = set(names)
    for node in model.graph.node:
        if node.name not in wanted:
            continue
        inputs = []
        for name in float_nodes[node.name].input:
            if name in float_inits:
                # the quantiser reuses a bias's name for its DequantizeLinear output: restore under a new name
                new_name = f"{name}/float" if name in made else name
                if new_name not in have:
                    init = onnx.TensorProto()
                    init.CopyFrom(float_inits[name])
                    init.name = new_name
                    model.graph.initializer.append(init)
                    have.add(new_name)
                name = new_name
            inputs.append(name)
        del node.input[:]
        node.input.extend(inputs)
    return prune(model)


def prune(model: onnx.ModelProto) -> onnx.ModelProto:
    """Drop nodes and initializers nothing consumes (Q/DQ pairs orphaned by ``float_islands``)."""
    graph = model.graph
    needed = {o.name for o in graph.output}
    keep = []
    for node in reversed(graph.node):
        if any(o in needed for o in node.output):
            keep.append(node)
            needed.update(node.input)
    keep.reverse()
    del graph.node[:]
    graph.node.extend(keep)
    inits = [i for i in graph.initializer if i.name in needed]
    del graph.initializer[:]
    graph.initializer.extend(inits)
    return model


def sensitivity_pass(model: onnx.ModelProto, calibration: CalibrationResult, target: str, probe: LogitProbe,
                     candidates: Sequence[str], default_excluded: Sequence[str],
                     progress: Callable[[str], None] | None = None) -> tuple[list[KeptLayer], list[dict]]:
    """Rank quantisable nodes by the logit error of quantising each alone; keep the worst in float (greedy).

    Keeps the most sensitive nodes one by one, re-measuring the whole INT8 model (a node stays only if argmax
    agreement with FP32 improves), until agreement reaches ``AGREEMENT_GOAL``, the float share of MACs would
    pass ``MAX_FLOAT_SHARE`` or ``MAX_KEPT`` nodes are kept. Each variant is built by ``float_islands`` from one
    quantised graph, so the sweep costs one inference pass per candidate, not one quantiser run.
    """
    full = quantize(model, calibration, target, exclude=default_excluded)
    scores = []
    for i, name in enumerate(candidates):
        others = [c for c in candidates if c != name]
        err = probe.error(float_islands(full, model, others))
        scores.append({"name": name, **{k: round(v, 6) for k, v in err.items()}})
        if progress and (i + 1) % 20 == 0:
            progress(f"sensitivity {i + 1}/{len(candidates)}")
    scores.sort(key=lambda s: -s["mean_abs"])
    macs = conv_macs(model)
    total = sum(macs.get(c, 0.0) for c in candidates) or 1.0
    kept: list[KeptLayer] = []
    current = probe.error(full)
    float_share = 0.0
    for score in scores:
        if current["agreement"] >= AGREEMENT_GOAL or len(kept) >= MAX_KEPT:
            break
        share = macs.get(score["name"], 0.0) / total
        if float_share + share > MAX_FLOAT_SHARE:
            continue
        trial = probe.error(float_islands(full, model, [*(k.name for k in kept), score["name"]]))
        better = trial["agreement"] > current["agreement"] or (
            trial["agreement"] == current["agreement"] and trial["mean_abs"] < current["mean_abs"])
        if not better:
            continue  # quantisation noise elsewhere dominates; keeping this one buys nothing
        kept.append(KeptLayer(score["name"], f"sensitivity pass: quantising it alone gives mean |logit error| "
                                             f"{score['mean_abs']:.3g}, agreement {score['agreement']:.4f}; "
                                             f"keeping it float: {current['agreement']:.4f} -> "
                                             f"{trial['agreement']:.4f}", score["mean_abs"]))
        current = trial
        float_share += share
    return kept, scores


# ---------------------------------------------------------------------------------------------------- flavours
def share_stacked_ranges(model: onnx.ModelProto, calibration: CalibrationResult) -> CalibrationResult:
    """One output range for the CFM's fc1/fc2 pair (two convs on one input, each feeding a softmax).

    The plugin flavour stacks them into one convolution, whose output can have only one range; giving both
    portable convs that union makes the two flavours' INT8 graphs quantise identically.
    """
    users: dict[str, list[onnx.NodeProto]] = {}
    for node in model.graph.node:
        for name in node.input:
            users.setdefault(name, []).append(node)
    by_input: dict[str, list[onnx.NodeProto]] = {}
    for node in model.graph.node:
        if node.op_type == "Conv" and all(u.op_type == "Softmax" for u in users.get(node.output[0], [])) \
                and users.get(node.output[0]):
            by_input.setdefault(node.input[0], []).append(node)
    ranges = dict(calibration.ranges)
    for pair in by_input.values():
        outs = [n.output[0] for n in pair if n.output[0] in ranges]
        if len(outs) > 1:
            union = (min(ranges[o][0] for o in outs), max(ranges[o][1] for o in outs))
            ranges.update({o: union for o in outs})
    calibration.ranges = ranges
    return calibration


def _weight_keys(model: onnx.ModelProto) -> dict[str, list[str]]:
    """Conv node -> keys of its weight: whole, first and second half along output channels (stacked convs)."""
    inits = {i.name: i for i in model.graph.initializer}
    keys = {}
    for node in model.graph.node:
        if node.op_type == "Conv" and node.input[1] in inits:
            w = numpy_helper.to_array(inits[node.input[1]])
            half = w.shape[0] // 2
            keys[node.name] = [hashlib.sha1(part.tobytes()).hexdigest() for part in (w, w[:half], w[half:])]
    return keys


def match_convs(portable: onnx.ModelProto, plugins: onnx.ModelProto) -> dict[str, list[str]]:
    """Plugin-flavour Conv name -> the portable Conv(s) with the same weights (CFM's stacked fc1/fc2 -> both)."""
    by_key = {}
    for name, (whole, _, _) in _weight_keys(portable).items():
        by_key.setdefault(whole, name)
    mapping = {}
    for name, (whole, first, second) in _weight_keys(plugins).items():
        if whole in by_key:
            mapping[name] = [by_key[whole]]
        elif first in by_key and second in by_key:
            mapping[name] = [by_key[first], by_key[second]]
    return mapping


def carry_calibration(portable: onnx.ModelProto, plugins: onnx.ModelProto,
                      calibration: CalibrationResult) -> CalibrationResult:
    """The portable graph's ranges under the plugin graph's tensor names (same convolution, same tensors; a
    stacked conv's output range is the union of its two halves')."""
    nodes_p = {n.name: n for n in portable.graph.node}
    sources: dict[str, list[str]] = {}
    conv_map = match_convs(portable, plugins)
    for node in plugins.graph.node:
        matched = conv_map.get(node.name) if node.op_type == "Conv" else None
        if not matched:
            continue
        originals = [nodes_p[m] for m in matched]
        sources[node.input[0]] = [originals[0].input[0]]
        sources[node.output[0]] = [o.output[0] for o in originals]
    cal = calibration
    ranges, observed, counts = {}, {}, {}
    for new, olds in sources.items():
        if all(o in cal.ranges for o in olds):
            ranges[new] = (min(cal.ranges[o][0] for o in olds), max(cal.ranges[o][1] for o in olds))
            observed[new] = (min(cal.observed[o][0] for o in olds), max(cal.observed[o][1] for o in olds))
            counts[new] = sum(cal.counts[o] for o in olds)
    return CalibrationResult(cal.method, cal.symmetric, ranges, observed, counts, cal.tiles, list(cal.sources))


# ---------------------------------------------------------------------------------------------------- driver
def make_int8(portable: onnx.ModelProto, tiles: Sequence[Tile], target: str, method: str = "percentile",
              keep_fp: str | Sequence[str] = "auto", artifact: onnx.ModelProto | None = None,
              sensitivity_tiles: Sequence[Tile] | None = None,
              progress: Callable[[str], None] | None = None, graph_form: str | None = None) -> Int8Result:
    """Quantise. ``portable`` is the FP32 portable graph (calibration and sensitivity run on it); ``artifact``
    the FP32 graph to quantise when it is the plugin flavour (default: ``portable``). ``graph_form``: the float
    form the Q/DQ go into: ``None`` (the target's own: ``cpu`` or ``openvino`` for those targets, ``traced``
    for tensorrt), or one of ``GRAPH_FORMS`` (benchmarks compare them)."""
    if target not in INT8_TARGETS:
        raise AsanetError(f"--int8-target {target!r}: choose one of {', '.join(INT8_TARGETS)}")
    keep_fp = parse_keep_fp(keep_fp) if not isinstance(keep_fp, tuple) else keep_fp
    portable = name_nodes(copy_model(portable))
    plugin_graph = artifact is not None and any(n.domain == "asanet" for n in artifact.graph.node)
    form = graph_form or (target if target in GRAPH_FORMS else "traced")
    if form not in GRAPH_FORMS:
        raise AsanetError(f"INT8 graph form {form!r}: choose one of {', '.join(GRAPH_FORMS)}")
    if form != "traced" and not plugin_graph:
        # the backend's form of the float work between quantised convolutions (graph_cpu); calibration, the
        # sensitivity pass and the quantiser all see the rewritten graph. The plugin flavour keeps its fused ops.
        portable = GRAPH_FORMS[form](portable)
    roles = node_roles(portable)
    default_kept = [KeptLayer(n, reason) for n, (role, reason) in roles.items() if role == "float"]
    candidates = [n for n, (role, _) in roles.items() if role == "quantize"]
    tensors = activation_tensors(portable, candidates)
    symmetric = target == "tensorrt"
    calibration = share_stacked_ranges(portable, collect_ranges(portable, tiles, tensors, method, symmetric))

    sensitivity: list[dict] = []
    target_graph = name_nodes(copy_model(artifact)) if plugin_graph else portable
    conv_map = match_convs(portable, target_graph) if plugin_graph else {}
    back_map = {old: new for new, olds in conv_map.items() for old in olds}

    if keep_fp == "auto":
        probe = LogitProbe(portable, sensitivity_tiles or tiles)
        extra, sensitivity = sensitivity_pass(portable, calibration, target, probe, candidates,
                                              [k.name for k in default_kept], progress)
    elif keep_fp == "none":
        extra = []
    else:
        names_here = {n.name for n in target_graph.graph.node}
        extra = []
        for name in keep_fp:
            if name in roles:
                extra.append(KeptLayer(name, "--keep-fp"))
            elif plugin_graph and name in names_here and name in conv_map:
                extra += [KeptLayer(old, "--keep-fp") for old in conv_map[name]]
            else:
                known = ", ".join(candidates[:3])
                raise AsanetError(f"--keep-fp: no quantisable node named {name!r} in the graph (Conv/MatMul/Gemm "
                                  f"node names, e.g. {known})")
    kept = default_kept + [k for k in extra if k.name not in {d.name for d in default_kept}]
    kept_names = [k.name for k in kept]

    if plugin_graph:
        target_roles = node_roles(target_graph)
        plugin_kept = [KeptLayer(n, reason) for n, (role, reason) in target_roles.items() if role == "float"]
        for k in extra:
            if k.name in back_map and back_map[k.name] not in {p.name for p in plugin_kept}:
                plugin_kept.append(KeptLayer(back_map[k.name], k.reason, k.sensitivity))
        carried = carry_calibration(portable, target_graph, calibration)
        model = quantize(target_graph, carried, target, exclude=[k.name for k in plugin_kept])
        kept = plugin_kept
    else:
        model = quantize(portable, calibration, target, exclude=kept_names)
    quantized = [n.name for n in target_graph.graph.node
                 if n.op_type in QUANTIZED_OP_TYPES and n.name not in {k.name for k in kept}]
    return Int8Result(model, target, calibration, kept, quantized, sensitivity)
