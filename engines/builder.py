"""ONNX -> engine with TensorRT 10.x / 11.x or TensorRT-RTX: strongly typed, dynamic shapes, one code path.

Precision lives in the ONNX graph (casts to float16, Q/DQ pairs for INT8), as TensorRT 11 and TensorRT-RTX
require; the FP16/INT8 builder flags are offered on TensorRT 10 only, for old habits (``legacy_precision_flags``).
The engine is written with its metadata as one asanet-rt container file (``asanet_rt.engine_file``), atomically.
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import importlib.util
import logging
import os
import time
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from asanet_rt._version import __version__
from asanet_rt.engine_file import NO_GPU, EngineInfo, write_engine_file
from asanet_rt.errors import AsanetError
from asanet_rt.io_utils import atomic_output, sha256_file
from asanet_rt.metadata import TILE_MULTIPLE as _TILE_MULTIPLE
from asanet_rt.metadata import ModelMetadata, round_up
from asanet_rt.model_files import check_onnx_file
from asanet_rt.preflight import check_outputs
from asanet_rt.onnx_info import ASANET_DOMAIN, OnnxInfo, read_onnx_info

from .backend import TrtBackend, dtype_name, load_backend

log = logging.getLogger(__name__)

PLUGIN_MODES = ("auto", "aot", "v3", "none")
Range = tuple[int, int, int]


# ------------------------------------------------------------------------------------------------------------
# Profiles
# ------------------------------------------------------------------------------------------------------------
def default_ranges(meta: ModelMetadata | None) -> tuple[Range, Range]:
    """(batch, tile) min/opt/max from the export metadata: opt batch = max batch, opt tile = the native tile.

    Opt batch is the maximum because the scene pipeline fills batches; only a scene's last batch is smaller.
    """
    if meta is None or not meta.export:
        return (1, 1, 1), (512, 512, 512)
    inputs = meta.inputs
    (bmin, bmax), (tmin, tmax) = inputs.batch_range, inputs.tile_range
    return (bmin, bmax, bmax), (tmin, inputs.default_tile, tmax)


def _check_range(kind: str, values: Sequence[int], onnx_path: Path) -> Range:
    if len(values) != 3 or any(int(v) < 1 for v in values):
        raise AsanetError(f"{onnx_path}: {kind} range {tuple(values)} must be three positive numbers MIN:OPT:MAX")
    lo, opt, hi = (int(v) for v in values)
    if not lo <= opt <= hi:
        raise AsanetError(f"{onnx_path}: {kind} range {lo}:{opt}:{hi} must satisfy MIN <= OPT <= MAX")
    if kind == "tile" and any(v % _TILE_MULTIPLE for v in (lo, opt, hi)):
        raise AsanetError(f"{onnx_path}: tile range {lo}:{opt}:{hi}: ASANet needs tile edges that are multiples "
                          f"of {_TILE_MULTIPLE}")
    return lo, opt, hi


def _fill_opt(values: Sequence[int | None], native: int | None) -> list[int]:
    """(min, None, max) -> opt = max (batch) or the native tile clamped into the range (tile)."""
    values = list(values)
    if len(values) == 3 and values[1] is None:
        lo, hi = int(values[0]), int(values[2])
        values[1] = hi if native is None else min(max(round_up(int(native)), lo), hi)
    return values


def resolve_profiles(profiles: Sequence[Mapping[str, Any]] | None, inputs: Mapping[str, Sequence[int]],
                     meta: ModelMetadata | None, onnx_path: Path) -> list[dict[str, dict[str, list[int]]]]:
    """Full min/opt/max shapes per input for each profile.

    A profile is either ``{"batch": (min, opt, max), "tile": (min, opt, max)}`` (either key may be left out: the
    metadata default is used; an opt of None means max batch / the native tile) or explicit shapes ``{input_name: (min_shape, opt_shape, max_shape)}``.
    ``inputs`` maps each network input to its declared shape (-1 for dynamic axes).
    """
    batch0, tile0 = default_ranges(meta)
    exported = ({"batch": meta.inputs.batch_range, "tile": meta.inputs.tile_range}
                if meta is not None and meta.export else {})
    resolved = []
    for spec in profiles or [{}]:
        spec = dict(spec)
        if spec and not set(spec) <= {"batch", "tile"}:
            unknown = set(inputs) - set(spec)
            if unknown:
                raise AsanetError(f"{onnx_path}: profile gives shapes for {sorted(spec)}; the network's inputs are "
                                  f"{sorted(inputs)}")
            resolved.append({name: dict(zip(("min", "opt", "max"), ([int(d) for d in s] for s in spec[name])))
                             for name in inputs})
            continue
        batch = _check_range("batch", _fill_opt(spec.get("batch", batch0), None), onnx_path)
        tile = _check_range("tile", _fill_opt(spec.get("tile", tile0), meta.native_tile if meta else None), onnx_path)
        for kind, rng in (("batch", batch), ("tile", tile)):
            if kind in exported and not (exported[kind][0] <= rng[0] and rng[2] <= exported[kind][1]):
                log.warning("%s: %s range %d:%d:%d is outside the exported range %s; the model was checked only "
                            "inside it", onnx_path, kind, *rng, exported[kind])
        profile = {}
        for name, shape in inputs.items():
            if len(shape) != 4:
                raise AsanetError(f"{onnx_path}: input {name!r} has shape {list(shape)}; batch/tile ranges need "
                                  f"NCHW inputs (give explicit shapes instead)")
            channels = int(shape[1])
            profile[name] = {key: [batch[i], channels, tile[i], tile[i]] for i, key in enumerate(("min", "opt", "max"))}
        resolved.append(profile)
    return resolved


# ------------------------------------------------------------------------------------------------------------
# Logging, progress
# ------------------------------------------------------------------------------------------------------------
def _make_logger(trt: Any) -> Any:
    """The process-wide logger for ``trt`` (TensorRT ignores a second one), its error list emptied for this build."""
    from asanet_rt.backends.tensorrt_common import shared_logger

    logger = shared_logger(trt)
    logger.errors.clear()
    getattr(logger, "infos", []).clear()
    return logger


def _make_progress(trt: Any, enabled: bool) -> Any:
    """An IProgressMonitor printing the top two levels of build phases with their durations."""

    class _Progress(trt.IProgressMonitor):
        def __init__(self) -> None:
            trt.IProgressMonitor.__init__(self)
            self.depth: dict[str, int] = {}
            self.start: dict[str, float] = {}

        def phase_start(self, phase_name: str, parent_phase: str | None, num_steps: int) -> None:
            depth = 0 if parent_phase is None else self.depth.get(parent_phase, 0) + 1
            self.depth[phase_name], self.start[phase_name] = depth, time.perf_counter()
            if depth <= 1:
                log.log(logging.INFO if enabled else logging.DEBUG, "%s%s (%d steps)", "  " * (depth + 1),
                        phase_name, num_steps)

        def step_complete(self, phase_name: str, step: int) -> bool:
            return True

        def phase_finish(self, phase_name: str) -> None:
            depth = self.depth.pop(phase_name, 9)
            seconds = time.perf_counter() - self.start.pop(phase_name, time.perf_counter())
            if depth <= 1 and seconds >= 1.0:
                log.log(logging.INFO if enabled else logging.DEBUG, "%s%s: %.1f s", "  " * (depth + 1),
                        phase_name, seconds)

    return _Progress()


# ------------------------------------------------------------------------------------------------------------
# Plugins
# ------------------------------------------------------------------------------------------------------------
@dataclasses.dataclass
class _Plugins:
    mode: str = "none"
    library: str = ""
    library_sha256: str = ""


def _plugin_library(module: Any, returned: Any) -> str:
    """The file whose hash identifies the plugin build: what register_plugins returned, an advertised library,
    or the module's own file (AOT plugins compile into the engine from it)."""
    for candidate in (returned, getattr(module, "LIBRARY_PATH", None),
                      getattr(module, "library_path", lambda: None)() if callable(getattr(module, "library_path", None))
                      else None, getattr(module, "__file__", None)):
        if candidate and os.path.isfile(str(candidate)):
            return str(candidate)
    return ""


def _prepare_plugins(backend: TrtBackend, info: OnnxInfo, requested: str, onnx_path: Path) -> _Plugins:
    """Register our plugins with TensorRT when the graph has asanet ops; ``none`` keeps the local functions.

    Everything that can fail (nvcc, the PTX, a driver older than the kernels' CUDA) happens here, before
    TensorRT builds, so ``auto`` can still fall back to the local functions.
    """
    if requested not in PLUGIN_MODES:
        raise AsanetError(f"plugins {requested!r}: choose {', '.join(PLUGIN_MODES)}")
    if not info.asanet_ops:
        if requested in ("aot", "v3"):
            log.warning("%s: no asanet ops in the graph (portable export); plugins %s not needed", onnx_path,
                        requested)
        return _Plugins()
    if not backend.supports_plugins:
        if requested in ("aot", "v3"):
            raise AsanetError(f"{onnx_path}: TensorRT-RTX has no plugin layers; build with --plugins none (its parser "
                              f"inlines the asanet ops' ONNX local functions)")
        log.info("%s: TensorRT-RTX inlines the asanet ops' local functions (%s)", onnx_path,
                 ", ".join(sorted(info.asanet_ops)))
        return _Plugins()
    if requested == "none":
        log.info("%s: plugins off; TensorRT inlines the asanet ops' local functions", onnx_path)
        return _Plugins()
    if importlib.util.find_spec("onnx") is None:
        message = (f"{onnx_path}: routing the asanet ops ({', '.join(sorted(info.asanet_ops))}) to plugins rewrites "
                   f"the graph, which needs the 'onnx' package (pip install onnx)")
        if requested != "auto":
            raise AsanetError(message)
        log.warning("%s; TensorRT inlines the local functions instead", message)
        return _Plugins()
    mode = requested
    try:
        import asanet_rt.engines.plugins as plugins_pkg

        if mode == "auto":
            mode = plugins_pkg.choose_plugin_mode(backend.version)
        if mode == "v3":
            from asanet_rt.engines.plugins import trt_v3

            returned = trt_v3.register_plugins(backend.trt)
            return _Plugins("v3", *_hash(_plugin_library(trt_v3, returned)))
        if mode == "aot":
            from asanet_rt.engines.plugins import trt_aot

            trt_aot.prepare_ptx()  # nvcc and the driver check run now, not inside TensorRT's build callback
            trt_aot.register_aot_plugins()
            return _Plugins("aot", *_hash(str(trt_aot.LIBRARY_PATH)))
        raise AsanetError(f"{onnx_path}: plugin mode {mode!r} from choose_plugin_mode is not aot or v3")
    except AsanetError as exc:
        if requested != "auto":
            raise
        log.warning("%s: asanet %s plugins unavailable (%s); TensorRT inlines the local functions instead",
                    onnx_path, mode, exc)
        return _Plugins()
    except Exception as exc:  # noqa: BLE001 - a missing .so, cuda-python or tensorrt.plugin raise many types
        if requested != "auto":
            raise AsanetError(f"{onnx_path}: loading the asanet {mode} plugins failed ({type(exc).__name__}: "
                              f"{exc}); build them with `make plugins` or use --plugins none") from exc
        log.warning("%s: asanet plugins unavailable (%s: %s); TensorRT inlines the local functions instead",
                    onnx_path, type(exc).__name__, exc)
        return _Plugins()


def _hash(path: str) -> tuple[str, str]:
    return (path, sha256_file(path)) if path else ("", "")


def plugin_ops_for(mode: str, ops: Iterable[str]) -> list[str]:
    """The asanet op types that become plugin layers in ``mode`` (AOT carries only the one-kernel ops)."""
    from asanet_rt.engines.plugins import AOT_OPS

    return sorted(op for op in set(ops) if mode == "v3" or (mode == "aot" and op in AOT_OPS))


def _annotated_onnx(onnx_path: Path, mode: str) -> bytes:
    """The ONNX as TensorRT's parser must see it for ``mode``: every asanet node to become a plugin carries
    ``plugin_namespace``/``plugin_version`` (and ``aot`` for AOT plugins), and its op's local function is removed.

    Why both: the parser looks plugins up by op type, ``plugin_version`` and ``plugin_namespace`` (never by the
    ONNX domain); up to 10.6 it imports a node from its local function whenever one exists, before any plugin
    lookup (10.7 changed that), and from 10.15 it uses the plugin only when the node names ``plugin_namespace``.
    Without the function every parser version falls back to the plugin registry. Ops left out (GRN, SFM in AOT
    mode) keep their functions and are inlined. The exported file itself stays untouched.
    """
    import onnx
    from onnx import helper

    model = onnx.load(str(onnx_path), load_external_data=False)
    wanted = set(plugin_ops_for(mode, (n.op_type for n in model.graph.node if n.domain == ASANET_DOMAIN)))
    for node in model.graph.node:
        if node.domain != ASANET_DOMAIN or node.op_type not in wanted:
            continue  # an unannotated node keeps its local function: TensorRT parses the body
        present = {a.name for a in node.attribute}
        if "plugin_namespace" not in present:
            node.attribute.append(helper.make_attribute("plugin_namespace", ASANET_DOMAIN))
        if "plugin_version" not in present:
            node.attribute.append(helper.make_attribute("plugin_version", "1"))
        if mode == "aot" and "aot" not in present:
            node.attribute.append(helper.make_attribute("aot", 1))
    kept = [f for f in model.functions if not (f.domain == ASANET_DOMAIN and f.name in wanted)]
    del model.functions[:]
    model.functions.extend(kept)
    return model.SerializeToString()


def _op_of_layers(onnx_path: Path, layer_names: Sequence[str]) -> dict[str, int]:
    """asanet op type -> number of plugin layers, matching layer names to the graph's node names."""
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    by_name = {n.name: n.op_type for n in model.graph.node if n.domain == ASANET_DOMAIN}
    counts: dict[str, int] = {}
    for name in layer_names:
        op = by_name.get(name) or next((o for n, o in by_name.items() if n and n in name), "?")
        counts[op] = counts.get(op, 0) + 1
    return dict(sorted(counts.items()))


# ------------------------------------------------------------------------------------------------------------
# Parsing
# ------------------------------------------------------------------------------------------------------------
def _parse(backend: TrtBackend, network: Any, logger: Any, onnx_path: Path, plugins: _Plugins) -> None:
    """Fill ``network`` from the ONNX; on failure raise with every parser error, node by node."""
    check_onnx_file(onnx_path)  # TensorRT's parser follows symlinks out of the folder and blocks on a fifo
    trt = backend.trt
    parser = trt.OnnxParser(network, logger)
    if plugins.mode != "none":
        ok = parser.parse(_annotated_onnx(onnx_path, plugins.mode), str(onnx_path))
    else:
        ok = parser.parse_from_file(str(onnx_path))
    if ok:
        return
    lines = []
    for i in range(parser.num_errors):
        err = parser.get_error(i)
        try:
            stack = list(err.local_function_stack()) if err.local_function_stack_size() else []
            where = f"node {err.node()}"
            if err.node_name():
                where += f" {err.node_name()!r}"
            if err.node_operator():
                where += f" ({err.node_operator()})"
            if stack:
                where += f" in local function {' -> '.join(stack)}"
            lines.append(f"  {where}: {err.code().name}: {err.desc()}")
        except Exception:  # noqa: BLE001 - older parsers lack some accessors; the string form has it all
            lines.append(f"  {err}")
    detail = "\n".join(lines) or "\n".join(f"  {e}" for e in logger.errors[-5:]) or "  (no details from the parser)"
    raise AsanetError(f"{onnx_path}: {backend.label} could not parse the ONNX file:\n{detail}")


def _create_builder(backend: TrtBackend, logger: Any) -> Any:
    """``trt.Builder(logger)``; with no GPU TensorRT's factory returns nullptr, which pybind11 turns into a
    TypeError ("factory function returned nullptr") rather than None."""
    try:
        builder = backend.trt.Builder(logger)
    except TypeError as exc:
        builder, cause = None, str(exc)
    else:
        cause = ""
    if builder is None:
        detail = "; ".join(logger.errors[-2:]) or cause or "TensorRT gave no reason"
        raise AsanetError(f"{backend.label}: no CUDA GPU found (or its driver is unusable), so no builder could be "
                          f"created ({detail}); build on the GPU machine that will run the engine")
    return builder


def _parse_with_plugins(backend: TrtBackend, builder: Any, flags: int, logger: Any, onnx_path: Path,
                        info: OnnxInfo, plugins: _Plugins, requested: str) -> tuple[Any, _Plugins, list[str]]:
    """Parse for ``plugins``; in ``auto`` mode a graph TensorRT will not take with plugins is parsed again with
    the local functions inlined. Returns the network, the plugin mode in effect and the plugin layer names."""
    network = builder.create_network(flags)
    try:
        _parse(backend, network, logger, onnx_path, plugins)
    except AsanetError as exc:
        if plugins.mode == "none" or requested != "auto":
            raise
        log.warning("%s: parsing with %s plugins failed; inlining the local functions instead:\n%s", onnx_path,
                    plugins.mode, exc)
        plugins = _Plugins()
        network = builder.create_network(flags)
        _parse(backend, network, logger, onnx_path, plugins)
    used = _plugin_layers(backend.trt, network)
    if plugins.mode != "none":
        wanted = plugin_ops_for(plugins.mode, info.asanet_ops)
        became = _op_of_layers(onnx_path, used)
        missing = [op for op in wanted if op not in became]
        if missing and requested in ("aot", "v3"):
            raise AsanetError(f"{onnx_path}: the {plugins.mode} plugins are registered but TensorRT's parser did not "
                              f"use them for {', '.join(missing)} (plugin layers: {became or 'none'})")
        if not used:
            log.warning("%s: no asanet op became a plugin layer; the local functions were inlined", onnx_path)
            plugins = _Plugins()
        else:
            inlined = sorted(set(info.asanet_ops) - set(became))
            log.info("plugins (%s): %s%s", plugins.mode, ", ".join(f"{op} x{n}" for op, n in became.items()),
                     f"; inlined from local functions: {', '.join(inlined)}" if inlined else "")
    return network, plugins, used


def _network_io(trt: Any, network: Any, outputs: bool) -> list[dict[str, Any]]:
    count = network.num_outputs if outputs else network.num_inputs
    tensors = [network.get_output(i) if outputs else network.get_input(i) for i in range(count)]
    return [{"name": t.name, "dtype": dtype_name(trt, t.dtype), "shape": list(t.shape)} for t in tensors]


def _plugin_layers(trt: Any, network: Any) -> list[str]:
    kinds = {getattr(trt.LayerType, k) for k in ("PLUGIN_V3", "PLUGIN_V2", "PLUGIN") if hasattr(trt.LayerType, k)}
    return [network.get_layer(i).name for i in range(network.num_layers) if network.get_layer(i).type in kinds]


def _network_precision(trt: Any, network: Any) -> str:
    """Precision read from the TensorRT network (used when the ``onnx`` package is absent)."""
    q = {getattr(trt.LayerType, k) for k in ("QUANTIZE", "DEQUANTIZE") if hasattr(trt.LayerType, k)}
    fp16 = False
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        if layer.type in q:
            return "int8"
        fp16 = fp16 or any(layer.get_output(j).dtype == trt.float16 for j in range(layer.num_outputs))
    return "fp16" if fp16 else "fp32"


# ------------------------------------------------------------------------------------------------------------
# Timing cache
# ------------------------------------------------------------------------------------------------------------
def _attach_timing_cache(backend: TrtBackend, config: Any, path: Path | None) -> tuple[Any, bytes]:
    """Load ``path`` (if present) into the config's timing cache; returns the cache and the bytes loaded."""
    if path is None:
        return None, b""
    if backend.is_rtx:
        log.info("%s: not used; TensorRT-RTX has no timing cache (its timing-cache calls are no-ops since RTX 1.2)",
                 path)
        return None, b""
    data = path.read_bytes() if path.is_file() else b""
    cache = config.create_timing_cache(data)
    if cache is None and data:
        log.warning("%s: timing cache unreadable or from another TensorRT version; starting a new one", path)
        cache, data = config.create_timing_cache(b""), b""
    if not config.set_timing_cache(cache, False):  # False: refuse a cache recorded on another GPU model
        log.warning("%s: timing cache was recorded on another GPU; starting a new one", path)
        cache, data = config.create_timing_cache(b""), b""
        config.set_timing_cache(cache, False)
    log.info("timing cache %s: %s", path, f"loaded {len(data)} bytes" if data else "new")
    return cache, data


def _save_timing_cache(config: Any, cache: Any, path: Path, loaded: bytes) -> None:
    """Merge what another build saved meanwhile, then replace the file atomically."""
    if path.is_file():
        current = path.read_bytes()
        if current and current != loaded:
            other = config.create_timing_cache(current)
            if other is not None:
                cache.combine(other, False)
    blob = cache.serialize()
    with atomic_output(path, overwrite=True) as tmp:
        Path(tmp).write_bytes(memoryview(blob).cast("B"))
    log.info("timing cache %s: saved %d bytes", path, memoryview(blob).nbytes)


# ------------------------------------------------------------------------------------------------------------
# The build
# ------------------------------------------------------------------------------------------------------------
def build_engine(onnx_path: str | os.PathLike, out_path: str | os.PathLike, *, backend: str = "auto",
                 profiles: Sequence[Mapping[str, Any]] | None = None, workspace_mib: int | None = None,
                 tactic_memory_mib: int | None = None, timing_cache: str | os.PathLike | None = None,
                 opt_level: int | None = None, dla_core: int | None = None, version_compatible: bool = False,
                 hardware_compatible: bool = False, legacy_precision_flags: str | Sequence[str] | None = None,
                 plugin_mode: str = "auto", overwrite: bool = False, progress: bool = True) -> EngineInfo:
    """Build ``onnx_path`` into the asanet-rt engine file ``out_path``; returns the engine's metadata.

    ``profiles``: see ``resolve_profiles`` (default: one profile from the export metadata's batch and tile
    ranges, opt = max batch and the native tile). ``dla_core`` runs layers on that DLA core with GPU fallback
    (Jetson). ``legacy_precision_flags`` (``fp16``/``int8``; TensorRT 10 only) builds a weakly typed network.
    """
    started = time.perf_counter()
    onnx_path, out_path = Path(onnx_path), Path(out_path)
    say = log.info if progress else log.debug
    check_outputs([out_path], [onnx_path], overwrite=overwrite)  # a folder, a missing or read-only folder
    if out_path.resolve() == onnx_path.resolve():
        raise AsanetError(f"{out_path}: the engine would overwrite its own ONNX file")
    info = read_onnx_info(onnx_path)
    if info.metadata is None:
        raise AsanetError(f"{onnx_path}: no asanet-rt metadata; export the model with `asanet-rt export` first")
    be = load_backend(backend)
    trt = be.trt
    say("building %s with %s", onnx_path, be.label)

    legacy = [legacy_precision_flags] if isinstance(legacy_precision_flags, str) else list(legacy_precision_flags or ())
    legacy = [f.lower() for f in legacy]
    if legacy:
        if be.strongly_typed_only:
            raise AsanetError(f"legacy precision flags {legacy}: {be.label} builds strongly typed networks only; "
                              f"precision comes from the ONNX graph (export with --precision fp16/int8)")
        bad = sorted(set(legacy) - {"fp16", "int8"})
        if bad:
            raise AsanetError(f"legacy precision flags {bad}: choose fp16 and/or int8")
    if be.is_rtx:
        for flag, wanted in (("--dla-core", dla_core is not None), ("--version-compatible", version_compatible)):
            if wanted:
                raise AsanetError(f"{flag}: not available with TensorRT-RTX (use full TensorRT)")
        if hardware_compatible:
            log.info("TensorRT-RTX engines are portable across its target GPUs by default; --hardware-compatible "
                     "has nothing to add")
    plugins = _prepare_plugins(be, info, plugin_mode, onnx_path)
    if plugins.mode == "v3" and version_compatible:
        raise AsanetError(f"{onnx_path}: version-compatible engines cannot call the separately loaded V3 plugin "
                          f"library; use --plugins aot (TensorRT 10.12+/11) or --plugins none")

    if dla_core is not None:
        check_dla_version(be)
    logger = _make_logger(trt)
    builder = _create_builder(be, logger)
    strongly_typed = not legacy
    flags = 0
    if strongly_typed and be.has_member("NetworkDefinitionCreationFlag", "STRONGLY_TYPED"):
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)  # TRT 11: the only mode, flag optional
    t_parse = time.perf_counter()
    network, plugins, used = _parse_with_plugins(be, builder, flags, logger, onnx_path, info, plugins, plugin_mode)
    say("parsed %s (%d layers) in %.1f s", onnx_path.name, network.num_layers, time.perf_counter() - t_parse)

    inputs = _network_io(trt, network, outputs=False)
    if dla_core is not None:
        profiles = static_dla_profiles(profiles, info.metadata, onnx_path)
    resolved = resolve_profiles(profiles, {t["name"]: t["shape"] for t in inputs}, info.metadata, onnx_path)
    config = builder.create_builder_config()
    for spec in resolved:
        profile = builder.create_optimization_profile()
        for name, shapes in spec.items():
            profile.set_shape(name, shapes["min"], shapes["opt"], shapes["max"])
        if config.add_optimization_profile(profile) < 0:
            raise AsanetError(f"{onnx_path}: {be.label} rejected the optimisation profile {spec}")
    if workspace_mib is not None:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_mib) << 20)
    if tactic_memory_mib is not None and be.has_member("MemoryPoolType", "TACTIC_DRAM"):
        config.set_memory_pool_limit(trt.MemoryPoolType.TACTIC_DRAM, int(tactic_memory_mib) << 20)
    if opt_level is not None:
        if not 0 <= int(opt_level) <= 5:
            raise AsanetError(f"--opt-level {opt_level}: choose 0 (fastest build) to 5 (slowest, maybe faster engine)")
        config.builder_optimization_level = int(opt_level)
    if hasattr(trt, "ProfilingVerbosity"):
        config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED  # layer details for `inspect --layers`
    for name in legacy:
        config.set_flag(getattr(trt.BuilderFlag, name.upper()))
    precision = info.precision or _network_precision(trt, network)
    dla_layers = None
    if dla_core is not None:
        available = int(getattr(builder, "num_DLA_cores", 0))
        if not 0 <= int(dla_core) < available:
            raise AsanetError(f"--dla-core {dla_core}: this device has {available} DLA core(s) (Jetson AGX/NX Orin: "
                              f"2 / 1; none on desktop GPUs)")
        if precision == "fp32" and "fp16" not in legacy and "int8" not in legacy:
            log.warning("%s: DLA runs FP16/INT8 only; this fp32 graph's layers will all fall back to the GPU "
                        "(export with --precision fp16 or int8)", onnx_path)
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = int(dla_core)
        config.set_flag(trt.BuilderFlag.GPU_FALLBACK)
        capable = sum(bool(config.can_run_on_DLA(network.get_layer(i))) for i in range(network.num_layers))
        say("DLA core %d: %d of %d network layers are DLA-capable (placement is read from the built engine)",
            dla_core, capable, network.num_layers)
    hardware = "rtx_portable" if be.is_rtx else "none"
    if hardware_compatible and not be.is_rtx:
        if dla_core is not None:
            raise AsanetError("--hardware-compatible and --dla-core exclude each other (DLA engines are device "
                              "specific)")
        config.hardware_compatibility_level = trt.HardwareCompatibilityLevel.AMPERE_PLUS
        hardware = "ampere_plus"
    if version_compatible:
        config.set_flag(trt.BuilderFlag.VERSION_COMPATIBLE)
    monitor = None
    if be.has_progress_monitor:
        monitor = _make_progress(trt, progress)
        config.progress_monitor = monitor
    cache_path = Path(timing_cache) if timing_cache is not None else None
    cache, loaded = _attach_timing_cache(be, config, cache_path)

    device = None
    try:
        from asanet_rt.backends.tensorrt_common import current_device_info

        device = current_device_info(0)
    except Exception:  # noqa: BLE001 - device facts are informative only
        device = None
    rtx_targets: list[str] = []
    if be.is_rtx:
        count = int(getattr(config, "num_compute_capabilities", 0) or 0)
        rtx_targets = [str(config.get_compute_capability(i)).split(".")[-1] for i in range(count)]
    say("building the engine (profiles: %s)%s", "; ".join(_profile_text(p) for p in resolved),
        "" if be.has_progress_monitor else "; this can take minutes")
    t_build = time.perf_counter()
    serialized = builder.build_serialized_network(network, config)
    build_seconds = time.perf_counter() - t_build
    if serialized is None:
        detail = "\n".join(f"  {e}" for e in logger.errors[-10:]) or "  (no error message from TensorRT)"
        if plugins.mode != "none" and plugin_mode == "auto":
            # auto promises an engine: the same build with the ops' local functions inlined
            log.warning("%s: %s failed to build with the %s plugins; building again with the local functions "
                        "inlined:\n%s", onnx_path, be.label, plugins.mode, detail)
            return build_engine(onnx_path, out_path, backend=backend, profiles=profiles, workspace_mib=workspace_mib,
                                tactic_memory_mib=tactic_memory_mib, timing_cache=timing_cache, opt_level=opt_level,
                                dla_core=dla_core, version_compatible=version_compatible,
                                hardware_compatible=hardware_compatible,
                                legacy_precision_flags=legacy_precision_flags, plugin_mode="none",
                                overwrite=overwrite, progress=progress)
        raise AsanetError(f"{onnx_path}: {be.label} failed to build the engine after {build_seconds:.1f} s:\n{detail}")
    if cache is not None and cache_path is not None:
        _save_timing_cache(config, cache, cache_path, loaded)
    if dla_core is not None:
        dla_layers = _dla_placement(be, logger, serialized, version_compatible)
        if dla_layers is not None:
            say("DLA core %d: %d engine layers run on the DLA, the rest on the GPU%s", dla_core, len(dla_layers),
                "" if dla_layers else " (nothing was placed on the DLA: check the precision and the layer types)")

    batch, tile = _profile_ranges(resolved[0])
    meta = info.metadata.with_export(batch=list(batch), tile=list(tile), onnx_sha256=sha256_file(onnx_path))
    if be.is_rtx:
        cc = NO_GPU if device is None else f"n/a (portable engine; built on sm_{device.compute_capability[0]}" \
                                           f"{device.compute_capability[1]})"
    else:
        cc = device.cc_text if device else "unknown"
    engine_info = EngineInfo(
        model=meta,
        backend=be.name,
        backend_version=be.version,
        compute_capability=cc,
        device_name=device.name if device else "",
        precision=precision,
        export_precision=(info.metadata.export or {}).get("precision"),
        profiles=tuple(resolved),
        inputs=tuple(inputs),
        outputs=tuple(_network_io(trt, network, outputs=True)),
        compatibility={"hardware": hardware, "version_compatible": bool(version_compatible),
                       "rtx_targets": [_cc_text(t) for t in rtx_targets]},
        plugins={"mode": plugins.mode, "used": used, "ops": _op_of_layers(onnx_path, used) if used else {},
                 "library": os.path.basename(plugins.library),
                 "library_sha256": plugins.library_sha256},
        onnx_file=onnx_path.name,
        onnx_sha256=meta.export["onnx_sha256"],
        build_seconds=round(time.perf_counter() - started, 3),
        built_at=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        builder={"strongly_typed": strongly_typed, "legacy_precision_flags": legacy, "workspace_mib": workspace_mib,
                 "tactic_memory_mib": tactic_memory_mib, "opt_level": opt_level, "dla_core": dla_core,
                 "dla_layers": dla_layers, "layers": network.num_layers,
                 "onnx_batch": list((info.metadata.export or {}).get("batch", [])),
                 "onnx_tile": list((info.metadata.export or {}).get("tile", []))},
        asanet_rt_version=__version__,
    )
    engine_info = write_engine_file(out_path, engine_info, serialized, overwrite=overwrite)
    del serialized
    say("wrote %s (%.1f MiB, %s, %s) in %.1f s total (engine build %.1f s)", out_path,
        engine_info.engine_bytes / 2**20, precision, be.label, time.perf_counter() - started, build_seconds)
    return engine_info


# ------------------------------------------------------------------------------------------------------------
# DLA
# ------------------------------------------------------------------------------------------------------------
def dla_supported(version: Sequence[int]) -> bool:
    """TensorRT 11.0 to 11.3 have no DLA (NVIDIA's DLA documentation); other releases report their cores."""
    return not (11, 0) <= tuple(version[:2]) < (11, 4)


def check_dla_version(backend: TrtBackend) -> None:
    """Refuse ``--dla-core`` on TensorRT releases without DLA support."""
    if not dla_supported(backend.version_tuple):
        raise AsanetError(f"--dla-core: {backend.label} has no DLA support (TensorRT 11.0 to 11.3 dropped it; "
                          f"JetPack 6's TensorRT 10.3 and TensorRT 11.4.1+ on JetPack 7.2.2+ have it)")


def static_dla_profiles(profiles: Sequence[Mapping[str, Any]] | None, meta: ModelMetadata | None,
                        onnx_path: Path) -> list[dict[str, Any]]:
    """DLA runs static shapes only (a dynamic profile sends every layer to the GPU): each profile must have
    min = opt = max. Without ``--batch``/``--tile`` the export's opt batch and the native tile are used."""
    batch0, tile0 = default_ranges(meta)
    static = []
    for spec in profiles or [{}]:
        spec = dict(spec)
        if spec and not set(spec) <= {"batch", "tile"}:
            for name, shapes in spec.items():
                if len({tuple(s) for s in shapes}) != 1:
                    raise AsanetError(f"{onnx_path}: --dla-core needs static shapes; input {name!r} has "
                                      f"min/opt/max {[list(s) for s in shapes]}")
            static.append(spec)
            continue
        out = {}
        for kind, default in (("batch", batch0), ("tile", tile0)):
            given = spec.get(kind)
            if given is None:
                out[kind] = (default[1],) * 3
                continue
            values = {int(v) for v in given if v is not None}
            if len(values) != 1:
                raise AsanetError(f"{onnx_path}: --dla-core needs a static {kind} (DLA runs fixed shapes; a range "
                                  f"sends every layer to the GPU): pass --{kind} N, not "
                                  f"{':'.join('' if v is None else str(v) for v in given)}")
            out[kind] = (values.pop(),) * 3
        static.append(out)
    return static


def _dla_placement(backend: TrtBackend, logger: Any, serialized: Any, version_compatible: bool) -> list[str] | None:
    """Names of the network layers the built engine runs on the DLA: the builder's own placement report ("Layers
    running on DLA" in its log), else the engine inspector's DLA entries; None when neither is available."""
    from asanet_rt.backends.tensorrt_common import create_runtime

    from .inspect_layers import dla_layers_from_log, inspector_layers, on_dla

    reported = dla_layers_from_log(list(getattr(logger, "infos", [])))
    if reported is not None:
        return reported
    try:
        runtime = create_runtime(backend.trt, logger)
        if version_compatible and hasattr(runtime, "engine_host_code_allowed"):
            runtime.engine_host_code_allowed = True  # our own plan, just built in this process
        engine = runtime.deserialize_cuda_engine(serialized)
        if engine is None:
            raise AsanetError("; ".join(logger.errors[-2:]) or "deserialisation failed")
        layers = inspector_layers(backend.trt, engine)
    except Exception as exc:  # noqa: BLE001 - reporting only: the engine itself is fine
        log.warning("could not read the DLA placement from the engine inspector (%s)", exc)
        return None
    return [str(layer.get("Name", "?")) if isinstance(layer, dict) else str(layer) for layer in layers
            if on_dla(layer)]


def _cc_text(name: str) -> str:
    """'SM86' -> '8.6'; 'CURRENT' stays as is."""
    digits = name.upper().removeprefix("SM")
    return f"{digits[:-1]}.{digits[-1]}" if digits.isdigit() and len(digits) >= 2 else name.lower()


def _profile_ranges(profile: Mapping[str, Mapping[str, Sequence[int]]]) -> tuple[tuple[int, int], tuple[int, int]]:
    shapes = next(iter(profile.values()))
    return (int(shapes["min"][0]), int(shapes["max"][0])), (int(shapes["min"][2]), int(shapes["max"][2]))


def _profile_text(profile: Mapping[str, Mapping[str, Sequence[int]]]) -> str:
    shapes = next(iter(profile.values()))
    if len(shapes["min"]) != 4:
        return ", ".join(f"{n} {s['min']}..{s['max']}" for n, s in profile.items())
    return (f"batch {shapes['min'][0]}:{shapes['opt'][0]}:{shapes['max'][0]}, "
            f"tile {shapes['min'][2]}:{shapes['opt'][2]}:{shapes['max'][2]}")
