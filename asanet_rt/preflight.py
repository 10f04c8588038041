"""Checks on output paths made before any work, so that a run that cannot write its outputs fails in a second."""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Sequence

from .errors import AsanetError
from .io_utils import check_output_path, is_gdal_path, write_failure


def check_outputs(paths: Sequence[str | os.PathLike | None], inputs: Sequence[str | os.PathLike] = (), *,
                  overwrite: bool = False) -> list[Path]:
    """Refuse before any work: an output that is a folder, missing folders, existing files without ``overwrite``,
    two outputs on one path, an output naming an input, a folder that cannot be written (full, read-only)."""
    chosen = [Path(p) for p in paths if p is not None]
    resolved = [p.resolve() for p in chosen]
    if len(set(resolved)) != len(resolved):
        raise AsanetError(f"output paths must differ: {', '.join(map(str, chosen))}")
    sources = {Path(p).resolve() for p in inputs if not is_gdal_path(p)}
    for path, res in zip(chosen, resolved):
        if res in sources:
            raise AsanetError(f"{path}: is an input; choose another output path")
        check_output_path(path, overwrite)
    first_in: dict[Path, Path] = {}
    for path in chosen:
        first_in.setdefault(path.parent.resolve(), path)
    for folder, path in first_in.items():
        probe_folder(folder, path)
    return chosen


def probe_folder(folder: Path, path: Path) -> None:
    """Create and remove a small file in ``folder``; a one-line ``OutputError`` naming ``path`` if that fails."""
    try:
        fd, probe = tempfile.mkstemp(prefix=".asanet-write-check.", dir=folder)
    except OSError as exc:
        failure = write_failure(exc, path)
        if failure is None:
            raise AsanetError(f"{path}: cannot write in {folder} ({exc.strerror or exc})") from exc
        raise failure from exc
    os.close(fd)
    with contextlib.suppress(OSError):
        os.unlink(probe)

