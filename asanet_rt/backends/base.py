"""The one runner interface every backend implements (Polygraphy style: activate, infer, close)."""
from __future__ import annotations

import abc
from typing import Mapping

import numpy as np

from ..metadata import ModelMetadata


class Runner(abc.ABC):
    """Runs one model file. Not thread-safe: use one runner per thread (or guard calls with a lock)."""

    #: Short backend name shown in logs and benchmark tables ("onnxruntime", "tensorrt", "tensorrt_rtx").
    backend: str = ""

    def __init__(self, path: str, metadata: ModelMetadata) -> None:
        self.path = str(path)
        self.metadata = metadata

    @property
    def input_names(self) -> tuple[str, ...]:
        return ("optical", "sar")

    @property
    @abc.abstractmethod
    def output_names(self) -> tuple[str, ...]:
        """Names of the model's outputs (a subset of logits, probabilities, classes, confidence)."""

    @abc.abstractmethod
    def infer(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run one batch; ``feed`` maps input names to NCHW arrays. Returns host arrays by output name."""

    def close(self) -> None:
        """Free the backend's resources (device memory, sessions). Safe to call twice."""

    def __enter__(self) -> "Runner":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
