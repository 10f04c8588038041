"""The one runner interface every backend implements (Polygraphy style: open, infer, close)."""
from __future__ import annotations

import abc
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from ..metadata import ModelInputs, ModelMetadata

#: A compute-only call for timing: returns None (time it on the host) or the nanoseconds a device timer measured.
ComputeFn = Callable[[], "int | None"]


class Runner(abc.ABC):
    """Runs one model file. Not thread-safe: use one runner per thread (or guard calls with a lock).

    Every consumer (``Classifier``, ``classify``, ``batch``, ``eval``, ``bench``, ``compare``) talks to a backend
    through this interface only; a new backend is one subclass plus one row in ``registry.BACKENDS``.
    """

    #: Registry name of the backend ("onnxruntime", "openvino", "tensorrt", "tensorrt_rtx", "torch", ...).
    backend: str = ""
    #: Where it computes: "cpu" or "cuda:N".
    device: str = "cpu"

    def __init__(self, path: str, metadata: ModelMetadata) -> None:
        self.path = str(path)
        self.metadata = metadata

    @property
    def inputs(self) -> ModelInputs:
        """What the model accepts (tile and batch ranges, band order, input kind)."""
        return ModelInputs.from_metadata(self.metadata, self.path)

    @property
    def input_names(self) -> tuple[str, ...]:
        return ("optical", "sar")

    @property
    @abc.abstractmethod
    def output_names(self) -> tuple[str, ...]:
        """Names of the model's outputs (a subset of logits, probabilities, classes, confidence)."""

    @abc.abstractmethod
    def infer(self, feed: Mapping[str, np.ndarray], outputs: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        """Run one batch; ``feed`` maps input names to NCHW arrays. Returns host arrays by output name."""

    def prepare(self, batch: int, tile: int, width: int | None = None) -> None:
        """Get ready for (batch, tile, width or tile) inputs; backends that compile per shape do it here."""

    def compute_fn(self, feed: Mapping[str, np.ndarray]) -> tuple[ComputeFn, str] | None:
        """A compute-only call with inputs already in place and outputs pre-allocated, and its timer's name.

        None when the backend offers nothing better than ``infer`` (benchmarks then time ``infer`` only).
        """
        return None

    def runtime_info(self) -> dict[str, Any]:
        """How the backend runs (threads, providers, configuration), for logs and benchmark reports."""
        return {"runner": type(self).__name__, "device": self.device}

    def device_memory(self) -> tuple[float | None, str | None]:
        """(peak device memory MiB, how it was measured), or (None, None) where the backend keeps no figure."""
        return None, None

    def reset_device_peak(self) -> None:
        """Start a new device-memory high-water mark (where the backend keeps one)."""

    def close(self) -> None:
        """Free the backend's resources (device memory, sessions). Safe to call twice."""

    def __enter__(self) -> "Runner":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
