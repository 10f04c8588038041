"""Output names that come from a file (a ``batch`` manifest): a plain GeoTIFF name inside OUTDIR, nothing else."""
from __future__ import annotations

import os
from pathlib import Path, PureWindowsPath
from typing import Iterable

from .errors import AsanetError

__all__ = ["check_output_name", "MAX_NAME_BYTES", "OUTPUT_SUFFIXES"]

#: Longest output name: the file system's 255-byte limit less what temporary names and sidecars add to it.
MAX_NAME_BYTES = 200
#: A map is a GeoTIFF; any other suffix could collide with a sidecar (``.qml``, ``.aux.xml``) or a record.
OUTPUT_SUFFIXES = (".tif", ".tiff")


def check_output_name(name: str, where: str, outdir: str | os.PathLike | None = None,
                      inputs: Iterable[str] = ()) -> None:
    """Refuse an output ``name`` (from ``where``) that is not a plain GeoTIFF name, or would replace an input.

    Plain: no folder part (``/``, ``\\``, a drive), not hidden (a leading ``.``, as OUTDIR's records and temporary
    files are), no control characters, at most ``MAX_NAME_BYTES`` bytes. ``inputs`` are the scene's local input
    paths; the output ``outdir/name`` must not be one of them (after following symlinks).
    """
    problem = None
    if "/" in name or "\\" in name or PureWindowsPath(name).drive:
        problem = "has a folder part"
    elif not name or name.startswith("."):
        problem = "is empty or starts with '.'"
    elif any(ord(c) < 32 or ord(c) == 127 for c in name):
        problem = "contains control characters"
    elif len(name.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES:
        problem = f"is longer than {MAX_NAME_BYTES} bytes"
    elif not name.lower().endswith(OUTPUT_SUFFIXES):
        problem = "does not end in .tif or .tiff"
    if problem:
        raise AsanetError(f"{where}: output {name!r} {problem}; it must be a plain file name (it is written "
                          f"inside OUTDIR), such as scene_landcover.tif")
    if outdir is None:
        return
    target = os.path.realpath(Path(outdir) / name)
    for source in inputs:
        if os.path.realpath(source) == target:
            raise AsanetError(f"{where}: output {name!r} in OUTDIR is the input {source} itself; choose another "
                              f"output name or OUTDIR")
