"""The report: per-model records -> one JSON-ready dict (``SCHEMA_VERSION``), ratios against the first model,
the terminal table, markdown, JSON files and the schema check readers call first."""
from __future__ import annotations

import datetime as _dt
import json
import os
from typing import Any, Mapping, Sequence

from .._version import __version__
from ..errors import AsanetError
from ..io_utils import atomic_output
from .settings import BenchSettings
from .timing import rounded

#: Bumped when a key of the JSON report changes meaning or disappears (new keys do not bump it).
SCHEMA_VERSION = 1


def assemble_report(records: Sequence[Mapping[str, Any]], settings: BenchSettings,
                    env: Mapping[str, Any]) -> dict[str, Any]:
    """Flatten per-model records into the report and add the ratios against the first model."""
    models, results = [], []
    for index, record in enumerate(records):
        model = {k: v for k, v in record.items() if k != "configs"}
        model["index"] = index
        models.append(model)
        for config in record.get("configs", []):
            results.append({"model": record["label"], "model_index": index, **config})
    base = {(r["batch"], r["tile"]): r for r in results if r["model_index"] == 0 and r["status"] == "ok"}
    base_rss = models[0].get("peak_rss_mb") if models else None
    for r in results:
        ref = base.get((r["batch"], r["tile"]))
        r["vs_baseline"] = _ratios(ref, r) if ref is not None and r["status"] == "ok" else None
    for m in models:
        m["peak_rss_ratio"] = _div(m.get("peak_rss_mb"), base_rss)
    return {
        "schema_version": SCHEMA_VERSION,
        "kind": "asanet-rt.bench",
        "sdk_version": __version__,
        "created_utc": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "environment": dict(env),
        "settings": {**settings.to_dict(), "isolation": "subprocess" if settings.isolate else "in-process"},
        "baseline": models[0]["label"] if models else None,
        "models": models,
        "results": results,
    }


def _div(a: float | None, b: float | None) -> float | None:
    return rounded(a / b, 4) if a is not None and b else None


def _p50(measure: Mapping[str, Any] | None) -> float | None:
    return measure["latency_ms"]["p50"] if measure else None


def _ratios(ref: Mapping[str, Any], r: Mapping[str, Any]) -> dict[str, float | None]:
    """Speed-ups (> 1: faster than the baseline) and the memory ratio for one configuration."""
    tput = lambda m: m["throughput"]["tiles_per_s"] if m else None  # noqa: E731
    return {
        "e2e_speedup_p50": _div(_p50(ref.get("e2e")), _p50(r.get("e2e"))),
        "compute_speedup_p50": _div(_p50(ref.get("compute")), _p50(r.get("compute"))),
        "e2e_throughput_ratio": _div(tput(r.get("e2e")), tput(ref.get("e2e"))),
        "peak_rss_ratio": _div(r.get("peak_rss_mb"), ref.get("peak_rss_mb")),
    }


TABLE_HEADERS = ("model", "prec", "batch", "tile", "e2e p50 ms", "p90", "p99", "mean ± std", "tiles/s", "Mpx/s",
                 "compute p50 ms", "× e2e", "× compute", "peak RSS MiB", "dev MiB")


def _fmt(value: float | None, spec: str = ".2f") -> str:
    return "-" if value is None else format(value, spec)


def table_rows(report: Mapping[str, Any]) -> list[tuple[str, ...]]:
    """One row per (model, batch, tile), in run order; the × columns are speed-ups against the baseline."""
    models = {m["index"]: m for m in report["models"]}
    rows = []
    for r in report["results"]:
        m = models[r["model_index"]]
        head = (r["model"], str(m.get("precision") or "-"), str(r["batch"]), str(r["tile"]))
        if r["status"] != "ok":
            rows.append(head + (f"{r['status']}: {r['reason']}",) + ("",) * (len(TABLE_HEADERS) - 5))
            continue
        e2e, comp, ratio = r.get("e2e"), r.get("compute"), r.get("vs_baseline") or {}
        lat = e2e["latency_ms"] if e2e else {}
        rows.append(head + (
            _fmt(lat.get("p50")), _fmt(lat.get("p90")), _fmt(lat.get("p99")),
            f"{lat['mean']:.2f} ± {lat['std']:.2f}" if e2e else "-",
            _fmt(e2e["throughput"]["tiles_per_s"]) if e2e else "-",
            _fmt(e2e["throughput"]["mpx_per_s"], ".3f") if e2e else "-",
            _fmt(_p50(comp)), _fmt(ratio.get("e2e_speedup_p50")), _fmt(ratio.get("compute_speedup_p50")),
            _fmt(r.get("peak_rss_mb"), ".0f"), _fmt(r.get("peak_device_memory_mb"), ".0f")))
    for m in report["models"]:
        if m.get("error"):
            rows.append((m["label"], "-", "-", "-", f"error: {m['error']}") + ("",) * (len(TABLE_HEADERS) - 5))
    return rows


def describe_environment(report: Mapping[str, Any]) -> list[str]:
    """A few lines: machine, threads, versions, settings."""
    env, s = report["environment"], report["settings"]
    cpu = env["cpu"]
    lines = [f"CPU: {cpu.get('model')} ({cpu.get('physical_cores')} physical cores, {cpu.get('logical_cpus')} "
             f"logical, {cpu.get('affinity_cpus', '?')} usable; {' '.join(cpu.get('isa') or []) or 'no ISA flags'})"
             f", {env.get('memory_gb')} GB RAM; threads used: {s['threads']}"]
    for gpu in env.get("gpus") or []:
        lines.append(f"GPU {gpu['index']}: {gpu['name']}, driver {gpu['driver']}, {gpu.get('memory_mb')} MiB")
    if env.get("load_average"):
        lines.append("load average at start: " + ", ".join(f"{v:.2f}" for v in env["load_average"]))
    pk = env.get("packages", {})
    lines.append("software: Python " + env["python"] + ", " + ", ".join(f"{k} {v}" for k, v in pk.items()
                                                                     if k not in ("rasterio", "onnx")))
    lines.append(f"settings: warm-up {s['warmup']}, up to {s['iterations']} iterations or {s['time_budget_s']} s "
                 f"per figure (at least {s['min_iterations']}), mode {s['mode']}, {s['isolation']} per model, "
                 f"seed {s['seed']}")
    lines.append(f"baseline: {report['baseline']}; × = baseline p50 / model p50 (> 1: faster than the baseline)")
    return lines


def format_table(report: Mapping[str, Any]) -> str:
    """The terminal table: environment lines, then aligned columns."""
    rows = table_rows(report)
    widths = [len(h) for h in TABLE_HEADERS]
    for row in rows:
        if len(row) > 4 and row[5:] and not any(row[5:]):  # an error/skip row spans the number columns
            continue
        widths = [max(w, len(c)) for w, c in zip(widths, row)]
    right = set(range(2, len(TABLE_HEADERS)))

    def line(cells: Sequence[str]) -> str:
        if len(cells) > 5 and not any(cells[5:]):
            return "  ".join(c.ljust(w) for c, w in zip(cells[:4], widths)) + "  " + cells[4]
        return "  ".join(c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths)))

    out = describe_environment(report) + ["", line(TABLE_HEADERS), line(tuple("-" * w for w in widths))]
    out += [line(r) for r in rows]
    notes = {r["compute_note"] for r in report["results"] if r.get("compute_note")}
    out += [f"note: {n}" for n in sorted(notes)]
    return "\n".join(out)


def to_markdown(report: Mapping[str, Any]) -> str:
    """The report as markdown: environment, a pipe table, how to read it."""
    lines = ["# asanet-rt bench", "", f"Run {report['created_utc']} with asanet-rt {report['sdk_version']}.", ""]
    lines += [f"- {text}" for text in describe_environment(report)]
    lines += ["", "| " + " | ".join(TABLE_HEADERS) + " |", "|" + "|".join(
        "---" if i < 2 else "---:" for i in range(len(TABLE_HEADERS))) + "|"]
    for row in table_rows(report):
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in row) + " |")
    lines += ["", "e2e: numpy in, numpy out (host copies included), `perf_counter_ns`. compute: device-resident "
              "inputs and pre-allocated outputs; timer per result in the JSON. Ratios come from this one run; "
              "see the README's bench section for how to read them on a busy machine."]
    notes = {r["compute_note"] for r in report["results"] if r.get("compute_note")}
    lines += [f"- {n}" for n in sorted(notes)]
    return "\n".join(lines) + "\n"


def write_json(report: Mapping[str, Any], path: str | os.PathLike) -> None:
    """The report as JSON, written atomically."""
    with atomic_output(path) as tmp:
        tmp.write_text(json.dumps(report, indent=1) + "\n")


def write_markdown(report: Mapping[str, Any], path: str | os.PathLike) -> None:
    with atomic_output(path) as tmp:
        tmp.write_text(to_markdown(report))

def validate_report(report: Mapping[str, Any]) -> None:
    """Check a report's top-level shape and schema version (readers should call this first)."""
    version = report.get("schema_version")
    if not isinstance(version, int) or version > SCHEMA_VERSION:
        raise AsanetError(f"bench report schema_version {version!r}: this asanet-rt reads up to {SCHEMA_VERSION}")
    for key in ("environment", "settings", "baseline", "models", "results"):
        if key not in report:
            raise AsanetError(f"bench report: missing key {key!r}")


