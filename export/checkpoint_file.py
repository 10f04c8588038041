"""Read a checkpoint file from a stranger without running its code.

mmengine checkpoints pickle mmengine and numpy objects, so ``torch.load(weights_only=True)`` refuses them and
``weights_only=False`` runs whatever the file asks for. Here torch still parses the container (zip records,
storages), but every global the pickle names goes through an allow-list: tensor rebuilding, ``OrderedDict``,
numpy arrays and scalars (decoded by us into inert stand-ins), and inert stand-ins for ``mmengine.*`` classes.
Everything else is refused before it can be called.
"""
from __future__ import annotations

import json
import math
import os
import pickle
import re
import struct
import types
import zipfile
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Callable

import numpy as np
import torch

from asanet_rt.errors import AsanetError

DDP_PREFIX = "module."
#: HistoryBuffer's statistics; the official pickle stores them as ``getattr(HistoryBuffer, name)``.
STAND_IN_ATTRIBUTES = frozenset({"min", "max", "mean", "current"})
#: numpy dtypes we decode: bool, integers, floats, complex, fixed-width strings (never objects or records).
_NUMPY_SPEC = re.compile(r"(b1|[iu][1248]|f[248]|c(8|16)|[US]\d{1,6})")
_TRUE = ("1", "y", "yes", "true")


class CheckpointError(AsanetError):
    """A checkpoint file that cannot be read, or that asks for something we refuse to run."""


@dataclass
class CheckpointContents:
    """What a checkpoint file holds: tensors by name, the mmengine ``meta`` (plain Python) and the file kind."""

    state_dict: dict[str, torch.Tensor]
    meta: dict | None
    kind: str
    path: str


class _Refused(pickle.UnpicklingError):
    """The pickle asked for something outside the allow-list."""


# --- inert objects the unpickler hands out ------------------------------------------------------------------

class _Locked:
    """Base for our own pickle-visible objects: BUILD and setattr cannot change them after construction."""

    __slots__ = ()

    def __setattr__(self, name: str, value: Any) -> None:
        raise _Refused(f"refuses to set attribute {name!r} on {type(self).__name__}")

    __delattr__ = __setattr__


class _Guarded(_Locked):
    """An allowed callable; slots and a locked ``__setattr__`` keep BUILD from rewriting it (e.g. its defaults)."""

    __slots__ = ("_fn", "_name")

    def __init__(self, name: str, fn: Callable[..., Any]) -> None:
        object.__setattr__(self, "_name", name)
        object.__setattr__(self, "_fn", fn)

    def __call__(self, *args: Any) -> Any:
        return self._fn(*args)

    def __repr__(self) -> str:
        return f"<allowed {self._name}>"


class _Inert(_Locked):
    """A value that stands for something we will not build (an mmengine method, a numpy marker); not callable."""

    __slots__ = ("label",)

    def __init__(self, label: str) -> None:
        object.__setattr__(self, "label", label)

    def __repr__(self) -> str:
        return f"<inert {self.label}>"


class _StandInMeta(type):
    """Stand-in classes are frozen too: otherwise BUILD on the class could give it a ``__call__``."""

    def __setattr__(cls, name: str, value: Any) -> None:
        raise _Refused(f"refuses to set attribute {name!r} on stand-in {cls.__qualname__}")

    __delattr__ = __setattr__


class _StandIn(metaclass=_StandInMeta):
    """Replaces an ``mmengine.*`` class: takes any arguments and state, keeps nothing, does nothing."""

    __slots__ = ()

    def __new__(cls, *args: Any, **kwargs: Any) -> "_StandIn":
        return object.__new__(cls)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        pass


_NDARRAY = _Inert("numpy.ndarray")


class _NumpyDType:
    """A numpy dtype as pickled: ``dtype(spec, align, copy)`` then BUILD with a state tuple (byte order first)."""

    __slots__ = ("spec", "byteorder")

    def __init__(self, spec: Any, align: Any = False, copy: Any = False) -> None:
        if type(spec) is not str or len(spec) > 16:
            raise _Refused(f"refuses numpy.dtype({spec!r:.40})")
        self.spec = spec
        self.byteorder = "|"

    def __setstate__(self, state: Any) -> None:
        if type(state) is tuple and len(state) > 1 and state[1] in ("<", ">", "|", "="):
            self.byteorder = state[1]

    def to_numpy(self) -> np.dtype | None:
        """The real dtype for plain numeric and string specs, ``None`` for anything else (objects, records)."""
        if not _NUMPY_SPEC.fullmatch(self.spec):
            return None
        dtype = np.dtype(self.spec)
        return dtype.newbyteorder(self.byteorder) if self.byteorder in ("<", ">") else dtype


class _NumpyArray:
    """An ndarray as pickled: ``_reconstruct(ndarray, (0,), b'b')`` then BUILD with (version, shape, dtype, ...)."""

    __slots__ = ("shape", "dtype", "fortran", "data")

    def __init__(self) -> None:
        self.shape: tuple[int, ...] = (0,)
        self.dtype: _NumpyDType | None = None
        self.fortran = False
        self.data: Any = b""

    def __setstate__(self, state: Any) -> None:
        if type(state) is not tuple or len(state) not in (4, 5):
            raise _Refused("refuses a numpy array state that is not a 4- or 5-tuple")
        shape, dtype, fortran, data = state[-4:]
        if (type(shape) is not tuple or not all(type(n) is int and n >= 0 for n in shape)
                or type(dtype) is not _NumpyDType or type(fortran) is not bool):
            raise _Refused("refuses a malformed numpy array state")
        self.shape, self.dtype, self.fortran, self.data = shape, dtype, fortran, data

    def to_list(self) -> list | None:
        """The values as nested lists, or ``None`` when the dtype or the byte count is not a plain array's."""
        dtype = self.dtype.to_numpy() if self.dtype is not None else None
        if dtype is None or type(self.data) is not bytes or len(self.data) != math.prod(self.shape) * dtype.itemsize:
            return None
        array = np.frombuffer(self.data, dtype=dtype).reshape(self.shape, order="F" if self.fortran else "C")
        return array.tolist()


# --- the allowed callables ----------------------------------------------------------------------------------

def _stand_in_getattr(obj: Any, name: Any, *default: Any) -> _Inert:
    # Never a real getattr: only (stand-in class, statistic name) -> an inert value, so no attribute chain starts.
    if default or not (isinstance(obj, _StandInMeta) and type(name) is str and name in STAND_IN_ATTRIBUTES):
        target = obj.__qualname__ if isinstance(obj, _StandInMeta) else type(obj).__name__
        raise _Refused(f"refuses getattr({target}, {name!r:.60})")
    return _Inert(f"{obj.__qualname__}.{name}")


def _codecs_encode(text: Any, encoding: Any = "utf-8", *rest: Any) -> bytes:
    # Protocol-2 pickles store bytes as encode(str, 'latin1'); nothing else is needed.
    if type(text) is not str or encoding not in ("latin1", "latin-1") or rest:
        raise _Refused(f"refuses _codecs.encode with encoding {encoding!r:.40}")
    return text.encode("latin-1")


def _empty_bytes(*args: Any) -> bytes:
    # Protocol-2 pickles write b"" as bytes(); any argument could ask for a huge allocation.
    if args:
        raise _Refused("refuses builtins.bytes with arguments")
    return b""


def _numpy_reconstruct(cls: Any, shape: Any = (0,), typecode: Any = b"b") -> _NumpyArray:
    if cls is not _NDARRAY:
        raise _Refused(f"refuses numpy _reconstruct of {type(cls).__name__}")
    return _NumpyArray()


def _numpy_scalar(dtype: Any, data: Any = b"") -> Any:
    # Decoded to a Python number here; object scalars (data would be any object) stay inert.
    if type(dtype) is not _NumpyDType:
        raise _Refused("refuses numpy scalar without a numpy dtype")
    real = dtype.to_numpy()
    if real is None or type(data) is not bytes or len(data) != real.itemsize:
        return _Inert(f"numpy scalar {dtype.spec}")
    return np.frombuffer(data, dtype=real)[0].item()


def _rebuild_tensor_v2(storage: Any, offset: Any, size: Any, stride: Any, requires_grad: Any = False,
                       backward_hooks: Any = None, metadata: Any = None) -> torch.Tensor:
    # Hooks and tensor metadata would attach pickled objects to the tensor; a plain state dict has neither.
    if not isinstance(storage, torch.storage.TypedStorage):
        raise _Refused("refuses a tensor without a storage record")
    ints = (offset,) + (size if type(size) is tuple else ("?",)) + (stride if type(stride) is tuple else ("?",))
    if (not all(type(n) is int and n >= 0 for n in ints) or len(size) != len(stride)
            or backward_hooks or metadata):
        raise _Refused("refuses a malformed tensor record")
    # set_ silently grows a storage that is too small: check the view fits the bytes the file holds.
    last = offset + sum((n - 1) * s for n, s in zip(size, stride)) if all(size) else offset - 1
    if (last + 1) * torch._utils._element_size(storage.dtype) > storage._untyped_storage.nbytes():
        raise _Refused(f"refuses a tensor of size {size} that runs past its storage")
    return torch._utils._rebuild_tensor(storage, offset, size, stride)


def _rebuild_parameter(data: Any, requires_grad: Any = False, backward_hooks: Any = None) -> torch.Tensor:
    if type(data) is not torch.Tensor or backward_hooks:
        raise _Refused("refuses a malformed parameter record")
    return data


_NUMPY_FUNCTIONS = {"_reconstruct": _numpy_reconstruct, "scalar": _numpy_scalar}
_ALLOWED: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _Guarded("torch._utils._rebuild_tensor_v2", _rebuild_tensor_v2),
    ("torch._utils", "_rebuild_parameter"): _Guarded("torch._utils._rebuild_parameter", _rebuild_parameter),
    ("numpy", "ndarray"): _NDARRAY,
    ("numpy", "dtype"): _Guarded("numpy.dtype", _NumpyDType),
    ("_codecs", "encode"): _Guarded("_codecs.encode", _codecs_encode),
    **{(builtins, "getattr"): _Guarded("getattr", _stand_in_getattr) for builtins in ("__builtin__", "builtins")},
    **{(builtins, "bytes"): _Guarded("bytes", _empty_bytes) for builtins in ("__builtin__", "builtins")},
    # numpy 1.x wrote numpy.core.multiarray, numpy 2.x writes numpy._core.multiarray.
    **{(module, name): _Guarded(f"{module}.{name}", fn) for module in ("numpy.core.multiarray",
       "numpy._core.multiarray") for name, fn in _NUMPY_FUNCTIONS.items()},
}


class _SafeUnpickler(pickle.Unpickler):
    """Resolves globals only from the allow-list; ``mmengine.*`` classes become inert stand-ins."""

    def __init__(self, file: BinaryIO, **kwargs: Any) -> None:
        super().__init__(file, **kwargs)
        self._stand_ins: dict[tuple[str, str], type] = {}

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED:
            return _ALLOWED[(module, name)]
        if module == "mmengine" or module.startswith("mmengine."):
            key = (module, name)
            if key not in self._stand_ins:
                self._stand_ins[key] = _StandInMeta(
                    "StandIn", (_StandIn,), {"__slots__": (), "__module__": module, "__qualname__": name})
            return self._stand_ins[key]
        raise _Refused(f"refuses to load {module}.{name}")


def _pickle_load(file: BinaryIO, **kwargs: Any) -> Any:
    return _SafeUnpickler(file, **kwargs).load()


#: What torch.load needs of a ``pickle_module``.
SAFE_PICKLE_MODULE = types.SimpleNamespace(__name__="asanet_rt.safe_pickle", Unpickler=_SafeUnpickler,
                                           load=_pickle_load)


# --- containers ---------------------------------------------------------------------------------------------

class _NoFileno:
    """A file object without ``fileno``: keeps torch's legacy loader off its tar path (temp-dir extraction)."""

    def __init__(self, raw: BinaryIO) -> None:
        self._raw = raw

    def __getattr__(self, name: str) -> Any:
        if name == "fileno":
            raise AttributeError("fileno")
        return getattr(self._raw, name)


def _env_flag(name: str) -> bool:
    return os.getenv(name, "0").lower() in _TRUE


def _torch_load(file: BinaryIO, zipped: bool) -> Any:
    if _env_flag("TORCH_FORCE_WEIGHTS_ONLY_LOAD"):
        # torch.load refuses any pickle_module under this variable; ours is the restricted load it asks for, so
        # call the loaders torch.load would have called (TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD cannot loosen either path).
        ser = torch.serialization
        if zipped:
            with ser._open_zipfile_reader(file) as reader:
                return ser._load(reader, "cpu", SAFE_PICKLE_MODULE, encoding="utf-8")
        return ser._legacy_load(file, "cpu", SAFE_PICKLE_MODULE, encoding="utf-8")
    return torch.load(file, map_location="cpu", pickle_module=SAFE_PICKLE_MODULE, weights_only=False, mmap=False)


def _check_zip(path: str) -> None:
    try:
        with zipfile.ZipFile(path) as archive:
            records = [name.split("/", 1)[-1] for name in archive.namelist()]
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: truncated or corrupt zip archive ({exc})") from exc
    if "constants.pkl" in records:
        # torch.load would hand a TorchScript archive to torch.jit.load, which runs the archive's code.
        raise CheckpointError(f"{path}: is a TorchScript archive, not a checkpoint; refusing to load it")
    if "data.pkl" not in records:
        raise CheckpointError(f"{path}: zip archive without data.pkl: not a torch.save checkpoint")


def _read_pickled(path: str, zipped: bool) -> Any:
    if zipped:
        _check_zip(path)
    try:
        with open(path, "rb") as raw:
            return _torch_load(raw if zipped else _NoFileno(raw), zipped)  # type: ignore[arg-type]
    except _Refused as exc:
        raise CheckpointError(f"{path}: {exc}: not on the allow-list for checkpoint pickles (a pickled model "
                              f"object or a malicious file); save a state dict or .safetensors instead") from None
    except RecursionError:
        raise CheckpointError(f"{path}: pickle nests too deeply to be a checkpoint") from None
    except Exception as exc:  # noqa: BLE001 - any parse failure of a stranger's file is the file's problem
        message = str(exc).splitlines()[0] if str(exc) else ""
        if "Invalid magic number" in message:
            message = "a pickle, but not one written by torch.save"
        raise CheckpointError(f"{path}: cannot be read as a checkpoint: {type(exc).__name__}: {message}") from exc


def _read_safetensors(path: str) -> tuple[dict[str, torch.Tensor], dict | None]:
    from safetensors import safe_open

    try:
        with safe_open(path, framework="pt", device="cpu") as handle:
            header = handle.metadata()
            tensors = {name: handle.get_tensor(name) for name in handle.keys()}
    except Exception as exc:  # noqa: BLE001 - SafetensorError and friends
        raise CheckpointError(f"{path}: cannot be read as safetensors: {exc}") from exc
    meta: dict | None = dict(header) if header else None
    if meta and isinstance(meta.get("dataset_meta"), str):
        # Converters store meta values as strings; dataset_meta (classes, palette) is only useful decoded.
        try:
            meta["dataset_meta"] = json.loads(meta["dataset_meta"])
        except ValueError:
            pass
    return tensors, meta


def _looks_like_safetensors(head: bytes, size: int) -> bool:
    if len(head) < 9:
        return False
    (header_len,) = struct.unpack("<Q", head[:8])
    return 2 <= header_len <= size - 8 and head[8:9] == b"{"


# --- from unpickled objects to plain values -----------------------------------------------------------------

def _is_mapping(obj: Any) -> bool:
    return type(obj) in (dict, OrderedDict)


def _items(obj: Any) -> list[tuple[Any, Any]]:
    # dict.items, not obj.items: BUILD can shadow methods in an OrderedDict's instance dict.
    return list(dict.items(obj))


def _plain(obj: Any, memo: dict[int, Any] | None = None) -> Any:
    """Convert unpickled meta to plain Python; stand-ins and anything unknown become ``None``."""
    memo = {} if memo is None else memo
    if obj is None or type(obj) in (bool, int, float, complex, str, bytes):
        return obj
    if id(obj) in memo:  # shared objects convert once; a cycle reads as None
        return memo[id(obj)]
    memo[id(obj)] = None
    if type(obj) in (list, tuple):
        value: Any = type(obj)(_plain(item, memo) for item in obj)
    elif _is_mapping(obj):
        value = {_plain(k, memo): _plain(v, memo) for k, v in _items(obj)}
    elif type(obj) is _NumpyArray:
        value = obj.to_list()
    elif type(obj) in (torch.Tensor, torch.nn.Parameter):
        value = obj.detach().tolist()
    else:
        value = None
    memo[id(obj)] = value
    return value


def _tensor_dict(obj: Any) -> bool:
    return _is_mapping(obj) and len(obj) > 0 and all(isinstance(v, torch.Tensor) for _, v in _items(obj))


def _split(obj: Any, path: str) -> tuple[Any, Any, str]:
    """(state dict, meta, kind) from the top-level object of a pickle."""
    if not _is_mapping(obj):
        raise CheckpointError(f"{path}: holds a {type(obj).__name__}, not a checkpoint dict or state dict")
    top = dict(_items(obj))
    if _tensor_dict(top):
        return top, None, "state_dict"
    for key, kind in (("state_dict", "mmengine"), ("model", "state_dict")):
        if _is_mapping(top.get(key)):
            return top[key], top.get("meta"), kind
    keys = ", ".join(repr(k) for k in list(top)[:8] if type(k) is str)
    raise CheckpointError(f"{path}: contains no tensors and no 'state_dict' or 'model' entry (top-level keys: "
                          f"{keys or 'none'})")


def _clean_state_dict(obj: Any, path: str) -> dict[str, torch.Tensor]:
    state: dict[str, torch.Tensor] = {}
    for key, value in _items(obj):
        if type(key) is not str:
            raise CheckpointError(f"{path}: state dict key {key!r:.60} is not a string")
        if type(value) not in (torch.Tensor, torch.nn.Parameter):
            raise CheckpointError(f"{path}: state dict entry {key!r} is a {type(value).__name__}, not a tensor")
        state[key] = value.detach()  # drops any hooks or grad flags pickled with it
    if not state:
        raise CheckpointError(f"{path}: the state dict contains no tensors")
    if all(key.startswith(DDP_PREFIX) for key in state):
        state = {key[len(DDP_PREFIX):]: value for key, value in state.items()}
    return state


def read_checkpoint(path: str | os.PathLike) -> CheckpointContents:
    """Read an mmengine checkpoint, a torch.save state dict or a ``.safetensors`` file without running its code."""
    name = os.fspath(path)
    try:
        size = os.stat(name).st_size
        if Path(name).is_dir():
            raise CheckpointError(f"{name}: is a directory, not a checkpoint file")
        with open(name, "rb") as handle:
            head = handle.read(16)
    except FileNotFoundError:
        raise CheckpointError(f"{name}: checkpoint file does not exist") from None
    except OSError as exc:
        raise CheckpointError(f"{name}: cannot be opened: {exc.strerror or exc}") from None
    if size == 0:
        raise CheckpointError(f"{name}: checkpoint file is empty")

    if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        obj = _read_pickled(name, zipped=True)
    elif _looks_like_safetensors(head, size) or name.endswith(".safetensors"):
        tensors, meta = _read_safetensors(name)
        return CheckpointContents(_clean_state_dict(tensors, name), meta, "safetensors", name)
    elif head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        # Legacy (pre-zip) torch.save output, or a plain pickle: parsed by the same allow-list unpickler.
        obj = _read_pickled(name, zipped=False)
    else:
        raise CheckpointError(f"{name}: not a checkpoint: expected a torch.save file, an mmengine .pth or a "
                              f".safetensors file, but it starts with {head[:8]!r}")
    state_obj, meta_obj, kind = _split(obj, name)
    meta = _plain(meta_obj) if _is_mapping(meta_obj) else None
    return CheckpointContents(_clean_state_dict(state_obj, name), meta, kind, name)
