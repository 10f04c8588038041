"""What a report says about a model: precision, op flavour, input kind, outputs, arch, classes, band order."""
from __future__ import annotations

from typing import Any

from .backends import Runner
from .backends.registry import file_kind


def model_summary(runner: Runner) -> dict[str, Any]:
    """The model facts ``bench`` and ``eval`` reports carry, read from the runner's metadata."""
    meta = runner.metadata
    export = dict(meta.export or {})
    inputs = runner.inputs
    return {
        "precision": inputs.precision,
        # The op flavour (portable/plugins) of an exported graph; a checkpoint has none.
        "flavour": export.get("ops") if file_kind(runner.path) != "checkpoint" else None,
        "int8_target": export.get("int8_target"),
        "input_kind": inputs.kind,
        "outputs": list(inputs.outputs) or None,
        "arch": meta.arch.name,
        "num_classes": meta.num_classes,
        "optical_bands": list(inputs.optical_bands),
    }
