"""Subcommands of the engine stage: ``build`` (ONNX -> engine) and ``inspect`` (ONNX or engine).

Importing this module loads neither TensorRT nor onnx; ``inspect`` reads ONNX and engine metadata without
TensorRT and imports it only for ``--layers`` of an engine.
"""
from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

from asanet_rt.cli_options import (add_backend_option, add_engine_trust_option, add_json_options, add_quiet_option, command, non_negative_int, parse_range,
                                   positive_int)

log = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = command(
        subparsers, "build", help="build a TensorRT / TensorRT-RTX engine from an exported ONNX file",
        description="Build an engine (one file: engine + metadata) from an ONNX file written by `asanet-rt "
                    "export`. Precision comes from the ONNX graph (fp32, fp16 casts, int8 Q/DQ); the network is "
                    "strongly typed. Batch and tile ranges default to the export's, with opt = max batch and the "
                    "native tile.")
    p.add_argument("onnx", help="ONNX file from `asanet-rt export`")
    p.add_argument("-o", "--output", help="engine file to write (default: the ONNX name with .engine)")
    add_backend_option(p, ("tensorrt", "tensorrt_rtx"), "full TensorRT if installed, else TensorRT-RTX")
    p.add_argument("--batch", type=parse_range, metavar="N|MIN:MAX|MIN:OPT:MAX",
                   help="batch range of the engine profile (default: the export's, opt = max)")
    p.add_argument("--tile", type=parse_range, metavar="N|MIN:MAX|MIN:OPT:MAX",
                   help="tile edge range, multiples of 32 (default: the export's; opt = the native tile)")
    p.add_argument("--workspace", type=positive_int, metavar="MiB", help="limit the builder's workspace memory")
    p.add_argument("--timing-cache", metavar="PATH",
                   help="persistent timing cache: loaded, merged and saved back (TensorRT; RTX has none)")
    p.add_argument("--opt-level", type=int, choices=range(6), metavar="0-5",
                   help="builder optimisation level (TensorRT default 3; higher builds longer)")
    p.add_argument("--dla-core", type=non_negative_int, metavar="N",
                   help="Jetson: run layers on DLA core N, the rest on the GPU (needs an fp16 or int8 ONNX)")
    p.add_argument("--version-compatible", action="store_true",
                   help="engine runs on later TensorRT releases of the same major version (TensorRT only)")
    p.add_argument("--hardware-compatible", action="store_true",
                   help="engine runs on any Ampere or newer GPU (TensorRT only; not Jetson, not DLA)")
    p.add_argument("--plugins", default="auto", choices=("auto", "aot", "v3", "none"),
                   help="fused-op plugins for a --ops plugins export (TensorRT only; default auto: AOT on "
                        "TensorRT 11, V3 on 10.x, local functions if the plugins are unavailable)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing engine file")
    add_quiet_option(p, "build progress, only the result")
    p.set_defaults(func=_build)

    q = command(
        subparsers, "inspect", help="describe an ONNX file or an engine: I/O, profiles, precision, ops, metadata",
        description="Describe an ONNX file (I/O, precision, op flavour, metadata) or an asanet-rt engine (what "
                    "built it and for which GPU, profiles, precision, plugins, metadata). Works without TensorRT, "
                    "except --layers for an engine.")
    q.add_argument("file", help=".onnx file or engine file")
    add_json_options(q, "the description")
    q.add_argument("--layers", action="store_true",
                   help="engine: its layers from TensorRT's engine inspector (needs TensorRT and a GPU); "
                        "ONNX: node counts by op type")
    q.add_argument("--extract-plan", metavar="PATH",
                   help="engine: also write the bare TensorRT engine to PATH (for trtexec, Polygraphy, Triton)")
    add_engine_trust_option(q)
    q.set_defaults(func=_inspect)

    d = command(
        subparsers, "doctor", help="check this machine for TensorRT engines: versions, GPU, a small plugin engine vs ONNX Runtime",
        description="Print TensorRT, CUDA driver, cuda-python, nvcc and GPU facts, build a small plugin-flavour "
                    "engine, run it against ONNX Runtime on the same inputs and report which ops ran as plugins, "
                    "DLA placement and a timing. Exits 1 and says what is missing when the machine cannot build "
                    "or run engines.")
    d.add_argument("--plugins", default="auto", choices=("auto", "aot", "v3", "none"),
                   help="plugin mode of the test engine (default auto)")
    d.add_argument("--dla-core", type=non_negative_int, metavar="N", help="also build the test engine for DLA core N (Jetson)")
    d.add_argument("--onnx", metavar="PATH", help="use this `--ops plugins` export instead of a small random model")
    d.add_argument("--keep", metavar="DIR", help="keep the test ONNX and engine in DIR")
    add_json_options(d, "the report")
    d.set_defaults(func=_doctor)


def _build(args: argparse.Namespace) -> int:
    from asanet_rt.errors import AsanetError

    from .builder import build_engine

    onnx = Path(args.onnx)
    if not onnx.is_file():
        raise AsanetError(f"{onnx}: ONNX file not found")
    out = Path(args.output) if args.output else onnx.with_suffix(".engine")
    profile = {k: tuple(v) for k, v in (("batch", args.batch), ("tile", args.tile)) if v is not None}
    info = build_engine(onnx, out, backend=args.backend, profiles=[profile], workspace_mib=args.workspace,
                        timing_cache=args.timing_cache, opt_level=args.opt_level, dla_core=args.dla_core,
                        version_compatible=args.version_compatible, hardware_compatible=args.hardware_compatible,
                        plugin_mode=args.plugins, overwrite=args.overwrite, progress=not args.quiet)
    (b0, b1), (t0, t1) = info.batch_range, info.tile_range
    from asanet_rt.io_utils import sha256_file

    print(f"{out}: {info.describe_target()}, {info.precision}, batch {b0}-{b1}, tile {t0}-{t1}, "
          f"plugins {info.plugins.get('mode', 'none')}, built in {info.build_seconds:.1f} s")
    print(f"sha256 {sha256_file(out)} (file; trust it with: sha256sum {out.name} >> "
          f"~/.config/asanet_rt/trusted_engines.txt)")
    return 0


def _doctor(args: argparse.Namespace) -> int:
    from .doctor import main as doctor_main

    return doctor_main(plugins=args.plugins, dla_core=args.dla_core, keep=args.keep, as_json=args.json,
                       onnx=args.onnx)


# ------------------------------------------------------------------------------------------------------------
# inspect
# ------------------------------------------------------------------------------------------------------------
def _inspect(args: argparse.Namespace) -> int:
    from asanet_rt.engine_file import is_engine_file
    from asanet_rt.errors import AsanetError

    path = Path(args.file)
    if not path.is_file():
        raise AsanetError(f"{path}: file not found")
    if is_engine_file(path):
        data = _engine_report(path, args)
    elif path.suffix.lower() == ".onnx":
        data = _onnx_report(path, args)
    else:
        raise AsanetError(f"{path}: neither an ONNX file (.onnx) nor an asanet-rt engine file")
    if args.json:
        print(json.dumps(data, indent=2, default=str))
    else:
        print(_format(data))
    return 0


def _onnx_report(path: Path, args: argparse.Namespace) -> dict[str, Any]:
    from asanet_rt.onnx_info import read_onnx_info

    info = read_onnx_info(path)
    data = info.to_dict()
    data["file_bytes"] = path.stat().st_size
    if args.layers:
        try:
            import onnx
        except ModuleNotFoundError:
            data["layers"] = "needs the 'onnx' package"
        else:
            counts: dict[str, int] = {}
            for node in onnx.load(str(path), load_external_data=False).graph.node:
                key = f"{node.domain}.{node.op_type}" if node.domain else node.op_type
                counts[key] = counts.get(key, 0) + 1
            data["layers"] = dict(sorted(counts.items(), key=lambda kv: -kv[1]))
    return data


def _engine_report(path: Path, args: argparse.Namespace) -> dict[str, Any]:
    from asanet_rt.engine_file import extract_plan, read_engine_info

    from asanet_rt.io_utils import sha256_file

    info = read_engine_info(path)
    data = {"path": str(path), "kind": "engine", "file_bytes": path.stat().st_size,
            "built_by": info.describe_target(), **info.to_dict(), "file_sha256": sha256_file(path)}
    data["metadata"] = data.pop("model")
    if args.layers:
        data["layers"] = _engine_layers(path, allow_host_code=bool(getattr(args, "allow_engine_host_code", False)))
    if args.extract_plan:
        data["extracted_plan"] = str(extract_plan(path, args.extract_plan, overwrite=True))
    return data


def _engine_layers(path: Path, allow_host_code: bool = False) -> Any:
    """Layer list from TensorRT's engine inspector: deserialises the engine (same version, a GPU needed)."""
    from asanet_rt.engines.inspect_layers import engine_layers

    return engine_layers(path, allow_host_code=allow_host_code)


def _shape(spec: dict[str, Any]) -> str:
    return f"{spec['name']} {spec['dtype']} [{', '.join(str(d) for d in spec['shape'])}]"


def _format(data: dict[str, Any]) -> str:
    """Human-readable report of an ``inspect`` dict."""
    rows: list[tuple[str, str]] = []
    meta = data.get("metadata") or None
    export = (meta or {}).get("export") or {}
    size = f"{data['file_bytes'] / 2**20:.1f} MiB"
    if data["kind"] == "engine":
        rows += [("engine", f"{data['path']} ({size}, asanet-rt container v{data['container_version']})"),
                 ("built by", data["built_by"]),
                 ("compute capability", f"{data['compute_capability']}"
                                        + (f" ({data['device_name']})" if data.get("device_name") else "")),
                 ("compatibility", ", ".join(f"{k}={v}" for k, v in data["compatibility"].items() if v not in
                                             ([], None))),
                 ("precision", f"{data['precision']} (graph), export says {data.get('export_precision')}")]
        for i, profile in enumerate(data["profiles"]):
            rows.append((f"profile {i}", "; ".join(f"{n} {s['min']} / {s['opt']} / {s['max']}"
                                                   for n, s in profile.items())))
        plugins = data["plugins"]
        rows.append(("plugins", plugins.get("mode", "none") + (
            f", {len(plugins.get('used', []))} layers, {plugins.get('library')} sha256 "
            f"{str(plugins.get('library_sha256'))[:12]}" if plugins.get("used") else "")))
        rows += [("inputs", "; ".join(_shape(t) for t in data["inputs"])),
                 ("outputs", "; ".join(_shape(t) for t in data["outputs"])),
                 ("sha256", f"engine {data.get('engine_sha256') or '?'}, file {data.get('file_sha256') or '?'}"),
                 ("onnx", f"{data['onnx_file']} (sha256 {data['onnx_sha256'][:16]})"),
                 ("built", f"{data['built_at']} in {data['build_seconds']:.1f} s by asanet-rt "
                           f"{data['asanet_rt_version']}; engine {data['engine_bytes'] / 2**20:.1f} MiB"),
                 ("builder", ", ".join(f"{k}={v}" for k, v in data["builder"].items() if v not in (None, [], "")))]
    else:
        ops = data.get("asanet_ops") or {}
        rows += [("onnx", f"{data['path']} ({size}, {data['nodes']} nodes, {data.get('producer') or '?'})"),
                 ("opsets", ", ".join(f"{d} {v}" for d, v in data["opsets"].items()) or "?"),
                 ("precision", f"{data['precision']} (graph), export says {export.get('precision')}"),
                 ("ops", f"{data['ops_flavour']}" + (f": {', '.join(f'{k} x{v}' for k, v in ops.items())}"
                                                    if ops else "")),
                 ("inputs", "; ".join(_shape(t) for t in data["inputs"])),
                 ("outputs", "; ".join(_shape(t) for t in data["outputs"]))]
        if data.get("local_functions"):
            rows.append(("local functions", ", ".join(data["local_functions"])))
    if meta:
        from asanet_rt.metadata import ModelMetadata

        model = ModelMetadata.from_dict(meta)
        rows += [("model", model.arch.summary()),
                 ("classes", ", ".join(model.classes)),
                 ("input", f"{export.get('input', 'raw')}, optical bands "
                           f"{', '.join(export.get('optical_bands') or model.optical_channels)}"),
                 ("batch / tile", f"{export.get('batch')} / {export.get('tile')} (native tile {model.native_tile})"),
                 ("pre-processing", model.describe_preprocessing())]
        if model.checkpoint_sha256:
            rows.append(("checkpoint", f"sha256 {model.checkpoint_sha256[:16]}"))
    else:
        rows.append(("metadata", "none (not exported by asanet-rt)"))
    width = max(len(k) for k, _ in rows)
    lines = [f"{k:<{width}}  {v}" for k, v in rows]
    layers = data.get("layers")
    if isinstance(layers, dict):
        lines.append("op types:")
        lines += [f"  {k:<24} {v}" for k, v in layers.items()]
    elif isinstance(layers, list):
        lines.append(f"layers ({len(layers)}):")
        for layer in layers:
            if isinstance(layer, dict):
                lines.append(f"  {layer.get('Name', '?')}  [{layer.get('LayerType', '?')}]"
                             + (f" {layer.get('Precision', '')}" if layer.get("Precision") else ""))
            else:
                lines.append(f"  {layer}")
    elif layers:
        lines.append(f"layers: {layers}")
    if data.get("extracted_plan"):
        lines.append(f"bare engine written to {data['extracted_plan']}")
    return "\n".join(lines)
