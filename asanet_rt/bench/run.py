"""The run: every model in a fresh subprocess (``python -m asanet_rt.bench --worker JOB OUT``) or in this
process, then one report. A subprocess per model makes each peak RSS its own, not what an earlier model left in
the allocator."""
from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Iterable, Sequence, TextIO

from ..errors import AsanetError
from ..io_utils import atomic_output
from .env import environment
from .measure import bench_model
from .report import assemble_report
from .settings import BenchSettings, ModelSpec, expand_models

#: Environment variables that cap the thread pools of OpenMP / BLAS libraries in the worker.
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def run_benchmark(models: Sequence[str | ModelSpec], settings: BenchSettings = BenchSettings(), *,
                  torch_compile: bool = False, openvino: bool = False, quiet: bool = False,
                  stream: TextIO | None = None) -> dict[str, Any]:
    """Benchmark ``models`` (the first is the baseline) and return the report (see ``SCHEMA_VERSION``)."""
    settings = settings.resolved()
    specs = expand_models(models, torch_compile=torch_compile, openvino=openvino, settings=settings)
    stream = stream or sys.stderr
    env = environment(settings)
    records = []
    for spec in specs:
        if settings.isolate:
            if not quiet:
                print(f"[{len(records) + 1}/{len(specs)}] {spec.label} (fresh subprocess)", file=stream, flush=True)
            records.append(run_isolated(spec, settings, quiet))
        else:
            say = (lambda text: None) if quiet else (lambda text: print(text, file=stream, flush=True))
            records.append(bench_model(spec, settings, say))
    if all(r.get("error") for r in records):
        raise AsanetError("every model failed: " + "; ".join(f"{r['label']}: {r['error']}" for r in records))
    return assemble_report(records, settings, env)


def run_isolated(spec: ModelSpec, settings: BenchSettings, quiet: bool) -> dict[str, Any]:
    """``bench_model`` in a fresh interpreter, its thread pools capped through the environment."""
    env = dict(os.environ)
    for var in THREAD_VARS:
        env[var] = str(settings.threads)
    with tempfile.TemporaryDirectory(prefix="asanet_bench_") as tmp:
        job, out = Path(tmp, "job.json"), Path(tmp, "result.json")
        job.write_text(json.dumps({"spec": dataclasses.asdict(spec), "settings": settings.to_dict(),
                                   "quiet": quiet}))
        cmd = [sys.executable, "-m", "asanet_rt.bench", "--worker", str(job), str(out)]
        proc = subprocess.run(cmd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL if quiet else None,
                              stderr=subprocess.PIPE if quiet else None, text=True)
        if out.is_file():
            return json.loads(out.read_text())
        detail = (proc.stderr or "").strip().splitlines()[-5:] if quiet else []
        error = f"worker exited with status {proc.returncode} before writing a result"
        if proc.returncode < 0:
            error += f" (signal {-proc.returncode}; out of memory?)"
        if detail:
            error += ": " + " | ".join(detail)
        return {"label": spec.label, "path": spec.path, "kind": spec.kind, "backend": spec.backend,
                "error": error, "configs": []}


def worker_main(job_path: str, out_path: str) -> int:
    """Entry point of the per-model subprocess: read the job, bench one model, write its record."""
    job = json.loads(Path(job_path).read_text())
    spec = ModelSpec(**job["spec"])
    settings = BenchSettings.from_dict(job["settings"])
    quiet = bool(job.get("quiet"))

    def say(text: str) -> None:
        if not quiet:
            print(text, file=sys.stderr, flush=True)

    record = bench_model(spec, settings, say)
    with atomic_output(out_path) as tmp:
        tmp.write_text(json.dumps(record))
    return 0


def main(argv: Iterable[str] | None = None) -> int:
    """``python -m asanet_rt.bench --worker JOB OUT`` (internal: the per-model subprocess)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) == 3 and args[0] == "--worker":
        return worker_main(args[1], args[2])
    print("usage: asanet-rt bench MODEL [MODEL ...] (this module's own entry point is internal)", file=sys.stderr)
    return 2
