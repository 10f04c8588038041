"""``asanet-rt compare A B``: the same inputs through two artifacts, output by output (Polygraphy style).

Each side is a :class:`~asanet_rt.backends.Runner`: a checkpoint or an in-memory network runs on
``TorchRunner.from_model`` with the pre-processing the other side's graph has; ONNX files and engines open through
the backend registry (``asanet_rt.backends.open_runner``). Per common output:
Polygraphy's ``SimpleCompareFunc`` statistics (max / mean / median absolute and relative error, pass/fail against
``atol``/``rtol``), argmax agreement for class scores, and the worst pixels.
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from asanet_rt.backends import FILE_KINDS, Runner, model_feed, open_runner
from asanet_rt.errors import AsanetError
from asanet_rt.metadata import ModelMetadata

log = logging.getLogger(__name__)

SCORE_OUTPUTS = ("logits", "probabilities")


@dataclass
class OutputComparison:
    name: str
    shape: tuple[int, ...]
    max_abs: float
    mean_abs: float
    median_abs: float
    max_rel: float
    mean_rel: float
    passed: bool | None
    argmax_agreement: float | None = None
    worst: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items()}


@dataclass
class Comparison:
    a: str
    b: str
    inputs: str
    outputs: list[OutputComparison]
    passed: bool

    def to_dict(self) -> dict[str, Any]:
        return {"a": self.a, "b": self.b, "inputs": self.inputs, "passed": self.passed,
                "outputs": [o.to_dict() for o in self.outputs]}

    def format(self) -> str:
        lines = [f"A: {self.a}", f"B: {self.b}", f"inputs: {self.inputs}", ""]
        header = f"{'output':<14} {'shape':<20} {'max abs':>10} {'mean abs':>10} {'median abs':>10} {'max rel':>10} " \
                 f"{'argmax agree':>13} {'result':>7}"
        lines += [header, "-" * len(header)]
        for o in self.outputs:
            agree = f"{100 * o.argmax_agreement:.3f} %" if o.argmax_agreement is not None else "-"
            result = "-" if o.passed is None else ("PASS" if o.passed else "FAIL")
            lines.append(f"{o.name:<14} {str(o.shape):<20} {o.max_abs:>10.4g} {o.mean_abs:>10.4g} "
                         f"{o.median_abs:>10.4g} {o.max_rel:>10.4g} {agree:>13} {result:>7}")
        for o in self.outputs:
            if o.worst:
                lines += ["", f"worst pixels of {o.name} (n, c, y, x: A, B):"]
                lines += [f"  {tuple(w['index'])}: {w['a']:.6g}, {w['b']:.6g} (|diff| {w['abs_diff']:.4g})"
                          for w in o.worst]
        return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------- sides
def is_checkpoint(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a checkpoint by its suffix (the backend registry's file kinds)."""
    return Path(path).suffix.lower() in FILE_KINDS["checkpoint"]


def open_side(source: Any, like: ModelMetadata | None = None, dataset: str | None = None,
              backend: str = "auto") -> Runner:
    """One side of a comparison as a :class:`Runner`: a model file, or an in-memory ``ASANetSegmentor``.

    A checkpoint (file or network) has no input contract of its own; it follows ``like`` (the other side's
    export section), or the default raw contract (``TorchRunner.from_model``). Other files open through the
    backend registry (``backend``: auto by file type).
    """
    if _is_torch(source):
        from .torch_runner import TorchRunner

        if not isinstance(source, (str, os.PathLike)):
            return TorchRunner.from_model(source, like)
        from .checkpoint import load_checkpoint

        if not Path(source).is_file():
            raise AsanetError(f"{source}: not found")
        return TorchRunner.from_model(load_checkpoint(source, dataset=dataset), like, name=str(source))
    path = Path(source)
    if not path.exists():
        raise AsanetError(f"{path}: not found")
    return open_runner(path, backend=backend)


# ---------------------------------------------------------------------------------------------------- inputs
def make_inputs(meta: ModelMetadata, tile: int = 256, batch: int = 1, seed: int = 0) -> dict[str, np.ndarray]:
    """Seeded smooth random images in the form ``meta``'s graph takes (raw 0-255 or normalised)."""
    from .calibration import synthetic_tiles

    tiles = synthetic_tiles(batch, tile, seed)
    optical = np.concatenate([t.optical for t in tiles]).astype(np.float32)
    sar = np.concatenate([t.sar for t in tiles]).astype(np.float32)
    return {k: np.asarray(v, np.float32) for k, v in model_feed(meta, optical, sar).items()}


def load_inputs(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """``optical`` and ``sar`` arrays from an ``.npz`` file."""
    path = Path(path)
    try:
        with np.load(path) as data:
            missing = [k for k in ("optical", "sar") if k not in data.files]
            if missing:
                raise AsanetError(f"{path}: --inputs needs arrays named optical and sar; found "
                                  f"{', '.join(data.files) or 'none'}")
            return {"optical": np.asarray(data["optical"], np.float32), "sar": np.asarray(data["sar"], np.float32)}
    except (OSError, ValueError) as exc:
        raise AsanetError(f"{path}: not a readable .npz file ({exc})") from exc


# ---------------------------------------------------------------------------------------------------- compare
def compare_outputs(name: str, a: np.ndarray, b: np.ndarray, atol: float | None, rtol: float | None,
                    worst: int = 5) -> OutputComparison:
    """Polygraphy's statistics for one output, plus argmax agreement and the ``worst`` pixels."""
    from polygraphy.comparator.compare import SimpleCompareFunc
    from polygraphy.comparator.struct import IterationResult
    from polygraphy.logger import G_LOGGER

    if a.shape != b.shape:
        raise AsanetError(f"output {name}: shapes differ, A {a.shape} vs B {b.shape}")
    severity = G_LOGGER.module_severity
    G_LOGGER.module_severity = G_LOGGER.ERROR  # Polygraphy logs every statistic at INFO
    try:
        func = SimpleCompareFunc(atol=atol if atol is not None else 1e30, rtol=rtol if rtol is not None else 1e30,
                                 check_shapes=True)
        stats = func(IterationResult({name: a.astype(np.float32)}, runner_name="A"),
                     IterationResult({name: b.astype(np.float32)}, runner_name="B"))[name]
    finally:
        G_LOGGER.module_severity = severity
    diff = np.abs(a.astype(np.float64) - b.astype(np.float64))
    agreement = None
    if name in SCORE_OUTPUTS and a.ndim == 4:
        agreement = float((a.argmax(1) == b.argmax(1)).mean())
    elif name == "classes":
        agreement = float((a == b).mean())
    flat = np.argsort(diff, axis=None)[::-1][:worst]
    worst_px = [{"index": [int(i) for i in np.unravel_index(k, diff.shape)], "a": float(a.flat[k]),
                 "b": float(b.flat[k]), "abs_diff": float(diff.flat[k])} for k in flat if diff.flat[k] > 0]
    checked = atol is not None or rtol is not None
    return OutputComparison(name, tuple(a.shape), float(stats.max_absdiff), float(stats.mean_absdiff),
                            float(stats.median_absdiff), float(stats.max_reldiff), float(stats.mean_reldiff),
                            bool(stats) if checked else None, agreement, worst_px)


def compare_artifacts(a: Any, b: Any, *, inputs: Mapping[str, np.ndarray] | str | None = None, tile: int = 256,
                      batch: int = 1, seed: int = 0, outputs: Sequence[str] | None = None,
                      atol: float | None = None, rtol: float | None = None, min_agreement: float | None = None,
                      dataset: str | None = None, worst: int = 5) -> Comparison:
    """Run the same inputs through ``a`` and ``b`` (paths or in-memory networks) and compare common outputs."""
    # open the graph side first: a checkpoint follows its input contract (raw/normalised, band order)
    a_first = not (_is_torch(a) and not _is_torch(b))
    first = open_side(a if a_first else b, dataset=dataset)
    try:
        second = open_side(b if a_first else a, like=first.metadata, dataset=dataset)
    except BaseException:
        first.close()
        raise
    art_a, art_b = (first, second) if a_first else (second, first)
    try:
        if isinstance(inputs, (str, os.PathLike)):
            feed, described = load_inputs(inputs), str(inputs)
        elif inputs is not None:
            feed, described = dict(inputs), "given arrays"
        else:
            feed = make_inputs(first.metadata, tile, batch, seed)
            described = f"synthetic, seed {seed}, batch {batch}, tile {tile}x{tile}"
        described += f" ({first.inputs.kind} input)"
        out_names_a, out_names_b = tuple(art_a.output_names), tuple(art_b.output_names)
        common = [o for o in out_names_a if o in out_names_b]
        if outputs:
            missing = [o for o in outputs if o not in common]
            if missing:
                raise AsanetError(f"--outputs {','.join(missing)}: not produced by both (A: {', '.join(out_names_a)}; "
                                  f"B: {', '.join(out_names_b)})")
            common = list(outputs)
        if not common:
            raise AsanetError(f"{art_a.path} and {art_b.path} share no output (A: {', '.join(out_names_a)}; "
                              f"B: {', '.join(out_names_b)})")
        out_a, out_b = art_a.infer(feed, common), art_b.infer(feed, common)
        results = [compare_outputs(n, np.asarray(out_a[n]), np.asarray(out_b[n]), atol, rtol, worst)
                   for n in common]
    finally:
        art_a.close()
        art_b.close()
    passed = all(r.passed is not False for r in results)
    if min_agreement is not None:
        passed = passed and all(r.argmax_agreement is None or r.argmax_agreement >= min_agreement for r in results)
    return Comparison(art_a.path, art_b.path, described, results, passed)


def _is_torch(source: Any) -> bool:
    """A checkpoint path or an in-memory network (imports torch only for the latter check)."""
    if isinstance(source, (str, os.PathLike)):
        return is_checkpoint(source)
    from .network import ASANetSegmentor

    return isinstance(source, ASANetSegmentor)


def compare_from_args(args) -> int:
    """The ``compare`` subcommand: print the comparison; exit 1 when a requested check fails."""
    outputs = [o.strip() for o in args.outputs.split(",") if o.strip()] if args.outputs else None
    result = compare_artifacts(args.a, args.b, inputs=args.inputs, tile=args.tile, batch=args.batch,
                               seed=args.seed, outputs=outputs, atol=args.atol, rtol=args.rtol,
                               min_agreement=args.min_agreement, dataset=args.dataset, worst=args.worst)
    print(json.dumps(result.to_dict(), indent=2) if args.json else result.format())
    return 0 if result.passed else 1
