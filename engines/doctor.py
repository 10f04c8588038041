"""``asanet-rt doctor`` / ``tools/trt_selfcheck.py``: what a GPU owner runs first.

Prints the TensorRT, CUDA driver, cuda-python, nvcc and GPU facts; builds a small plugin-flavour engine; runs it
against ONNX Runtime on the same inputs; reports which ops ran as plugins, DLA placement and a timing. Where
something needed is missing it says what and exits 1, without a traceback.
"""
from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import json
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

from asanet_rt._version import __version__
from asanet_rt.errors import AsanetError


def _version_of(distributions: tuple[str, ...]) -> str | None:
    for name in distributions:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def _module_version(name: str) -> tuple[str | None, str | None]:
    """(version, problem) of an importable TensorRT-like module; the PyPI placeholders fail at import."""
    if importlib.util.find_spec(name) is None:
        return None, "not installed"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            module = importlib.import_module(name)
    except Exception as exc:  # noqa: BLE001 - placeholder packages and missing native libraries raise anything
        return None, f"import failed ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"
    return str(getattr(module, "__version__", "?")), None


def facts() -> dict[str, Any]:
    """Everything the engine path depends on, each with its version or why it is missing."""
    from asanet_rt.backends.tensorrt_common import cuda_driver_version, current_device_info

    from .plugins import build as plugin_build

    report: dict[str, Any] = {"python": sys.version.split()[0], "asanet_rt": __version__}
    for name in ("tensorrt", "tensorrt_lean", "tensorrt_rtx"):
        version, problem = _module_version(name)
        report[name] = version or f"missing: {problem}"
    driver = cuda_driver_version()
    report["cuda_driver"] = f"{driver[0]}.{driver[1]}" if driver else "missing: no libcuda (NVIDIA driver)"
    report["cuda_python"] = _version_of(("cuda-python", "cuda-bindings")) or "missing: pip install 'cuda-python<13' " \
        "(CUDA 12 drivers, JetPack 6) or cuda-python (CUDA 13)"
    if driver and report["cuda_python"][0].isdigit() and int(report["cuda_python"].split(".")[0]) > driver[0]:
        report["cuda_python"] += f" (warning: newer than the CUDA {driver[0]} driver; pip install " \
                                 f"'cuda-python<{driver[0] + 1}')"
    try:
        compiler = plugin_build.nvcc()
        report["nvcc"] = "%d.%d" % plugin_build.nvcc_version(compiler) + f" ({compiler})"
    except AsanetError as exc:
        report["nvcc"] = f"missing: {exc}"
    device = current_device_info(0)
    report["gpu"] = (f"{device.name}, sm_{device.compute_capability[0]}{device.compute_capability[1]}"
                     f"{', integrated (Jetson)' if device.integrated else ''}" if device
                     else "missing: no CUDA GPU visible (driver, cuda-python and a device are all needed)")
    kernels = plugin_build.DEFAULT_OUT / plugin_build.FATBIN
    built = plugin_build.built_with(kernels) if kernels.is_file() else None
    report["plugin_kernels"] = (f"{kernels} (nvcc {built[0]}.{built[1]})" if built else str(kernels)) \
        if kernels.is_file() else "not built (make plugins; auto mode builds the AOT PTX itself)"
    return report


def _missing(report: dict[str, Any]) -> list[str]:
    problems = []
    if str(report["tensorrt"]).startswith("missing"):
        problems.append("TensorRT (tensorrt): " + report["tensorrt"].removeprefix("missing: ") +
                        "; on Jetson use JetPack's python3-libnvinfer in a --system-site-packages venv, elsewhere "
                        "pip install tensorrt on a GPU machine")
    for key in ("cuda_driver", "cuda_python", "gpu"):
        if str(report[key]).startswith("missing"):
            problems.append(f"{key.replace('_', '-')}: {report[key].removeprefix('missing: ')}")
    return problems


def _test_onnx(folder: Path) -> Path:
    """A small random ASANet exported with the fused ops (needs the export stage: torch, onnx)."""
    from asanet_rt.export.network import build_model
    from asanet_rt.export.onnx_export import ExportOptions, export_onnx
    from asanet_rt.metadata import ArchSpec, ModelMetadata

    import torch

    torch.manual_seed(0)
    arch = ArchSpec((1, 1, 1, 1), (32, 64, 96, 128), 32, 5)
    model = build_model(arch)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.05)
    model.metadata = ModelMetadata.build(arch)
    return Path(export_onnx(model, folder / "doctor_plugins.onnx",
                            ExportOptions(outputs=("logits",), tile=(64, 256), batch=(1, 2), ops="plugins")).path)


def check_engine(onnx_path: Path | None, plugins: str, dla_core: int | None, folder: Path) -> dict[str, Any]:
    """Build, run against ONNX Runtime, time. Raises AsanetError with the failing step."""
    import numpy as np

    from asanet_rt.backends import open_runner

    from .builder import build_engine

    result: dict[str, Any] = {}
    if onnx_path is None:
        if importlib.util.find_spec("torch") is None:
            raise AsanetError("making the test model needs the export stage (torch); pass --onnx MODEL.onnx "
                              "(an `asanet-rt export --ops plugins` file) instead")
        onnx_path = _test_onnx(folder)
    result["onnx"] = str(onnx_path)
    engine = folder / "doctor.engine"
    info = build_engine(onnx_path, engine, backend="tensorrt", plugin_mode=plugins, overwrite=True,
                        profiles=[{"batch": (1, 2, 2), "tile": (64, 128, 256)}], progress=False)
    result["plugin_mode"] = info.plugins.get("mode", "none")
    result["plugin_ops"] = dict(info.plugins.get("ops") or {})
    result["build_s"] = info.build_seconds
    rng = np.random.default_rng(0)
    feed = {"optical": rng.uniform(0, 255, (2, 3, 128, 192)).astype(np.float32),
            "sar": rng.uniform(0, 255, (2, 1, 128, 192)).astype(np.float32)}
    with open_runner(onnx_path) as ort_runner, open_runner(engine) as trt_runner:
        name = trt_runner.output_names[0]
        expected, got = ort_runner.infer(feed)[name], trt_runner.infer(feed)[name]
        timed = trt_runner.compute_fn(feed)[0]
        samples = [timed() / 1e6 for _ in range(20)]
    result["max_abs_diff"] = float(np.abs(got.astype(np.float64) - expected).max())
    if got.ndim == 4:
        result["argmax_agreement"] = float((got.argmax(1) == expected.argmax(1)).mean())
    result["compute_ms_p50"] = round(statistics.median(samples), 3)
    if dla_core is not None:
        dla_engine = folder / "doctor_dla.engine"
        dla = build_engine(onnx_path, dla_engine, backend="tensorrt", plugin_mode=plugins, overwrite=True,
                           dla_core=dla_core, profiles=[{"batch": (1, 1, 1), "tile": (128, 128, 128)}], progress=False)
        placed = dla.builder.get("dla_layers")
        result["dla_layers"] = "unknown (inspector unavailable)" if placed is None else len(placed)
    return result


def main(plugins: str = "auto", dla_core: int | None = None, keep: str | None = None, as_json: bool = False,
         onnx: str | None = None) -> int:
    """Print the report; 0 when the engine path works end to end here, 1 otherwise."""
    report = facts()
    problems = _missing(report)
    if not problems:
        folder = Path(keep) if keep else Path(tempfile.mkdtemp(prefix="asanet_doctor_"))
        folder.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        try:
            report["engine_check"] = check_engine(Path(onnx) if onnx else None, plugins, dla_core, folder)
        except (AsanetError, ModuleNotFoundError) as exc:
            problems.append(f"engine check: {exc}")
        report["engine_check_s"] = round(time.perf_counter() - started, 1)
    report["problems"] = problems
    if as_json:
        print(json.dumps(report, indent=2))
    else:
        width = max(len(k) for k in report)
        for key, value in report.items():
            if key in ("problems", "engine_check"):
                continue
            print(f"{key:<{width}}  {value}")
        for key, value in (report.get("engine_check") or {}).items():
            print(f"{key:<{width}}  {value}")
        for problem in problems:
            print(f"missing / failed: {problem}")
        print("result: " + ("ready: engines build and run here" if not problems else
                            "NOT ready for TensorRT engines (see above)"))
    return 1 if problems else 0
