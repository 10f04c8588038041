"""``backend="auto"`` for ONNX files on a CPU: the fastest installed CPU backend, by a short timed probe.

Which CPU backend runs a model fastest depends on the CPU (its ISA: AVX-512 VNNI, AMX), the backend versions
and the model file itself (FP32, or which INT8 form). So ``auto`` measures instead of guessing: each installed
CPU backend (ONNX Runtime, OpenVINO) runs the actual model at the actual tile and batch for about ``probe_s``
seconds, in turns, and the one with the lowest median time per call wins. The choice is cached in
``$ASANET_RT_CACHE`` (default ``~/.cache/asanet_rt``) under ``backend_choice.json``, keyed by the model's
sha256, the CPU model, the thread count, the tile and batch and every candidate's version, so a new model
file, CPU or backend release probes again. ``ASANET_RT_BACKEND=onnxruntime`` (any registry name) or an
explicit backend skips the probe.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ..errors import AsanetError
from ..io_utils import cache_dir
from .base import Runner
from .cpu import cpu_model

log = logging.getLogger(__name__)

#: Seconds each candidate is timed for (after one untimed call that compiles or warms it up).
PROBE_S = 1.5
#: Timed calls per candidate at least, even past ``probe_s``.
MIN_CALLS = 2
CACHE_FILE = "backend_choice.json"
CACHE_VERSION = 1
#: Python distribution whose version keys the cache, per backend name.
_DISTRIBUTIONS = {"onnxruntime": ("onnxruntime", "onnxruntime-gpu", "onnxruntime-openvino"),
                  "openvino": ("openvino",)}

Opener = Callable[..., Runner]


@dataclass(frozen=True)
class Choice:
    """The backend ``auto`` picked: its name, each candidate's median ms per call, from cache or not, and why."""

    name: str
    timings_ms: dict[str, float] = field(default_factory=dict)
    cached: bool = False
    reason: str = ""


def backend_version(name: str) -> str:
    """The installed version of the package behind backend ``name`` ('' when unknown)."""
    from importlib import metadata

    for dist in _DISTRIBUTIONS.get(name, (name,)):
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return ""


def file_sha256(path: str | os.PathLike, memo: dict | None = None) -> str:
    """sha256 of the file; ``memo`` (path, size, mtime -> digest) avoids hashing an unchanged file again."""
    stat = Path(path).stat()
    key = f"{Path(path).resolve()}|{stat.st_size}|{stat.st_mtime_ns}"
    if memo is not None and key in memo:
        return memo[key]
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    if memo is not None:
        memo[key] = digest.hexdigest()
    return digest.hexdigest()


def _load_cache(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {"version": CACHE_VERSION, "choices": {}, "sha256": {}}
    if not isinstance(data, dict) or data.get("version") != CACHE_VERSION:
        return {"version": CACHE_VERSION, "choices": {}, "sha256": {}}
    data.setdefault("choices", {})
    data.setdefault("sha256", {})
    return data


def _save_cache(path: Path, data: dict[str, Any]) -> None:
    """Write the cache atomically; a cache that cannot be written is a warning, never an error."""
    from ..io_utils import atomic_output

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_output(path, overwrite=True) as tmp:
            Path(tmp).write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    except OSError as exc:
        log.warning("backend choice not cached (%s: %s)", path, exc)


def _feed(runner: Runner, tile: int, batch: int, seed: int = 0) -> dict[str, np.ndarray]:
    from .feed import model_feed

    rng = np.random.default_rng(seed)
    optical = rng.uniform(0, 255, (batch, 3, tile, tile)).astype(np.float32)
    sar = rng.uniform(0, 255, (batch, 1, tile, tile)).astype(np.float32)
    return {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in model_feed(runner.metadata, optical, sar).items()}


def probe(path: str | os.PathLike, candidates: Sequence[str], tile: int, batch: int, threads: int | None,
          probe_s: float = PROBE_S, opener: Opener | None = None) -> tuple[dict[str, float], dict[str, str]]:
    """Median ms per call of each candidate on random tiles, timed in turns so that load drift hits all alike.

    Returns (timings, errors): a candidate that cannot open or run the model is left out with its error.
    """
    if opener is None:
        from .registry import open_runner as opener
    runners: dict[str, Runner] = {}
    errors: dict[str, str] = {}
    samples: dict[str, list[float]] = {}
    feeds: dict[str, dict[str, np.ndarray]] = {}
    try:
        for name in candidates:
            try:
                runner = opener(path, backend=name, threads=threads)
                feeds[name] = _feed(runner, tile, batch)
                runner.infer(feeds[name])  # first call: compile, allocate
                runners[name] = runner
                samples[name] = []
            except Exception as exc:  # noqa: BLE001 - a broken candidate loses; it must not stop the others
                errors[name] = f"{type(exc).__name__}: {exc}"
                log.debug("auto backend probe: %s failed on %s: %s", name, path, exc)
        deadline = time.perf_counter() + probe_s * len(runners)
        while runners and (time.perf_counter() < deadline or min(map(len, samples.values())) < MIN_CALLS):
            for name, runner in runners.items():
                start = time.perf_counter()
                runner.infer(feeds[name])
                samples[name].append(1000 * (time.perf_counter() - start))
    finally:
        for runner in runners.values():
            runner.close()
    return {name: round(statistics.median(s), 3) for name, s in samples.items() if s}, errors


def pick_backend(path: str | os.PathLike, candidates: Sequence[str] | None = None, tile: int | None = None,
                 batch: int = 1, threads: int | None = None, probe_s: float | None = None,
                 opener: Opener | None = None, use_cache: bool = True) -> Choice:
    """The fastest of ``candidates`` (default: the installed CPU backends for ONNX) on this model and CPU.

    ``tile`` defaults to the model's default tile. Cached per (model sha256, CPU model, threads, tile, batch,
    backend versions); ``use_cache=False`` probes again and overwrites the entry.
    """
    from .registry import available_backends

    probe_s = PROBE_S if probe_s is None else probe_s
    names = list(candidates) if candidates is not None else available_backends("onnx", "cpu")
    if not names:
        raise AsanetError(f"{path}: no CPU backend for ONNX files is installed; pip install onnxruntime")
    if len(names) == 1:
        return Choice(names[0], {}, False, "the only installed CPU backend for ONNX files")
    store = cache_dir() / CACHE_FILE
    data = _load_cache(store) if use_cache else {"version": CACHE_VERSION, "choices": {}, "sha256": {}}
    if tile is None:
        tile = _default_tile(path)
    from .cpu import physical_cores

    key = json.dumps({"model": file_sha256(path, data["sha256"]), "cpu": cpu_model(),
                      "threads": int(threads or physical_cores()),
                      "tile": int(tile), "batch": int(batch),
                      "backends": {n: backend_version(n) for n in sorted(names)}}, sort_keys=True)
    entry = data["choices"].get(key)
    if entry and entry.get("name") in names:
        return Choice(entry["name"], dict(entry.get("timings_ms", {})), True,
                      f"{_ranking(entry['timings_ms'], batch, tile)} (measured {entry.get('when', '?')}, cached)")
    timings, errors = probe(path, names, int(tile), int(batch), threads, probe_s, opener)
    if not timings:
        detail = "; ".join(f"{n}: {e}" for n, e in errors.items())
        raise AsanetError(f"{path}: no CPU backend could run this model ({detail})")
    best = min(timings, key=timings.get)
    when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    reason = f"{_ranking(timings, batch, tile)} (measured now)"
    if errors:
        reason += "; failed: " + ", ".join(sorted(errors))
    else:  # a failure may be passing (memory, a busy machine): only clean probes are remembered
        data["choices"][key] = {"name": best, "timings_ms": timings, "when": when, "model": str(path)}
        _save_cache(store, data)
    log.debug("auto backend for %s: %s", path, reason)
    return Choice(best, timings, False, reason)


def _ranking(timings: dict[str, float], batch: int, tile: int) -> str:
    order = sorted(timings, key=timings.get)
    listed = ", ".join(f"{n} {timings[n]:.1f} ms" for n in order)
    return f"fastest of {listed} per call of {batch} x {tile} px"


def _default_tile(path: str | os.PathLike) -> int:
    """The tile scenes are cut into by default (``tiling.default_tile``), from the model's metadata alone (read
    without parsing the graph: this runs on every ``Classifier.open``)."""
    from ..metadata import ModelMetadata
    from ..model_files import read_metadata_text
    from ..tiling import default_tile

    text = read_metadata_text(path)
    if text is None:
        raise AsanetError(f"{path}: no asanet-rt metadata; export the model with `asanet-rt export`")
    return default_tile(ModelMetadata.from_json(text, source=str(path)).inputs)


def choose_backend(path: str | os.PathLike, backend: str = "auto", tile: int | None = None, batch: int | None = None,
                   threads: int | None = None, device: str | None = None) -> tuple[str, Choice | None]:
    """The backend to open ``path`` on: ``backend`` itself unless it is ``auto`` for an ONNX file on a CPU, then
    ``$ASANET_RT_BACKEND`` when set, else :func:`pick_backend`'s choice. Returns (name, choice or None)."""
    from .registry import BACKEND_ENV, file_kind, resolve

    if str(backend).strip().lower() != "auto" or file_kind(path) != "onnx" or device == "gpu":
        return backend, None
    env = os.environ.get(BACKEND_ENV, "").strip()
    if env:
        name = resolve(path, "auto").name
        return name, Choice(name, {}, False, f"{BACKEND_ENV}={env}")
    choice = pick_backend(path, tile=tile, batch=batch or 1, threads=threads)
    return choice.name, choice


def choice_to_dict(choice: Choice | None) -> dict[str, Any] | None:
    """A JSON-able form of ``choice``."""
    return None if choice is None else asdict(choice)
