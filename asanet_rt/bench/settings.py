"""What a benchmark runs and how: the models (``PATH@BACKEND``, names from the backend registry) and the settings."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from ..backends.registry import canonical_name, file_kind, get_backend, resolve
from ..errors import AsanetError

MODES = ("both", "e2e", "compute")


@dataclass(frozen=True)
class ModelSpec:
    """One model file on one backend (a canonical registry name); ``label`` names it in tables (unique in a run)."""

    path: str
    backend: str
    label: str = ""

    @property
    def kind(self) -> str:
        """``checkpoint``, ``onnx`` or ``engine``, by file suffix."""
        return file_kind(self.path)


@dataclass(frozen=True)
class BenchSettings:
    """Sweep, timing budget and thread count shared by every model of one run."""

    batches: tuple[int, ...] = (1,)
    tiles: tuple[int, ...] = (256,)
    warmup: int = 3
    iterations: int = 100
    time_budget_s: float = 5.0
    min_iterations: int = 3
    threads: int = 0  # 0: physical cores
    mode: str = "both"
    seed: int = 0
    device: int = 0
    torch_device: str = "cpu"
    openvino_precision: str = "f32"
    isolate: bool = True
    keep_samples: bool = True
    allow_engine_host_code: bool = False  # trust version-compatible engines' embedded code (--allow-engine-host-code)

    def resolved(self) -> "BenchSettings":
        """A copy with ``threads`` filled in and every value checked."""
        from ..backends.cpu import physical_cores

        threads = int(self.threads) or physical_cores()
        if threads < 1:
            raise AsanetError(f"--threads {self.threads}: need at least 1")
        if not self.batches or min(self.batches) < 1:
            raise AsanetError(f"--batch {','.join(map(str, self.batches))}: batch sizes must be >= 1")
        if not self.tiles or min(self.tiles) < 32:
            raise AsanetError(f"--tile {','.join(map(str, self.tiles))}: tiles must be >= 32 px (ASANet's minimum)")
        if self.mode not in MODES:
            raise AsanetError(f"--mode {self.mode!r}: choose one of {', '.join(MODES)}")
        if self.warmup < 0 or self.iterations < 1 or self.time_budget_s <= 0:
            raise AsanetError("--warmup must be >= 0, --iterations >= 1 and --time-budget > 0")
        if not (self.torch_device == "cpu" or self.torch_device.startswith("cuda")):
            raise AsanetError(f"--torch-device {self.torch_device!r}: use cpu or cuda[:N]")
        return dataclasses.replace(self, threads=threads, batches=tuple(int(b) for b in self.batches),
                                   tiles=tuple(int(t) for t in self.tiles),
                                   min_iterations=max(1, min(self.min_iterations, self.iterations)))

    def runner_options(self, backend: str) -> dict[str, Any]:
        """Keyword options for ``open_runner`` on ``backend``: only those the registry says it takes."""
        spec = get_backend(backend)
        wanted = {"threads": self.threads or None, "torch_device": self.torch_device,
                  "precision": self.openvino_precision, "allow_host_code": self.allow_engine_host_code or None}
        return {k: v for k, v in wanted.items() if k in spec.options and v is not None}

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["batches"], data["tiles"] = list(self.batches), list(self.tiles)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "BenchSettings":
        known = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        values["batches"], values["tiles"] = tuple(values["batches"]), tuple(values["tiles"])
        return cls(**values)


def model_kind(path: str) -> str:
    """``checkpoint``, ``onnx`` or ``engine`` from the file suffix (the registry's ``file_kind``)."""
    return file_kind(path)


def parse_model(text: str, torch_compile: bool = False, settings: "BenchSettings | None" = None) -> ModelSpec:
    """``PATH`` or ``PATH@BACKEND`` (any registry name or alias: ``ort``, ``openvino``, ``trt``, ``rtx`` ...).

    A bare ONNX path runs what ``classify`` would run: ``backend="auto"``'s choice, probed at the first tile
    and batch of ``settings`` (``asanet_rt.backends.auto``).
    """
    path, backend = text, "auto"
    head, sep, tail = text.rpartition("@")
    if sep and tail:
        try:
            backend = canonical_name(tail)
            path = head
        except AsanetError:
            pass  # an '@' that is part of the file name
    if not Path(path).exists():
        file_kind(path)  # an unknown suffix is the clearer error
        raise AsanetError(f"{path}: model file not found")
    if not Path(path).is_file():
        raise AsanetError(f"{path}: not a model file (a directory?)")
    if backend == "auto" and file_kind(path) == "onnx":
        from ..backends.auto import choose_backend

        chosen, choice = choose_backend(path, "auto", tile=settings.tiles[0] if settings else None,
                                        batch=settings.batches[0] if settings else None,
                                        threads=(settings.threads or None) if settings else None)
        # labelled as auto's pick only when a probe chose it (not $ASANET_RT_BACKEND, not a lone backend)
        label = f"{Path(path).name} (auto: {chosen})" if choice is not None and choice.timings_ms else ""
        return ModelSpec(str(path), chosen, label=label)
    spec = resolve(path, backend)
    name = spec.name
    if name == "torch" and torch_compile:
        name = "torch-compile"
    return ModelSpec(str(path), name)


def expand_models(models: Sequence[str | ModelSpec], torch_compile: bool = False,
                  openvino: bool = False, settings: "BenchSettings | None" = None) -> list[ModelSpec]:
    """Parse model arguments; ``openvino`` adds an OpenVINO run right after every ONNX Runtime CPU run."""
    specs: list[ModelSpec] = []
    for item in models:
        spec = item if isinstance(item, ModelSpec) else parse_model(str(item), torch_compile, settings)
        specs.append(spec)
        if openvino and spec.kind == "onnx" and spec.backend == "onnxruntime":
            specs.append(ModelSpec(spec.path, "openvino"))
    if not specs:
        raise AsanetError("no model given; pass one or more checkpoints, ONNX files or engines")
    for spec in specs:
        row = get_backend(spec.backend)
        # Engines are exempt: their runner reads the header and imports TensorRT or TensorRT-RTX itself.
        if row.kind != "engine" and not row.available():
            raise AsanetError(f"{spec.path}: backend {row.name} is not installed; {row.install}")
    labels: dict[str, int] = {}
    out = []
    for spec in specs:
        label = spec.label or f"{Path(spec.path).name} ({spec.backend})"
        labels[label] = labels.get(label, 0) + 1
        if labels[label] > 1:
            label = f"{label} #{labels[label]}"
        out.append(dataclasses.replace(spec, label=label))
    return out
