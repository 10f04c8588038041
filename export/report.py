"""The accuracy report written next to every export: ``model.onnx`` -> ``model.report.json`` + ``model.report.md``.

Per export: logit error and argmax agreement against the FP32 reference (the torch network for an FP32 file, the
FP32 ONNX of the same export for FP16 and INT8), segmentation scores (mIoU, per-class IoU) when labelled tiles
are given, and what the precision pass decided (layers kept in float and why, FP32 groups of an FP16 file,
calibration method and tiles).
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from asanet_rt.io_utils import atomic_output
from asanet_rt.metrics import ConfusionMatrix

from .calibration import Tile


def logit_stats(reference: Sequence[np.ndarray], candidate: Sequence[np.ndarray]) -> dict[str, float]:
    """Max / mean |logit error| and argmax agreement over matching lists of (N, K, H, W) arrays."""
    abs_err = [np.abs(c.astype(np.float64) - r.astype(np.float64)) for r, c in zip(reference, candidate)]
    pixels = sum(r.shape[0] * r.shape[2] * r.shape[3] for r in reference)
    agree = sum(int((r.argmax(1) == c.argmax(1)).sum()) for r, c in zip(reference, candidate))
    return {"max_abs_logit_error": float(max(e.max() for e in abs_err)),
            "mean_abs_logit_error": float(sum(e.sum() for e in abs_err) / sum(e.size for e in abs_err)),
            "argmax_agreement": agree / pixels, "pixels": int(pixels)}


def segmentation_scores(logits: Sequence[np.ndarray], tiles: Sequence[Tile], classes: Sequence[str]) -> dict:
    """mIoU and per-class IoU (mmseg semantics) of the argmax against the tiles' labels."""
    matrix = ConfusionMatrix(len(classes))
    for out, tile in zip(logits, tiles):
        matrix.update(out.argmax(1), tile.label)
    scores = matrix.result(classes).to_dict()
    scores.pop("confusion_matrix", None)
    return scores


def run_logits(run: Callable[[Tile], np.ndarray], tiles: Sequence[Tile]) -> list[np.ndarray]:
    return [np.asarray(run(t), dtype=np.float32) for t in tiles]


def build_report(*, model_path: str | os.PathLike, precision: str, export: dict, reference_name: str,
                 reference: Sequence[np.ndarray], candidate: Sequence[np.ndarray], tiles: Sequence[Tile],
                 tiles_source: str, classes: Sequence[str], details: dict | None = None,
                 held_out: bool = True) -> dict[str, Any]:
    """The report as a JSON-able dict; ``held_out``: the evaluation tiles were not used to fit the model (the
    headline figure), else they are labelled in-sample."""
    labelled = bool(tiles) and all(t.label is not None for t in tiles)
    report: dict[str, Any] = {
        "model": Path(model_path).name,
        "precision": precision,
        "export": {k: export.get(k) for k in ("precision", "int8_target", "ops", "input", "outputs", "tile",
                                              "batch", "opset") if k in export},
        "evaluation": {"tiles": len(tiles), "source": tiles_source, "held_out": bool(held_out),
                       "tile_sizes": sorted({f"{t.optical.shape[2]}x{t.optical.shape[3]}" for t in tiles})},
        "vs_reference": {"reference": reference_name, **_rounded(logit_stats(reference, candidate))},
    }
    if labelled:
        report["segmentation"] = {"reference": segmentation_scores(reference, tiles, classes),
                                  precision: segmentation_scores(candidate, tiles, classes)}
    if details:
        report.update(details)
    return report


def _rounded(stats: dict) -> dict:
    return {k: (round(v, 7) if isinstance(v, float) else v) for k, v in stats.items()}


def report_paths(model_path: str | os.PathLike) -> tuple[Path, Path]:
    path = Path(model_path)
    stem = path.name[: -len(path.suffix)] if path.suffix else path.name
    return path.with_name(f"{stem}.report.json"), path.with_name(f"{stem}.report.md")


def write_report(report: dict, model_path: str | os.PathLike, overwrite: bool = True) -> tuple[Path, Path]:
    """Write ``model.report.json`` and ``model.report.md`` beside the model, atomically."""
    json_path, md_path = report_paths(model_path)
    with atomic_output(json_path, overwrite=overwrite) as tmp:
        tmp.write_text(json.dumps(report, indent=2) + "\n")
    with atomic_output(md_path, overwrite=overwrite) as tmp:
        tmp.write_text(format_markdown(report))
    return json_path, md_path


def format_markdown(report: dict) -> str:
    """A human-readable page for the report."""
    exp = report.get("export", {})
    vs = report["vs_reference"]
    ev = report["evaluation"]
    target = f", int8 target {exp['int8_target']}" if exp.get("int8_target") else ""
    lines = [f"# Accuracy report: {report['model']}", "",
             f"Precision **{report['precision']}**{target}, {exp.get('ops', '?')} ops, input {exp.get('input', '?')}.",
             "", f"Evaluated on {ev['tiles']} {'' if ev.get('held_out', True) else 'in-sample '}tile(s) "
                 f"({', '.join(ev['tile_sizes'])}): {ev['source']}.", ""]
    for warning in report.get("warnings", []):
        lines += [f"**Warning**: {warning}.", ""]
    lines += [f"## Against {vs['reference']}", "", "| metric | value |", "|---|---|",
              f"| max abs logit error | {vs['max_abs_logit_error']:.4g} |",
              f"| mean abs logit error | {vs['mean_abs_logit_error']:.4g} |",
              f"| argmax agreement | {100 * vs['argmax_agreement']:.3f} % of {vs['pixels']} px |", ""]
    ins = report.get("in_sample")
    if ins:
        lines += [f"In-sample, on {ins['tiles']} tile(s) ({ins['source']}; optimistic, not the headline): argmax "
                  f"agreement {100 * ins['argmax_agreement']:.3f} %, mean abs logit error "
                  f"{ins['mean_abs_logit_error']:.4g}.", ""]
    seg = report.get("segmentation")
    if seg:
        names = list(seg)
        lines += ["## Segmentation (labelled tiles)", "", "| class | " + " | ".join(f"IoU {n}" for n in names) + " |",
                  "|---|" + "---|" * len(names)]
        classes = list(seg[names[0]]["per_class"])
        for c in classes:
            cells = [_pct(seg[n]["per_class"][c]["IoU"]) for n in names]
            lines.append(f"| {c} | " + " | ".join(cells) + " |")
        lines.append("| **mIoU** | " + " | ".join(_pct(seg[n]["mIoU"]) for n in names) + " |")
        lines.append("")
    fp16 = report.get("fp16")
    if fp16:
        lines += ["## FP16", "", f"Kept in FP32: {', '.join(fp16['fp32_groups']) or 'nothing'} "
                  f"({fp16['nodes']['float32']} nodes in FP32, {fp16['nodes']['float16']} in FP16).", ""]
        if fp16.get("grn_peak_sum_of_squares") is not None:
            lines += [f"Largest GRN sum of squares on these tiles: {fp16['grn_peak_sum_of_squares']:.4g} (FP16 max "
                      f"65504).", ""]
    int8 = report.get("int8")
    if int8:
        cal = int8["calibration"]
        lines += ["## INT8", "", f"Calibration: {cal['method']} on {cal['tiles']} tile(s); "
                  f"{int8['quantized_nodes']} node(s) quantised, {len(int8['kept_float'])} kept in float "
                  f"(`--keep-fp {int8['keep_fp'] if isinstance(int8['keep_fp'], str) else ','.join(int8['keep_fp'])}`).",
                  "", "| kept in float | why |", "|---|---|"]
        by_reason: dict[str, list[str]] = {}
        for k in int8["kept_float"]:
            by_reason.setdefault(k["reason"], []).append(k["name"])
        for reason, names in by_reason.items():
            shown = ", ".join(f"`{n}`" for n in names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
            lines.append(f"| {shown} | {reason} |")
        lines.append("")
        if int8.get("sensitivity_top"):
            lines += ["Most sensitive layers (quantised alone):", "", "| node | mean abs logit error | agreement |",
                      "|---|---|---|"]
            lines += [f"| `{s['name']}` | {s['mean_abs']:.4g} | {100 * s['agreement']:.2f} % |"
                      for s in int8["sensitivity_top"]]
            lines.append("")
    return "\n".join(lines)


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.2f}"
