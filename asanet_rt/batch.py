"""Classify many optical + SAR scene pairs from a manifest: in-process and sequential, or on a Ray cluster.

Every scene is idempotent: its output is written atomically by ``classify_scene`` and then a done-record
``OUTDIR/.done/NAME.json`` (input and model fingerprints, SDK version, options, output sha256, summary) marks it
finished; a re-run skips a scene whose record still matches. Ray is imported only on the Ray path.
"""
from __future__ import annotations

import contextlib
import csv
import json
import os
import socket
import sys
import time
import warnings
from collections import deque
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Callable, Iterable, Sequence, TextIO

from ._version import __version__
from .errors import AsanetError
from .io_utils import atomic_output, is_gdal_path, remove_leftovers, sha256_file
from .output_names import check_output_name
from .sinks import default_outputs

#: Folder (inside OUTDIR) of the done-records.
DONE_DIR = ".done"
#: Appended to the optical file's stem when the manifest names no output.
OUTPUT_SUFFIX = "_landcover.tif"
#: Times a scene is handed to another Ray actor after its actor died under it (a lost node), beyond --retries.
LOST_LIMIT = 5
#: Version of the done-record layout; a change invalidates old records.
RECORD_VERSION = 1
#: ``classify_scene`` options a batch may set (the rest, such as output paths and progress, are per scene).
SCENE_OPTIONS = ("tile", "overlap", "batch", "optical_bands", "sar_band", "optical_scale", "sar_scale",
                 "optical_nodata", "sar_nodata", "sar_resampling", "sidecars", "allow_empty")


@dataclass(frozen=True)
class Job:
    """One scene: its inputs (absolute paths or GDAL URLs, untouched; per-band optical files comma-separated)
    and its output path inside OUTDIR."""

    name: str
    optical: str
    sar: str
    output: str


@dataclass
class SceneResult:
    """What happened to one scene: ``done``, ``skipped`` (a matching done-record) or ``failed``."""

    name: str
    status: str
    output: str
    worker: str = ""
    seconds: float = 0.0
    megapixels: float = 0.0
    attempts: int = 0
    error: str | None = None
    warnings: list[str] = field(default_factory=list)
    node: str = ""  # the Ray node that ran it (empty in-process)


def _stem(path: str) -> str:
    """The file stem of a local path or URL (query strings dropped); for per-band files, their folder's name."""
    parts = _parts(path)
    first = PurePosixPath(parts[0].split("?", 1)[0].rstrip("/"))
    return first.parent.name or first.stem if len(parts) > 1 else first.stem


def _parts(path: str) -> list[str]:
    """A manifest's optical entry as a list: one raster, or per-band files separated by commas."""
    return [p.strip() for p in path.split(",")] if "," in path and not os.path.exists(path) else [path]


def read_manifest(manifest: str | os.PathLike, outdir: str | os.PathLike) -> list[Job]:
    """Parse a CSV (``optical,sar[,output]`` header) or JSON (list of objects) manifest into jobs.

    Local input paths resolve against the manifest's folder; GDAL URLs are kept untouched. ``output`` is a file
    name inside ``outdir`` (default: the optical stem + ``_landcover.tif``); duplicates are an error.
    """
    manifest = Path(manifest)
    if not manifest.is_file():
        raise AsanetError(f"{manifest}: manifest not found")
    text = manifest.read_text(encoding="utf-8-sig")
    if manifest.suffix.lower() == ".json" or text.lstrip().startswith("["):
        rows = _json_rows(manifest, text)
    else:
        rows = _csv_rows(manifest, text)
    if not rows:
        raise AsanetError(f"{manifest}: no scenes listed")
    base = manifest.resolve().parent
    outdir = Path(outdir).resolve()
    jobs: list[Job] = []
    seen: dict[str, int] = {}
    for line, row in rows:
        where = f"{manifest}: {line}"
        if isinstance(row.get("optical"), list):  # JSON: per-band files as a list
            row = dict(row, optical=",".join(map(str, row["optical"])))
        unknown = set(row) - {"optical", "sar", "output"}
        if unknown:
            raise AsanetError(f"{where}: unknown field(s) {', '.join(sorted(unknown))}; expected optical, sar, output")
        optical, sar = (str(row.get(k) or "").strip() for k in ("optical", "sar"))
        if not optical or not sar:
            raise AsanetError(f"{where}: needs both an optical and a sar path")
        name = str(row.get("output") or "").strip() or _stem(optical) + OUTPUT_SUFFIX
        optical_files = [_resolve(part, base) for part in _parts(optical)]
        sar = _resolve(sar, base)
        check_output_name(name, where, outdir, (*optical_files, sar))
        if name in seen:
            raise AsanetError(f"{where}: output name {name!r} is also the output of {manifest}: {seen[name]}; "
                              f"give the scenes distinct output names")
        seen[name] = line
        jobs.append(Job(name, ",".join(optical_files), sar, str(outdir / name)))
    return jobs


def _resolve(path: str, base: Path) -> str:
    if is_gdal_path(path):
        return path
    p = Path(path).expanduser()
    return str(p if p.is_absolute() else base / p)


def _json_rows(manifest: Path, text: str) -> list[tuple[Any, dict[str, Any]]]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise AsanetError(f"{manifest}: not valid JSON ({exc})") from None
    if not isinstance(data, list) or not all(isinstance(item, dict) for item in data):
        raise AsanetError(f"{manifest}: a JSON manifest must be a list of objects with optical, sar[, output]")
    return [(f"entry {i + 1}", item) for i, item in enumerate(data)]


def _csv_rows(manifest: Path, text: str) -> list[tuple[Any, dict[str, Any]]]:
    reader = csv.DictReader(text.splitlines())
    fields = [f.strip() for f in reader.fieldnames or []]
    if "optical" not in fields or "sar" not in fields:
        raise AsanetError(f"{manifest}: the CSV header must name optical,sar[,output] columns (found "
                          f"{','.join(fields) or 'nothing'})")
    rows = []
    for row in reader:
        row = {(k or "").strip(): v for k, v in row.items()}
        if None in row.values() or "" in row and row[""]:
            raise AsanetError(f"{manifest}: line {reader.line_num}: expected {len(fields)} columns")
        row.pop("", None)
        if any((v or "").strip() for v in row.values()):  # blank lines are allowed
            rows.append((f"line {reader.line_num}", row))
    return rows


# -- fingerprints and done-records ---------------------------------------------------------------------------
def input_fingerprint(path: str) -> dict[str, Any] | list[dict[str, Any]]:
    """A local file's sha256 and size (not its path: moved inputs still match); for a URL only the URL."""
    if len(_parts(path)) > 1:
        return [input_fingerprint(p) for p in _parts(path)]
    if is_gdal_path(path):  # hashing it would download it all; GDAL's size/mtime of remote objects is not reliable
        return {"url": path}
    try:
        return {"size": os.path.getsize(path), "sha256": sha256_file(path)}
    except OSError as exc:
        raise AsanetError(f"{path}: cannot read input ({exc.strerror or exc})") from None


def record_path(job: Job) -> Path:
    """Where the done-record of ``job`` lives: ``OUTDIR/.done/NAME.json``."""
    out = Path(job.output)
    return out.parent / DONE_DIR / f"{out.name}.json"


def _record_key(job: Job, model_sha256: str, options: dict[str, Any]) -> dict[str, Any]:
    """Everything that determines the output; a record matches only if all of it is equal."""
    return {"record_version": RECORD_VERSION, "sdk_version": __version__, "model_sha256": model_sha256,
            "optical": input_fingerprint(job.optical), "sar": input_fingerprint(job.sar),
            "options": json.loads(json.dumps(options, sort_keys=True, default=str))}


def _matches(job: Job, key: dict[str, Any]) -> bool:
    path, out = record_path(job), Path(job.output)
    if not (path.is_file() and out.is_file()):
        return False
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    if any(record.get(k) != v for k, v in key.items()):
        return False
    # the output must be the one the record describes (not replaced or truncated since)
    return record.get("output", {}).get("size") == out.stat().st_size and \
        record.get("output", {}).get("sha256") == sha256_file(out)


def _remove_partials(output: Path) -> None:
    """Delete temporary files a killed worker (on any node) left for this output and its sidecars."""
    from .writer import sidecar_paths

    for path in (output, *sidecar_paths(output)):
        remove_leftovers(path, any_owner=True)


# -- the worker ----------------------------------------------------------------------------------------------
class SceneWorker:
    """Holds one opened model and classifies whole scenes; used in-process and as the Ray actor."""

    def __init__(self, worker_id: int, model: str, backend: str = "auto", device: int = 0,
                 runner_options: dict[str, Any] | None = None, model_sha256: str = "",
                 options: dict[str, Any] | None = None, crash_marker: str | None = None) -> None:
        from .classifier import Classifier

        # no pid: a restarted actor keeps its slot's label, so per-worker times add up per slot
        self.label = f"{worker_id}@{socket.gethostname()}"
        self.node = _ray_node()
        self.model_sha256 = model_sha256
        self.options = dict(options or {})
        # test hook: the first task anywhere kills its process (marker file = "already crashed once")
        self.crash_marker = crash_marker
        self.classifier = Classifier.open(model, backend=backend, device=device, **(runner_options or {}))

    def run(self, job: Job) -> SceneResult:
        """Classify ``job`` unless its done-record matches; raises on failure (the caller retries)."""
        t0 = time.perf_counter()
        key = _record_key(job, self.model_sha256, self.options)
        if _matches(job, key):
            return SceneResult(job.name, "skipped", job.output, self.label, time.perf_counter() - t0, node=self.node)
        if self.crash_marker and not os.path.exists(self.crash_marker):
            Path(self.crash_marker).touch()
            os._exit(17)
        output, record = Path(job.output), record_path(job)
        record.parent.mkdir(parents=True, exist_ok=True)
        # stale record first: if we die between the new output and the new record, the scene is redone
        with contextlib.suppress(FileNotFoundError):
            record.unlink()
        _remove_partials(output)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            options = dict(self.options)
            outputs = default_outputs(output, sidecars=options.pop("sidecars", True))
            summary = self.classifier.classify_scene(job.optical, job.sar, outputs=outputs, overwrite=True,
                                                     progress=False, **options)
        messages = list(dict.fromkeys(list(summary.warnings) + [str(w.message) for w in caught]))
        data = asdict(summary)
        data["megapixels_per_second"] = summary.megapixels_per_second
        body = dict(key, name=job.name, inputs={"optical": job.optical, "sar": job.sar},
                    output={"path": str(output), "size": output.stat().st_size, "sha256": sha256_file(output)},
                    worker=self.label, node=self.node, finished=time.strftime("%Y-%m-%dT%H:%M:%S%z"), summary=data)
        with atomic_output(record) as tmp:
            tmp.write_text(json.dumps(body, indent=2, default=str))
        return SceneResult(job.name, "done", job.output, self.label, time.perf_counter() - t0,
                           summary.width * summary.height / 1e6, warnings=messages, node=self.node)

    def close(self) -> None:
        """Release the model."""
        self.classifier.close()


def _ray_node() -> str:
    """The id of the Ray node this process runs on, or ``""`` outside a Ray worker."""
    ray = sys.modules.get("ray")
    if ray is None or not ray.is_initialized():
        return ""
    try:
        return str(ray.get_runtime_context().get_node_id())
    except Exception:  # noqa: BLE001 - best effort: only a label
        return ""


def _error_text(exc: BaseException) -> str:
    """A one-line error: the original exception behind Ray's wrappers, with its type unless it is ours."""
    cause = getattr(exc, "cause", None)
    if isinstance(cause, BaseException):
        exc = cause
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return text if isinstance(exc, AsanetError) else f"{type(exc).__name__}: {text}"


# -- the batch -----------------------------------------------------------------------------------------------
@dataclass
class BatchConfig:
    """How to run a batch: model, backend, classify options, parallelism and reporting."""

    model: str
    backend: str = "auto"
    device: int = 0
    threads: int | None = None
    options: dict[str, Any] = field(default_factory=dict)
    retries: int = 2
    ray: str | None = None  # None: in-process; "local": a new local cluster; else an address to connect to
    workers: int | None = None
    cpus_per_worker: float = 1.0
    progress: bool = True
    allow_host_code: bool = False  # trust a version-compatible engine's embedded code (--allow-engine-host-code)


def is_engine(model: str, backend: str) -> bool:
    """Whether the model needs a GPU (a TensorRT engine or a CUDA/TensorRT ONNX Runtime provider)."""
    from .backends import resolve

    return resolve(model, backend).device == "gpu"


def run_batch(manifest: str | os.PathLike, outdir: str | os.PathLike, config: BatchConfig,
              summary_path: str | os.PathLike | None = None, stream: TextIO | None = None,
              _crash_marker: str | None = None) -> dict[str, Any]:
    """Classify every scene of ``manifest`` into ``outdir``; returns (and writes) the batch summary."""
    outdir = Path(outdir).resolve()
    if outdir.exists() and not outdir.is_dir():
        raise AsanetError(f"{outdir}: exists and is not a folder; -o names the output folder")
    jobs = read_manifest(manifest, outdir)
    model = str(Path(config.model).resolve())
    if not Path(model).is_file():
        raise AsanetError(f"{config.model}: model not found")
    unknown = set(config.options) - set(SCENE_OPTIONS)
    if unknown:
        raise AsanetError(f"batch options {', '.join(sorted(unknown))}: not classify options a batch may set")
    if config.retries < 0:
        raise AsanetError(f"--retries {config.retries}: must be 0 or more")
    model_sha = sha256_file(model)
    outdir.mkdir(parents=True, exist_ok=True)  # only once the manifest and the options are known to be good
    stream = stream if stream is not None else sys.stderr
    total = len(jobs)
    finished: list[SceneResult] = []

    def report(result: SceneResult) -> None:
        finished.append(result)
        if config.progress:
            extra = f"in {result.seconds:.1f} s on worker {result.worker}" if result.status == "done" else \
                (result.error or "") if result.status == "failed" else "(done-record matches)"
            print(f"[{len(finished)}/{total}] {result.name}: {result.status} {extra}", file=stream, flush=True)

    t0 = time.perf_counter()
    if config.ray is None:
        mode, workers = "sequential", 1
        _run_sequential(jobs, model, model_sha, config, report)
    else:
        mode = "ray"
        workers = _run_ray(jobs, model, model_sha, config, report, _crash_marker)
    wall = time.perf_counter() - t0
    summary = _summarise(finished, jobs, wall, mode, workers, model, model_sha, config, outdir)
    path = Path(summary_path) if summary_path is not None else outdir / "batch_summary.json"
    with atomic_output(path) as tmp:
        tmp.write_text(json.dumps(summary, indent=2))
    summary["summary_path"] = str(path)
    return summary


def _runner_options(config: BatchConfig, threads: int | None) -> dict[str, Any]:
    """Runner options: ``threads`` asked for explicitly always go (the registry refuses them where they do not
    apply); a per-worker default only to backends that take threads (engines schedule on the GPU)."""
    from .backends import resolve

    options: dict[str, Any] = {}
    if config.threads or (threads and "threads" in resolve(config.model, config.backend).options):
        options["threads"] = threads
    if config.allow_host_code:
        options["allow_host_code"] = True
    return options


def _run_sequential(jobs: Sequence[Job], model: str, model_sha: str, config: BatchConfig,
                    report: Callable[[SceneResult], None]) -> None:
    """The reference: one Classifier in this process, scenes in manifest order, bounded retries per scene."""
    # no crash hook here: it would kill this very process
    worker = SceneWorker(0, model, config.backend, config.device, _runner_options(config, config.threads), model_sha,
                         config.options)
    try:
        for job in jobs:
            for attempt in range(1, config.retries + 2):
                try:
                    result = worker.run(job)
                    result.attempts = attempt
                    break
                except Exception as exc:  # any failure of one scene is reported; the batch goes on
                    error = _error_text(exc)
            else:
                result = SceneResult(job.name, "failed", job.output, worker.label, attempts=config.retries + 1,
                                     error=error)
            report(result)
    finally:
        worker.close()


def _run_ray(jobs: Sequence[Job], model: str, model_sha: str, config: BatchConfig,
             report: Callable[[SceneResult], None], crash_marker: str | None) -> int:
    """One long-lived actor per worker slot; Ray restarts dead actors and retries their tasks."""
    try:
        import ray
    except ModuleNotFoundError:
        raise AsanetError("--ray needs the Python package 'ray' (pip install 'asanet-rt[ray]')") from None

    gpu = is_engine(model, config.backend)
    started_here = False
    if not ray.is_initialized():
        if config.ray == "local":
            ray.init(num_cpus=int(config.workers * config.cpus_per_worker + 0.999) if config.workers else None,
                     include_dashboard=False, log_to_driver=False)
        else:
            _check_reachable(config.ray)
            try:
                ray.init(address=config.ray, log_to_driver=False)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                raise AsanetError(f"--ray {config.ray}: cannot connect to a Ray cluster ({exc})") from None
        started_here = True
    try:
        resources = ray.cluster_resources()
        if config.workers:
            workers = config.workers
        elif gpu:
            workers = int(resources.get("GPU", 0))
        else:
            workers = int(resources.get("CPU", 1) // config.cpus_per_worker)
        workers = max(1, min(workers, len(jobs)))
        if gpu and resources.get("GPU", 0) < 1:
            raise AsanetError(f"{model}: needs a GPU per worker but the Ray cluster has none")
        # threads per CPU worker = its CPU share, so that workers do not oversubscribe the cores
        threads = config.threads or (None if gpu else max(1, int(config.cpus_per_worker)))
        actor_cls = ray.remote(SceneWorker).options(
            num_cpus=config.cpus_per_worker, num_gpus=1 if gpu else 0, scheduling_strategy="SPREAD",
            # restarts bounded by the total number of attempts the batch may make
            max_restarts=max(1, len(jobs) * (config.retries + 1)), max_task_retries=config.retries)
        actors = [actor_cls.remote(i, model, config.backend, 0 if gpu else config.device,
                                   _runner_options(config, threads), model_sha, config.options, crash_marker)
                  for i in range(workers)]
        # Ray retries application errors too, up to max_task_retries (a corrupt input fails retries + 1 times)
        run = [a.run.options(retry_exceptions=True, max_task_retries=config.retries) for a in actors]
        queue, idle, pending = deque(jobs), deque(range(workers)), {}
        resting: dict[int, float] = {}  # actor slot -> when to use it again (its actor was lost with its node)
        lost: dict[str, int] = {}  # scene -> times its actor was lost under it
        while queue or pending:
            now = time.monotonic()
            for i in [i for i, t in resting.items() if t <= now]:
                idle.append(i)
                del resting[i]
            # at most one scene in flight per actor: back-pressure, and a free actor takes the next scene
            while queue and idle:
                i, job = idle.popleft(), queue.popleft()
                pending[run[i].remote(job)] = (i, job)
            if not pending:
                time.sleep(0.2)  # every slot rests while Ray restarts its actor
                continue
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=0.5 if resting else None)
            for ref in ready:
                i, job = pending.pop(ref)
                try:
                    result = ray.get(ref)
                    result.attempts = result.attempts or 1
                except Exception as exc:  # a scene that failed every retry; the others go on
                    if _actor_lost(exc) and lost.get(job.name, 0) < LOST_LIMIT:
                        # the worker (or its node) died, not the scene: another actor takes it, this slot
                        # rests while Ray notices the dead node and restarts its actor elsewhere
                        lost[job.name] = lost.get(job.name, 0) + 1
                        queue.appendleft(job)
                        resting[i] = time.monotonic() + 2.0 ** lost[job.name]
                        continue
                    result = SceneResult(job.name, "failed", job.output, f"{i}", attempts=config.retries + 1,
                                         error=_error_text(exc))
                idle.append(i)
                report(result)
        for a in actors:
            with contextlib.suppress(Exception):
                ray.get(a.close.remote(), timeout=30)
            ray.kill(a)
        return workers
    finally:
        if started_here:
            ray.shutdown()


def _actor_lost(exc: BaseException) -> bool:
    """Whether a Ray task failed because its actor process or node died (not because of the scene)."""
    import ray.exceptions

    return isinstance(exc, (ray.exceptions.RayActorError, ray.exceptions.ActorUnavailableError))


def _check_reachable(address: str, timeout: float = 5.0) -> None:
    """Fail fast on a HOST:PORT nobody listens at (``ray.init`` would retry for minutes)."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or "://" in address:
        return  # "auto", ray:// client URLs: left to Ray
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as exc:
        raise AsanetError(f"--ray {address}: no Ray head answers there ({exc.strerror or exc}); start one with "
                          f"`ray start --head` or use --ray local") from None


def _summarise(results: Iterable[SceneResult], jobs: Sequence[Job], wall: float, mode: str, workers: int,
               model: str, model_sha: str, config: BatchConfig, outdir: Path) -> dict[str, Any]:
    """The batch summary: counts, failures with errors, throughput and time per worker."""
    results = list(results)
    by = {s: [r for r in results if r.status == s] for s in ("done", "skipped", "failed")}
    per_worker: dict[str, dict[str, float]] = {}
    for r in by["done"]:
        w = per_worker.setdefault(r.worker, {"scenes": 0, "seconds": 0.0, "megapixels": 0.0})
        w["scenes"] += 1
        w["seconds"] = round(w["seconds"] + r.seconds, 3)
        w["megapixels"] = round(w["megapixels"] + r.megapixels, 3)
    mpx = sum(r.megapixels for r in by["done"])
    return {
        "sdk_version": __version__, "mode": mode, "ray": config.ray, "workers": workers, "model": model,
        "model_sha256": model_sha, "outdir": str(outdir), "options": config.options, "retries": config.retries,
        "scenes": len(jobs), "done": len(by["done"]), "skipped": len(by["skipped"]), "failed": len(by["failed"]),
        "failures": [{"name": r.name, "error": r.error, "attempts": r.attempts} for r in by["failed"]],
        "seconds": round(wall, 3),
        "scenes_per_second": round(len(by["done"]) / wall, 4) if wall > 0 else None,
        "megapixels_per_second": round(mpx / wall, 4) if wall > 0 else None,
        "per_worker": per_worker,
        "per_node": {node: sum(1 for r in by["done"] if r.node == node)
                     for node in sorted({r.node for r in by["done"] if r.node})},
        "results": [asdict(r) for r in results],
    }


def format_summary(summary: dict[str, Any]) -> str:
    """A human-readable batch report."""
    lines = [f"{summary['scenes']} scenes ({summary['mode']}, {summary['workers']} worker(s)): {summary['done']} done, "
             f"{summary['skipped']} skipped, {summary['failed']} failed in {summary['seconds']:.1f} s "
             f"({summary['scenes_per_second'] or 0:.3f} scenes/s, {summary['megapixels_per_second'] or 0:.2f} Mpx/s)"]
    for worker, w in sorted(summary["per_worker"].items()):
        lines.append(f"  worker {worker}: {w['scenes']} scenes in {w['seconds']:.1f} s")
    for f in summary["failures"]:
        lines.append(f"  FAILED {f['name']} after {f['attempts']} attempt(s): {f['error']}")
    if "summary_path" in summary:
        lines.append(f"summary: {summary['summary_path']}")
    return "\n".join(lines)
