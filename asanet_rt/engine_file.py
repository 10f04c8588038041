"""The asanet-rt engine container: one file holding a serialized TensorRT / TensorRT-RTX engine and its metadata.

Layout (all integers little-endian)::

    0   8 bytes  magic b"ASANETRT"
    8   u32      container version (1)
    12  u32      reserved (0)
    16  u64      header length in bytes (UTF-8 JSON)
    24  u64      engine offset (4096-aligned, so the engine can be mapped straight from the file)
    32  u64      engine length in bytes
    40  ...      JSON header (``EngineInfo.to_dict()``), then zero padding up to the engine offset
    ..  ...      the engine exactly as TensorRT serialised it

Reading the header needs neither TensorRT nor torch, so the runtime can refuse an incompatible engine (wrong
TensorRT version, wrong GPU) with a clear message before TensorRT ever sees it. ``extract_plan`` writes the bare
engine for tools that want one (trtexec, Polygraphy, Triton's ``model.plan``).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from ._version import __version__
from .errors import AsanetError
from .versions import parse_version as _parse_version
from .io_utils import atomic_output
from .metadata import MetadataError, ModelMetadata

MAGIC = b"ASANETRT"
#: Bumped when the layout or a field's meaning changes; readers refuse newer containers.
CONTAINER_VERSION = 1
_PREFIX = struct.Struct("<8sIIQQQ")
_ALIGN = 4096
#: Largest JSON header accepted (ours are a few KiB: metadata, profiles, I/O); anything bigger is refused unread.
MAX_HEADER_BYTES = 1 << 20
#: What ``compute_capability`` says for an engine built where no GPU was visible (TensorRT-RTX on a CPU).
NO_GPU = "n/a (built without a GPU)"
#: TensorRT-RTX's default targets when no compute capability is set on the builder config, as RTX 1.7.1 states
#: when refusing an H200: "Supported compute capabilities: 8.0 8.6 8.9 12.0 12.1 >12.0". Hopper (sm_90) and
#: datacenter Blackwell (sm_100) are not RTX GPUs; Turing (sm_75) needs an engine built for it.
RTX_DEFAULT_CCS = ((8, 0), (8, 6), (8, 9), (12, 0), (12, 1))


def rtx_default_supports(cc: tuple[int, int]) -> bool:
    """Whether TensorRT-RTX's default targets include compute capability ``cc``."""
    return cc in RTX_DEFAULT_CCS or cc > (12, 0)


class EngineFileError(AsanetError):
    """An engine container is missing, truncated, corrupt or from a newer asanet-rt."""


class IncompatibleEngineError(AsanetError):
    """An engine cannot run on this TensorRT version or GPU."""


@dataclass(frozen=True)
class EngineInfo:
    """Everything known about a built engine; stored as the container's JSON header."""

    model: ModelMetadata
    backend: str                       # "tensorrt" or "tensorrt_rtx"
    backend_version: str               # e.g. "10.3.0.30", "1.7.1.116"
    compute_capability: str            # "8.7" for TensorRT; NO_GPU or "n/a (...)" for TensorRT-RTX
    device_name: str = ""
    precision: str = "fp32"            # from the ONNX graph: int8 (any Q/DQ), fp16 (any float16 tensor), fp32
    export_precision: str | None = None
    #: One dict per optimisation profile: input name -> {"min": shape, "opt": shape, "max": shape}.
    profiles: tuple[Mapping[str, Mapping[str, Sequence[int]]], ...] = ()
    inputs: tuple[Mapping[str, Any], ...] = ()     # {"name", "dtype", "shape"} with -1 for dynamic axes
    outputs: tuple[Mapping[str, Any], ...] = ()
    #: hardware ("none", "ampere_plus", "same_compute_capability", "rtx_portable"), version_compatible (bool),
    #: rtx_targets (list of "8.6"-style strings; empty = RTX's default targets).
    compatibility: Mapping[str, Any] = field(default_factory=dict)
    #: mode ("none", "aot", "v3"), used (layer names), library, library_sha256.
    plugins: Mapping[str, Any] = field(default_factory=dict)
    onnx_file: str = ""
    onnx_sha256: str = ""
    build_seconds: float = 0.0
    built_at: str = ""
    builder: Mapping[str, Any] = field(default_factory=dict)   # the options the engine was built with
    engine_bytes: int = 0
    engine_sha256: str = ""
    asanet_rt_version: str = __version__
    container_version: int = CONTAINER_VERSION

    @property
    def batch_range(self) -> tuple[int, int]:
        """(min, max) batch of the first profile."""
        return self._range(0)

    @property
    def tile_range(self) -> tuple[int, int]:
        """(min, max) tile edge (H and W) of the first profile."""
        return self._range(2)

    def _range(self, axis: int) -> tuple[int, int]:
        if not self.profiles:
            return (0, 0)
        shapes = next(iter(self.profiles[0].values()))
        return int(shapes["min"][axis]), int(shapes["max"][axis])

    def to_dict(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        data["model"] = self.model.to_dict()
        data["profiles"] = [{k: {s: list(v) for s, v in shapes.items()} for k, shapes in p.items()}
                            for p in self.profiles]
        data["inputs"], data["outputs"] = [dict(t) for t in self.inputs], [dict(t) for t in self.outputs]
        for key in ("compatibility", "plugins", "builder"):
            data[key] = dict(data[key])
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "engine") -> "EngineInfo":
        """Parse a header written by this SDK; ``source`` names the file in errors."""
        try:
            version = int(data.get("container_version", 0))
            if version > CONTAINER_VERSION:
                raise EngineFileError(
                    f"{source}: engine container version {version} was written by asanet-rt "
                    f"{data.get('asanet_rt_version', '?')}, newer than this asanet-rt {__version__}; upgrade asanet-rt")
            known = {f.name for f in dataclasses.fields(cls)}
            kwargs = {k: v for k, v in data.items() if k in known}
            kwargs["model"] = ModelMetadata.from_dict(data["model"], source)
            kwargs["profiles"] = tuple(data.get("profiles", ()))
            kwargs["inputs"], kwargs["outputs"] = tuple(data.get("inputs", ())), tuple(data.get("outputs", ()))
            return cls(**kwargs)
        except (EngineFileError, MetadataError):
            raise
        except (KeyError, TypeError, ValueError) as exc:
            raise EngineFileError(f"{source}: malformed asanet-rt engine header ({type(exc).__name__}: {exc})") from exc

    def describe_target(self) -> str:
        """'TensorRT 10.3.0 for sm_87 (Orin)': what the engine was built by and for."""
        name = "TensorRT-RTX" if self.backend == "tensorrt_rtx" else "TensorRT"
        version = ".".join(self.backend_version.split(".")[:3])
        if self.backend == "tensorrt_rtx":
            targets = [cc for cc in (_parse_cc(t) for t in self.compatibility.get("rtx_targets") or ()) if cc]
            return f"{name} {version} for " + (", ".join(map(_sm, targets)) if targets else
                                                "its default targets (sm_80, sm_86, sm_89, sm_120 and later)")
        if _parse_cc(self.compute_capability) is None:
            return f"{name} {version} ({self.compute_capability})"
        device = f" ({self.device_name})" if self.device_name else ""
        return f"{name} {version} for sm_{self.compute_capability.replace('.', '')}{device}"


# ------------------------------------------------------------------------------------------------------------
# Writing and reading
# ------------------------------------------------------------------------------------------------------------
def write_engine_file(path: str | os.PathLike, info: EngineInfo, engine: bytes | memoryview, *,
                      overwrite: bool = False) -> EngineInfo:
    """Write the container atomically; returns ``info`` with the engine's size and sha256 filled in."""
    engine = memoryview(engine).cast("B")
    info = dataclasses.replace(info, engine_bytes=engine.nbytes, engine_sha256=hashlib.sha256(engine).hexdigest())
    header = json.dumps(info.to_dict(), sort_keys=True, indent=1).encode("utf-8")
    offset = -(-(_PREFIX.size + len(header)) // _ALIGN) * _ALIGN
    prefix = _PREFIX.pack(MAGIC, CONTAINER_VERSION, 0, len(header), offset, engine.nbytes)
    with atomic_output(path, overwrite=overwrite) as tmp:
        with open(tmp, "wb") as f:
            f.write(prefix)
            f.write(header)
            f.write(b"\0" * (offset - _PREFIX.size - len(header)))
            f.write(engine)
        os.chmod(tmp, _file_mode())  # temp files are created 0600; an engine is usually shared (e.g. /opt/models)
    return info


def _file_mode() -> int:
    """0666 minus the process umask (read without os.umask, which would briefly change it for other threads)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return 0o666 & ~int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return 0o644


def is_engine_file(path: str | os.PathLike) -> bool:
    """True when ``path`` starts with the asanet-rt container magic."""
    try:
        with open(path, "rb") as f:
            return f.read(len(MAGIC)) == MAGIC
    except OSError:
        return False


def _read_prefix(f: Any, path: Path) -> tuple[int, int, int]:
    raw = f.read(_PREFIX.size)
    if raw[:len(MAGIC)] != MAGIC:
        hint = ""
        if raw[:4] in (b"ftrt", b"vtrt") or b"trt" in raw[:8]:
            hint = " (it looks like a bare TensorRT engine: build it with `asanet-rt build` so it carries its metadata)"
        raise EngineFileError(f"{path}: not an asanet-rt engine file{hint}")
    if len(raw) < _PREFIX.size:
        raise EngineFileError(f"{path}: truncated engine file (header cut short)")
    _, version, _, header_len, offset, length = _PREFIX.unpack(raw)
    if version > CONTAINER_VERSION:
        raise EngineFileError(f"{path}: engine container version {version} is newer than this asanet-rt "
                              f"{__version__} reads ({CONTAINER_VERSION}); upgrade asanet-rt")
    if header_len > MAX_HEADER_BYTES:
        raise EngineFileError(f"{path}: engine header declares {header_len} bytes, more than the {MAX_HEADER_BYTES} "
                              f"an asanet-rt header can have; refusing to read it (corrupt or crafted file)")
    size = path.stat().st_size
    expected_offset = -(-(_PREFIX.size + header_len) // _ALIGN) * _ALIGN
    if offset != expected_offset or offset + length > size:
        raise EngineFileError(f"{path}: truncated or corrupt engine file (expects {offset + length} bytes, "
                              f"has {size})")
    if offset + length != size:
        raise EngineFileError(f"{path}: the header declares a {length}-byte engine ending at byte {offset + length}, "
                              f"but the file has {size} bytes (corrupt or crafted file); rebuild it")
    return header_len, offset, length


def read_engine_info(path: str | os.PathLike) -> EngineInfo:
    """The metadata of an engine file, read without TensorRT (only the header is read)."""
    path = Path(path)
    if not path.is_file():
        raise EngineFileError(f"{path}: engine file not found")
    with open(path, "rb") as f:
        header_len, _, _ = _read_prefix(f, path)
        text = f.read(header_len)
    try:
        data = json.loads(text.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise EngineFileError(f"{path}: engine header is not valid JSON ({exc})") from exc
    return EngineInfo.from_dict(data, str(path))


def read_engine(path: str | os.PathLike, *, verify: bool = True) -> tuple[EngineInfo, bytes]:
    """Metadata and the serialized engine; ``verify`` checks the engine's sha256 against the header."""
    path = Path(path)
    info = read_engine_info(path)
    with open(path, "rb") as f:
        _, offset, length = _read_prefix(f, path)
        f.seek(offset)
        engine = f.read(length)
    if len(engine) != length or (info.engine_bytes and length != info.engine_bytes):
        raise EngineFileError(f"{path}: engine is {len(engine)} bytes, the header says {info.engine_bytes}")
    if verify and info.engine_sha256 and hashlib.sha256(engine).hexdigest() != info.engine_sha256:
        raise EngineFileError(f"{path}: engine bytes do not match the header's sha256 (file corrupted?)")
    return info, engine


def extract_plan(path: str | os.PathLike, out: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Write the bare TensorRT engine (for trtexec, Polygraphy, Triton) to ``out``."""
    _, engine = read_engine(path)
    with atomic_output(out, overwrite=overwrite) as tmp:
        Path(tmp).write_bytes(engine)
    return Path(out)


# ------------------------------------------------------------------------------------------------------------
# Compatibility
# ------------------------------------------------------------------------------------------------------------
def _parse_cc(value: Any) -> tuple[int, int] | None:
    """'8.7', 'sm_87', '87', (8, 7) -> (8, 7); anything else (None, 'n/a ...') -> None."""
    if value is None:
        return None
    if isinstance(value, (tuple, list)) and len(value) == 2:
        return int(value[0]), int(value[1])
    text = str(value).strip().lower().removeprefix("sm_").removeprefix("sm")
    if "." in text:
        major, _, minor = text.partition(".")
        if major.isdigit() and minor.isdigit():
            return int(major), int(minor)
        return None
    if text.isdigit() and len(text) >= 2:
        return int(text[:-1]), int(text[-1])
    return None


def _sm(cc: tuple[int, int]) -> str:
    return f"sm_{cc[0]}{cc[1]}"


#: Majors whose version-compatible engines the next major's runtime also runs (NVIDIA's support matrix, TensorRT
#: 11.4: "TensorRT 10 version-compatible engines can run with a TensorRT 11 runtime, and TensorRT 8 [...] with a
#: TensorRT 10 runtime. No other combination across major versions is supported").
_VC_CROSS_MAJOR = {10: 11, 8: 10}


def version_compatible_runs(built: tuple[int, ...], runtime: tuple[int, ...]) -> bool:
    """Whether a version-compatible engine built by TensorRT ``built`` runs on TensorRT ``runtime``: the same
    major from the building release on, or one of the documented cross-major pairs (10 -> 11, 8 -> 10); never
    on an older runtime. Version compatibility exists from 8.6 on."""
    if tuple(built[:2]) < (8, 6) or tuple(runtime[:2]) < (8, 6):
        return False
    if built[0] == runtime[0]:
        return tuple(runtime[:3]) >= tuple(built[:3])
    return _VC_CROSS_MAJOR.get(built[0]) == runtime[0]


def check_compatible(info: EngineInfo, trt_version: str, compute_capability: Any, *, backend: str | None = None,
                     path: str | os.PathLike | None = None) -> None:
    """Raise ``IncompatibleEngineError`` (expected vs present) unless this runtime and GPU can run the engine.

    ``trt_version`` is the runtime module's ``__version__``; ``compute_capability`` is '8.7', 'sm_87', (8, 7), or
    None when unknown (the GPU check is then skipped); ``backend`` is the runtime's family if known.
    """
    where = f"{path}: " if path else ""
    rebuild = (f"rebuild it on the machine that runs it: asanet-rt build {info.onnx_file or 'MODEL.onnx'} -o "
               f"{Path(path).name if path else 'MODEL.engine'} --overwrite")
    name = "TensorRT-RTX" if info.backend == "tensorrt_rtx" else "TensorRT"
    built = info.describe_target()
    present_cc = _parse_cc(compute_capability)
    here_gpu = f" on {_sm(present_cc)}" if present_cc else ""
    if backend is not None and backend != info.backend:
        here_name = "TensorRT-RTX" if backend == "tensorrt_rtx" else "TensorRT"
        raise IncompatibleEngineError(
            f"{where}built by {built}; this runtime is {here_name} {trt_version}: {name} engines run only on "
            f"{name}; open it with backend {info.backend!r} or {rebuild}")
    have, want = _parse_version(trt_version), _parse_version(info.backend_version)
    if not have or not want:
        raise IncompatibleEngineError(f"{where}cannot compare versions {info.backend_version!r} and {trt_version!r}")
    here = f"this is {name} {'.'.join(map(str, have[:3]))}{here_gpu}"
    version_compatible = bool(info.compatibility.get("version_compatible"))
    if version_compatible and info.backend == "tensorrt":
        if not version_compatible_runs(want, have):
            raise IncompatibleEngineError(
                f"{where}built by {built} with version compatibility, which runs on TensorRT "
                f"{want[0]}.x from {'.'.join(map(str, want[:3]))} on"
                f"{f' and on TensorRT {_VC_CROSS_MAJOR[want[0]]}.x' if want[0] in _VC_CROSS_MAJOR else ''}; {here}; "
                f"{rebuild}")
    elif have[:3] != want[:3]:
        raise IncompatibleEngineError(f"{where}built by {built}; {here}. {name} engines run only on the exact "
                                      f"{name} version that built them; {rebuild}")
    if present_cc is None:
        return
    if info.backend == "tensorrt_rtx":
        targets = [cc for cc in (_parse_cc(t) for t in info.compatibility.get("rtx_targets") or ()) if cc]
        if targets and present_cc not in targets:
            raise IncompatibleEngineError(f"{where}built by {built}; {here}; {rebuild}")
        if not targets and not rtx_default_supports(present_cc):
            hint = ("Turing needs an engine built for sm_75" if present_cc == (7, 5) else
                    "TensorRT-RTX does not support this GPU; use full TensorRT")
            raise IncompatibleEngineError(f"{where}built by {built}; {here} ({hint})")
        return
    built_cc = _parse_cc(info.compute_capability)
    if built_cc is None:
        return  # an engine from an unknown GPU: TensorRT itself will judge
    hardware = str(info.compatibility.get("hardware", "none"))
    if hardware == "ampere_plus":
        if present_cc < (8, 0):
            raise IncompatibleEngineError(f"{where}built by {built} with hardware compatibility (Ampere sm_80 "
                                          f"and later); {here}; {rebuild}")
    elif present_cc != built_cc:
        raise IncompatibleEngineError(f"{where}built by {built}; {here}. Engines run only on the GPU "
                                      f"architecture they were built for; {rebuild}")
