"""Checks on ONNX files from untrusted sources, run before any library (ONNX Runtime, OpenVINO, onnx, TensorRT's
parser) opens them: external-data locations must stay inside the model's folder, metadata must be of sane size.

The file is read with a small protobuf wire-format walker (``protowire``), so this needs neither the ``onnx``
package nor protobuf, and it never loads weights. The walker visits every tensor a reader may load external data
for: graph initializers and sparse initializers, tensor and sparse-tensor attributes of nodes (``Constant`` ...),
subgraphs (``If``, ``Loop``, ``Scan``) at any depth, local functions and training graphs.
"""
from __future__ import annotations

import mmap
import os
import posixpath
import stat
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Iterator

from .errors import AsanetError
from .metadata import METADATA_KEY
from .protowire import BYTES, VARINT, WireFormatError, fields

__all__ = ["ModelFileError", "check_onnx_file", "read_metadata_text", "MAX_METADATA_BYTES", "MAX_ONNX_BYTES"]

#: Largest ``asanet_rt.metadata`` value accepted (ours are a few kB); checked before any JSON parsing.
MAX_METADATA_BYTES = 1 << 20
#: Protobuf cannot parse messages of 2 GiB or more; larger weights belong in external data files.
MAX_ONNX_BYTES = (1 << 31) - 1
#: Deepest message nesting walked (model > graph > node > attribute > graph ...: 3 levels per subgraph).
MAX_NESTING = 96
#: ONNX Runtime's tag for weights at a raw memory address (offset = address); OpenVINO honours it from files.
ORT_MEMORY_TAG = "*/_ORT_MEM_ADDR_/*"

_EXTERNAL = 1  # TensorProto.DataLocation.EXTERNAL
# Which length-delimited fields hold a message worth visiting, by message kind and field number (onnx.proto).
_SCHEMA: dict[str, dict[int, str]] = {
    "model": {7: "graph", 20: "training", 25: "function"},            # metadata_props (14) is read separately
    "training": {1: "graph", 2: "graph"},                             # initialization, algorithm
    "function": {7: "node", 11: "attribute"},                         # node, attribute_proto (defaults)
    "graph": {1: "node", 5: "tensor", 15: "sparse"},                  # node, initializer, sparse_initializer
    "node": {5: "attribute"},
    "attribute": {5: "tensor", 6: "graph", 10: "tensor", 11: "graph", 22: "sparse", 23: "sparse"},
    "sparse": {1: "tensor", 2: "tensor"},                             # values, indices
}


class ModelFileError(AsanetError, ValueError):
    """A model file refused before parsing: unsafe external data, oversized metadata, malformed protobuf."""


def check_onnx_file(path: str | os.PathLike) -> None:
    """Refuse ``path`` if its external data leaves its folder or is not a regular file, or its metadata is huge.

    External data must be a relative location inside the model's folder (after following symlinks), name an
    existing regular file, and lie within it (offset + length). Raises ``ModelFileError`` with one line naming
    the file, the tensor and the location.
    """
    path = Path(path)
    try:
        info = path.stat()
    except OSError as exc:
        raise ModelFileError(f"{path}: cannot read the model file ({exc.strerror or exc})") from None
    if not stat.S_ISREG(info.st_mode):
        raise ModelFileError(f"{path}: not a regular file; give the path of an .onnx model file")
    if info.st_size == 0:
        raise ModelFileError(f"{path}: empty file, not an ONNX model")
    if info.st_size > MAX_ONNX_BYTES:
        raise ModelFileError(f"{path}: {info.st_size} bytes, over protobuf's 2 GiB limit for one ONNX file; "
                             f"save the weights as external data next to it")
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
        data = memoryview(mapped)
        try:
            for tensor in _external_tensors(path, data):
                _check_tensor(path, *tensor)
        except WireFormatError as exc:
            raise ModelFileError(f"{path}: not a loadable ONNX model (malformed protobuf: {exc})") from None
        finally:
            data.release()


def read_metadata_text(path: str | os.PathLike) -> str | None:
    """The ``asanet_rt.metadata`` JSON text of an ONNX file, or None: read from the model's top-level fields only
    (the graph and its weights are skipped by length, never parsed), the size limit enforced."""
    path = Path(path)
    try:
        with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
            data = memoryview(mapped)
            try:
                for field, wire, value in fields(data, 0, len(data)):
                    if field == 14 and wire == BYTES:
                        _check_metadata_entry(path, data, *value)
                        key, text = _entry(data, *value)
                        if key == METADATA_KEY:
                            return text
            finally:
                data.release()
    except WireFormatError as exc:
        raise ModelFileError(f"{path}: not a loadable ONNX model (malformed protobuf: {exc})") from None
    except (OSError, ValueError) as exc:  # mmap of an empty file raises ValueError
        raise ModelFileError(f"{path}: cannot read the model file ({exc})") from None
    return None


# -- external data ---------------------------------------------------------------------------------------------
def _check_location(path: Path, tensor: str, location: str | None, offset: str | None, length: str | None) -> None:
    """Refuse one tensor's external-data reference unless it names a regular file inside the model's folder."""
    where = f"{path}: external data of tensor {tensor!r}"
    fix = "keep weight files in the model's folder, named by relative paths"
    if location is None or location == "":
        raise ModelFileError(f"{where} has no location; the file is malformed (re-save it with onnx)")
    if "\x00" in location:
        raise ModelFileError(f"{where} points at {location!r}, which contains a NUL byte; {fix}")
    if location == ORT_MEMORY_TAG:
        raise ModelFileError(f"{where} points at {location!r}, a raw memory address (ONNX Runtime's in-memory tag, "
                             f"which some readers honour even from a file); {fix}")
    if PurePosixPath(location).is_absolute() or PureWindowsPath(location).drive or location.startswith("\\"):
        raise ModelFileError(f"{where} points at {location!r}, an absolute path; {fix}")
    normal = posixpath.normpath(location.replace("\\", "/"))
    if normal == ".." or normal.startswith("../"):
        raise ModelFileError(f"{where} points at {location!r}, which '..' takes outside the model's folder; {fix}")
    folder = os.path.realpath(path.parent)
    target = os.path.realpath(os.path.join(path.parent, location))
    if os.path.commonpath([folder, target]) != folder:
        raise ModelFileError(f"{where} points at {location!r}, which resolves to {target} outside the model's "
                             f"folder {folder} (through a symlink); {fix}")
    try:
        info = os.stat(target)
    except OSError as exc:
        raise ModelFileError(f"{where} points at {location!r}, which cannot be read ({exc.strerror or exc}); "
                             f"copy the weight file next to the model") from None
    if not stat.S_ISREG(info.st_mode):
        raise ModelFileError(f"{where} points at {location!r}, which is not a regular file (a directory, fifo or "
                             f"device); {fix}")
    start, size = _decimal(where, "offset", offset), _decimal(where, "length", length)
    if start + size > info.st_size:
        raise ModelFileError(f"{where} reads bytes {start}..{start + size} of {location!r}, which has only "
                             f"{info.st_size}; the weight file is truncated or belongs to another model")


def _decimal(where: str, key: str, text: str | None) -> int:
    """An external-data ``offset`` / ``length`` value: absent is 0, otherwise a non-negative decimal integer."""
    if text is None:
        return 0
    if not text.isascii() or not text.isdigit() or len(text) > 20:
        raise ModelFileError(f"{where} has {key} {text!r}, not a non-negative integer; the file is malformed")
    return int(text)


def _external_tensors(path: Path, data: memoryview) -> Iterator[tuple[str, bool, list[tuple[str, str]]]]:
    """(name, marked external, external_data entries) of every tensor that names external data."""
    # messages to visit: (kind, start, end, depth); a list, so nesting depth never meets Python's recursion limit
    stack = [("model", 0, len(data), 0)]
    while stack:
        kind, start, end, depth = stack.pop()
        if depth > MAX_NESTING:
            raise WireFormatError(f"messages nested deeper than {MAX_NESTING} levels at byte {start}")
        if kind == "tensor":
            found = _tensor_external_data(data, start, end)
            if found is not None:
                yield found
            continue
        children = _SCHEMA[kind]
        for field, wire, value in fields(data, start, end):
            if wire != BYTES:
                continue  # a wrong wire type is an unknown field to protobuf: no reader uses it
            lo, hi = value
            if kind == "model" and field == 14:
                _check_metadata_entry(path, data, lo, hi)
            elif field in children:
                stack.append((children[field], lo, hi, depth + 1))


def _tensor_external_data(data: memoryview, start: int, end: int) -> tuple[str, bool, list[tuple[str, str]]] | None:
    """(name, marked external, external_data entries) of one TensorProto, or None when it names no external data."""
    name, external, entries = "", False, []
    for field, wire, value in fields(data, start, end):
        if field == 8 and wire == BYTES:
            name = _text(data, value)
        elif field == 14 and wire == VARINT:
            external = value == _EXTERNAL
        elif field == 13 and wire == BYTES:
            entries.append(_entry(data, *value))
    return (name, external, entries) if external or entries else None


def _check_tensor(path: Path, name: str, external: bool, entries: list[tuple[str, str]]) -> None:
    """Refuse one tensor's external-data reference unless it is unambiguous and safe."""
    for key in ("location", "offset", "length"):
        count = sum(k == key for k, _ in entries)
        if count > 1:  # readers differ in whether the first or the last copy wins
            raise ModelFileError(f"{path}: external data of tensor {name!r} names its {key} {count} times; "
                                 f"the file is malformed (re-save it with onnx)")
    info = dict(entries)
    if external or "location" in info:
        _check_location(path, name, info.get("location"), info.get("offset"), info.get("length"))


def _check_metadata_entry(path: Path, data: memoryview, start: int, end: int) -> None:
    """Refuse an oversized ``asanet_rt.metadata`` value before anything parses it as JSON."""
    key_span = value_span = None
    for field, wire, value in fields(data, start, end):
        if wire == BYTES and field == 1:
            key_span = value
        elif wire == BYTES and field == 2:
            value_span = value
    if key_span is None or value_span is None or _text(data, key_span) != METADATA_KEY:
        return
    size = value_span[1] - value_span[0]
    if size > MAX_METADATA_BYTES:
        raise ModelFileError(f"{path}: its {METADATA_KEY} metadata is {size} bytes, over the "
                             f"{MAX_METADATA_BYTES} byte limit; this is not an asanet-rt export (re-export it)")


def _entry(data: memoryview, start: int, end: int) -> tuple[str, str]:
    """A StringStringEntryProto as (key, value)."""
    key = value = ""
    for field, wire, span in fields(data, start, end):
        if wire == BYTES and field == 1:
            key = _text(data, span)
        elif wire == BYTES and field == 2:
            value = _text(data, span)
    return key, value


def _text(data: memoryview, span: tuple[int, int]) -> str:
    # not strict: proto2 readers take non-UTF-8 strings as raw bytes, and so do file names on POSIX
    return bytes(data[span[0]:span[1]]).decode("utf-8", "surrogateescape")
