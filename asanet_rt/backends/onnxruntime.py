"""ONNX Runtime backend: CPU by default, the CUDA or TensorRT execution provider when installed and asked for."""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from ..errors import AsanetError
from ..io_utils import cache_dir
from ..metadata import METADATA_KEY, MetadataError, ModelMetadata
from ..tiling import default_tile
from .base import ComputeFn, Runner
from .cpu import physical_cores, release_freed_memory

log = logging.getLogger(__name__)

#: Short provider names (``provider=``) -> ONNX Runtime execution provider names.
PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider",
             "tensorrt": "TensorrtExecutionProvider"}
_NUMPY_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(uint8)": np.uint8,
                "tensor(double)": np.float64}


def read_onnx_metadata(session: Any, path: str | os.PathLike) -> ModelMetadata:
    """The asanet-rt metadata stored in an ONNX file's ``metadata_props``; a clear error if absent or too new."""
    props = session.get_modelmeta().custom_metadata_map
    text = props.get(METADATA_KEY)
    if text is None:
        raise MetadataError(f"{path}: no asanet-rt metadata (metadata_props key {METADATA_KEY!r}); export the "
                            f"model with `asanet-rt export` so the runtime knows its classes, bands and tile range")
    return ModelMetadata.from_json(text, source=str(path))


def _session(ort: Any, path: Path, opts: Any, providers: list[Any]) -> Any:
    try:
        return ort.InferenceSession(str(path), opts, providers=providers)
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own exception hierarchy
        raise AsanetError(f"{path}: not a loadable ONNX model ({type(exc).__name__}: {exc})") from exc


class OnnxRuntimeRunner(Runner):
    """One ``onnxruntime.InferenceSession``; ``infer`` casts inputs (uint8 included) to the model's input type.

    ``threads`` sets intra-op threads (default: physical cores, since hyper-threads do not speed up convolutions);
    ``spinning`` keeps idle workers busy-waiting (off by default so the scene pipeline's reader and writer threads
    get the CPU); ``provider`` is ``cpu`` (default), ``cuda`` or ``tensorrt``; ``provider_options`` are passed to it.
    """

    backend = "onnxruntime"

    def __init__(self, path: str | os.PathLike, device: int = 0, provider: str | None = None,
                 threads: int | None = None, spinning: bool = False,
                 provider_options: Mapping[str, Any] | None = None) -> None:
        import onnxruntime as ort

        path = Path(path)
        if not path.is_file():
            raise AsanetError(f"{path}: model file not found")
        provider = (provider or "cpu").lower()
        if provider not in PROVIDERS:
            raise AsanetError(f"{path}: unknown ONNX Runtime provider {provider!r}; choose {', '.join(PROVIDERS)}")
        available = ort.get_available_providers()
        if PROVIDERS[provider] not in available:
            raise AsanetError(f"{path}: ONNX Runtime here has no {PROVIDERS[provider]} (available: "
                              f"{', '.join(available)}); install onnxruntime-gpu for cuda/tensorrt")
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.intra_op_num_threads = int(threads) if threads else physical_cores()
        opts.inter_op_num_threads = 1  # the graph is one chain; parallelism is inside the ops
        opts.log_severity_level = 3
        opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
        providers: list[Any] = []
        if provider != "cpu":
            # A CPU session first, only to read the metadata, so the TensorRT EP profile can use the model's ranges.
            probe = _session(ort, path, opts, ["CPUExecutionProvider"])
            providers = self._gpu_providers(provider, device, read_onnx_metadata(probe, path),
                                            dict(provider_options or {}), path)
            del probe
        self.session = _session(ort, path, opts, providers + ["CPUExecutionProvider"])
        release_freed_memory()  # the file and its parsed copy are freed now; give their pages back
        super().__init__(str(path), read_onnx_metadata(self.session, path))
        active = self.session.get_providers()
        if PROVIDERS[provider] not in active:
            log.warning("%s: ONNX Runtime fell back to %s instead of %s", path, ", ".join(active), PROVIDERS[provider])
        self.providers = tuple(active)
        self.threads = opts.intra_op_num_threads
        self.backend = "onnxruntime" if provider == "cpu" else f"onnxruntime-{provider}"
        self.device = "cpu" if self.providers[:1] == ("CPUExecutionProvider",) else f"cuda:{int(device)}"
        inputs = {i.name: i for i in self.session.get_inputs()}
        missing = [name for name in self.input_names if name not in inputs]
        if missing:
            raise AsanetError(f"{path}: model inputs are {', '.join(inputs)}; the asanet-rt contract needs "
                              f"{', '.join(self.input_names)}")
        self._input_types = {name: _NUMPY_TYPES.get(inputs[name].type, np.float32) for name in self.input_names}
        self._output_names = tuple(o.name for o in self.session.get_outputs())

    @staticmethod
    def _gpu_providers(provider: str, device: int, meta: ModelMetadata, extra: dict[str, Any],
                       path: Path) -> list[Any]:
        """CUDA (and TensorRT) execution providers, with a TensorRT optimisation profile from the metadata."""
        cuda = ("CUDAExecutionProvider", {"device_id": int(device)})
        if provider == "cuda":
            cuda[1].update(extra)
            return [cuda]
        inputs = meta.inputs
        # the preferred shape is the tile scenes are cut into by default
        (bmin, bmax), (tmin, tmax), topt = inputs.batch_range, inputs.tile_range, default_tile(inputs)

        def shapes(n: int, t: int) -> str:
            return f"optical:{n}x3x{t}x{t},sar:{n}x1x{t}x{t}"

        cache = cache_dir("ort_trt")
        cache.mkdir(parents=True, exist_ok=True)
        trt_opts: dict[str, Any] = {
            "device_id": int(device),
            "trt_fp16_enable": inputs.precision in ("fp16", "int8"),
            "trt_engine_cache_enable": True,
            "trt_engine_cache_path": str(cache),
            "trt_profile_min_shapes": shapes(bmin, tmin),
            "trt_profile_opt_shapes": shapes(bmax, topt),
            "trt_profile_max_shapes": shapes(bmax, tmax),
        }
        trt_opts.update(extra)
        log.debug("%s: TensorRT EP options %s", path, trt_opts)
        return [("TensorrtExecutionProvider", trt_opts), cuda]

    @property
    def output_names(self) -> tuple[str, ...]:
        return self._output_names

    def infer(self, feed: Mapping[str, np.ndarray], outputs: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        """Run one batch; inputs of any numeric dtype (uint8 included) are cast to what the model declares."""
        if self.session is None:
            raise AsanetError(f"{self.path}: runner is closed")
        cast = {name: np.ascontiguousarray(feed[name], dtype=self._input_types[name]) for name in self.input_names}
        names = list(outputs) if outputs is not None else list(self._output_names)
        return dict(zip(names, self.session.run(names, cast)))

    def compute_fn(self, feed: Mapping[str, np.ndarray]) -> tuple[ComputeFn, str] | None:
        """IOBinding: inputs already in the session's element type and place, outputs pre-allocated."""
        import onnxruntime as ort

        sess = self.session
        cast = {name: np.ascontiguousarray(feed[name], dtype=self._input_types[name]) for name in self.input_names}
        names = list(self._output_names)
        first = sess.run(names, cast)
        place = "cpu" if self.device == "cpu" else "cuda"
        dev_id = 0 if place == "cpu" else int(self.device.split(":")[1])
        binding = sess.io_binding()
        keep = []
        for name, array in cast.items():
            value = ort.OrtValue.ortvalue_from_numpy(array, place, dev_id)
            binding.bind_ortvalue_input(name, value)
            keep.append(value)
        for name, out in zip(names, first):
            value = ort.OrtValue.ortvalue_from_shape_and_type(list(out.shape), out.dtype, place, dev_id)
            binding.bind_ortvalue_output(name, value)
            keep.append(value)

        def call() -> None:
            sess.run_with_iobinding(binding)
            _ = keep  # the bound buffers must outlive the binding
        # ORT's Run returns after the execution provider synchronised, so the host timer is right on a GPU too.
        return call, "perf_counter_ns" if place == "cpu" else "perf_counter_ns (Run synchronises the device)"

    def runtime_info(self) -> dict[str, Any]:
        return {**super().runtime_info(), "providers": list(self.providers), "intra_op_threads": self.threads}

    def close(self) -> None:
        self.session = None
