"""The torch backend: a checkpoint run on the faithful network, behind the runtime's one runner interface.

It takes what a raw-input ONNX export takes (0-255 pixel values, optical bands in the checkpoint's own order) and
gives softmax probabilities, so a checkpoint is a drop-in reference for ``classify``, ``eval``, ``bench`` and
``compare``. Registered in ``asanet_rt.backends.registry`` by module name: the runtime never imports torch itself.
"""
from __future__ import annotations

import contextlib
import os
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from asanet_rt.backends.base import ComputeFn, Runner
from asanet_rt.backends.cpu import physical_cores
from asanet_rt.errors import AsanetError
from asanet_rt.metadata import ModelMetadata

from .checkpoint import load_checkpoint

#: What the eager network accepts: any batch, any H, W from 32 px (multiples of 32 keep the pyramid exact).
TILE_RANGE = (32, 8192)
BATCH_RANGE = (1, 256)


class TorchRunner(Runner):
    """A checkpoint on torch eager (or ``compile=True``: ``torch.compile``), on the CPU or ``torch_device``."""

    backend = "torch"

    def __init__(self, path: str | os.PathLike, device: int = 0, threads: int | None = None,
                 torch_device: str = "cpu", compile: bool = False) -> None:  # noqa: A002 - torch's own word
        # physical cores by default, like the other CPU backends (torch would count hyper-threads)
        torch.set_num_threads(int(threads) if threads else physical_cores())
        with contextlib.suppress(RuntimeError):  # only settable before the first parallel op
            torch.set_num_interop_threads(1)
        if not (torch_device == "cpu" or torch_device.startswith("cuda")):
            raise AsanetError(f"--torch-device {torch_device!r}: use cpu or cuda[:N]")
        if torch_device.startswith("cuda") and not torch.cuda.is_available():
            raise AsanetError(f"{path}: --torch-device {torch_device} but this torch has no CUDA device")
        self.device = torch_device if torch_device == "cpu" or ":" in torch_device else f"{torch_device}:{device}"
        model = load_checkpoint(path).to(self.device)
        meta = model.metadata
        # The network's own contract, stated as an export section so every consumer reads one description.
        super().__init__(str(path), meta.with_export(
            input="raw", optical_bands=list(meta.optical_channels), outputs=["probabilities"],
            tile=list(TILE_RANGE), batch=list(BATCH_RANGE), precision="fp32", ops="torch"))
        self.compiled = bool(compile)
        self.backend = "torch-compile" if self.compiled else "torch"
        self.net = torch.compile(model) if self.compiled else model
        self._output_names: tuple[str, ...] = ("probabilities",)
        self._wrapper: torch.nn.Module | None = None
        dev = self.device
        self._opt_mean = torch.tensor(meta.optical_mean, device=dev).view(1, 3, 1, 1)
        self._opt_std = torch.tensor(meta.optical_std, device=dev).view(1, 3, 1, 1)
        self._sar_mean = torch.tensor(meta.sar_mean[:1], device=dev).view(1, 1, 1, 1)
        self._sar_std = torch.tensor(meta.sar_std[:1], device=dev).view(1, 1, 1, 1)

    @classmethod
    def from_model(cls, model: torch.nn.Module, like: ModelMetadata | None = None,
                   name: str = "torch network (in memory)") -> "TorchRunner":
        """A network in memory (on the CPU) that takes what ``like``'s graph takes and gives every output.

        The input contract (raw or normalized, optical band order) follows ``like``'s export section (default:
        raw, the network's own band order); the network runs in its export form (``ExportableASANet``), so it is
        the torch reference of that graph: ``compare`` runs it against ONNX files and engines.
        """
        from .onnx_export import OUTPUT_NAMES, ExportableASANet, ExportOptions

        meta = model.metadata
        export = dict((like.export or {}) if like is not None else {})
        options = ExportOptions(input=export.get("input", "raw"),
                                optical_bands=tuple(export["optical_bands"]) if export.get("optical_bands") else None,
                                outputs=OUTPUT_NAMES, probabilities_dtype="float32")
        self = cls.__new__(cls)
        Runner.__init__(self, name, meta.with_export(
            input=options.input, optical_bands=list(options.resolved_bands(meta)), outputs=list(OUTPUT_NAMES),
            tile=list(TILE_RANGE), batch=list(BATCH_RANGE), precision="fp32", ops="torch"))
        self.device, self.compiled, self.backend = "cpu", False, "torch"
        self.net = None
        self._output_names = tuple(OUTPUT_NAMES)
        self._wrapper = ExportableASANet(model, meta, options).eval()
        return self

    @property
    def output_names(self) -> tuple[str, ...]:
        return self._output_names

    def _forward(self, optical: torch.Tensor, sar: torch.Tensor) -> dict[str, torch.Tensor]:
        """The work of an export: normalise, replicate SAR, network, softmax (and the export form's outputs)."""
        if self._wrapper is not None:
            return dict(zip(self._output_names, self._wrapper(optical, sar)))
        opt = (optical - self._opt_mean) / self._opt_std
        sar3 = ((sar - self._sar_mean) / self._sar_std).expand(-1, 3, -1, -1)
        return {"probabilities": torch.softmax(self.net(opt, sar3), dim=1)}

    def _tensors(self, feed: Mapping[str, np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
        return tuple(torch.from_numpy(np.ascontiguousarray(feed[k], dtype=np.float32)).to(self.device)
                     for k in self.input_names)  # type: ignore[return-value]

    def infer(self, feed: Mapping[str, np.ndarray], outputs: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        names = list(outputs) if outputs is not None else list(self._output_names)
        with torch.inference_mode():
            out = self._forward(*self._tensors(feed))
            return {name: out[name].cpu().numpy() for name in names}  # .cpu() syncs a GPU

    def compute_fn(self, feed: Mapping[str, np.ndarray]) -> tuple[ComputeFn, str] | None:
        opt, sar = self._tensors(feed)
        if self.device == "cpu":
            def call() -> None:
                with torch.inference_mode():
                    self._forward(opt, sar)
            return call, "perf_counter_ns"
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)

        def timed() -> int:
            with torch.inference_mode():
                start.record()
                self._forward(opt, sar)
                end.record()
            end.synchronize()
            return int(start.elapsed_time(end) * 1e6)
        return timed, "cuda_event"

    def runtime_info(self) -> dict[str, Any]:
        info = {**super().runtime_info(), "torch_threads": torch.get_num_threads(),
                "torch_interop_threads": torch.get_num_interop_threads(),
                "mode": "compile" if self.compiled else "eager"}
        if self.device != "cpu":
            info["gpu"] = torch.cuda.get_device_name(self.device)
        return info

    def reset_device_peak(self) -> None:
        if self.device != "cpu":
            torch.cuda.reset_peak_memory_stats(self.device)

    def device_memory(self) -> tuple[float | None, str | None]:
        if self.device == "cpu":
            return None, None
        return (torch.cuda.max_memory_allocated(self.device) / (1024 * 1024),
                "torch.cuda.max_memory_allocated (tensors; the caching allocator reserves more)")

    def close(self) -> None:
        self.net = self._wrapper = None
