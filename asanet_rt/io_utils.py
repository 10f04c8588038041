"""The atomic-write layer: every output is written under a temporary name beside it and moved into place only
when complete; a failed write leaves nothing behind and says why in one line (no space left, read-only folder).

Temporary names are ``.NAME.HOST-PID.RANDOM.partial`` (and ``...partial.SUFFIX`` for scratch files), so a later
run can tell the leftovers of a killed run (owner gone) from the files of a run still going.
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import os
import re
import signal
import socket
import tempfile
import threading
from pathlib import Path
from typing import Iterable, Iterator, Sequence

from .errors import AsanetError, OutputError

log = logging.getLogger(__name__)

#: Free bytes below which a failed write is put down to a full disk.
LOW_SPACE = 4 << 20
_REASONS = {
    errno.ENOSPC: "no space left on device",
    errno.EDQUOT: "no space left (disk quota exceeded)",
    errno.EFBIG: "file too large for the file size limit (`ulimit -f`)",
    errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
}
# the same conditions as GDAL words them when it reports a failed write without an errno
_TEXT_REASONS = (("no space left", errno.ENOSPC), ("disk quota", errno.EDQUOT), ("file too large", errno.EFBIG),
                 ("read-only file system", errno.EROFS), ("permission denied", errno.EACCES))
_HINTS = {
    errno.ENOSPC: "free some space there or choose another output folder",
    errno.EDQUOT: "free some space there or choose another output folder",
    errno.EFBIG: "raise the limit or choose a smaller output",
    errno.EROFS: "choose a writable output folder",
    errno.EACCES: "choose a folder you may write to",
    errno.EPERM: "choose a folder you may write to",
}


_GDAL_PATH = re.compile(r"^(/vsi[a-z0-9_]+/|[a-zA-Z][a-zA-Z0-9+.-]*://)")


def is_gdal_path(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a GDAL virtual path (``/vsizip/``, ``/vsicurl/``, ``/vsis3/`` ...) or a URL."""
    return bool(_GDAL_PATH.match(os.fspath(path)))


def _host() -> str:
    """This host's name, safe inside a file name."""
    return re.sub(r"[^A-Za-z0-9_]", "_", socket.gethostname())[:40] or "host"


def _owner_tag() -> str:
    """``HOST-PID`` of this process, the owner part of its temporary names."""
    return f"{_host()}-{os.getpid()}"


def glob_escape(name: str) -> str:
    """``name`` with glob metacharacters escaped."""
    return re.sub(r"([*?\[])", r"[\1]", name)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # a process of another user: alive
        return True
    return True


def remove_leftovers(path: str | os.PathLike, *, any_owner: bool = False) -> list[Path]:
    """Delete temporary files that killed runs left beside ``path``; returns what was removed.

    A file is a leftover when its owner process (on this host) has ended, or when it predates owner tags;
    ``any_owner`` also removes files of live or remote owners (for a caller that owns ``path`` exclusively).
    """
    path = Path(path)
    folder = path.parent
    host, removed = _host(), []
    pattern = re.compile(rf"^\.{re.escape(path.name)}\.(?:(?P<host>[A-Za-z0-9_]+)-(?P<pid>\d+)\.)?[^/]*\.partial")
    for leftover in folder.glob(f".{glob_escape(path.name)}.*.partial*"):
        m = pattern.match(leftover.name)
        if m is None:
            continue
        if not any_owner and m.group("pid") is not None:
            if m.group("host") != host or _pid_alive(int(m.group("pid"))):
                continue  # a run still writing, or one on another machine sharing this folder
        with contextlib.suppress(OSError):
            leftover.unlink()
            removed.append(leftover)
    if removed:
        log.info("removed %d temporary file(s) of an interrupted earlier run beside %s", len(removed), path)
    return removed


def check_output_path(path: str | os.PathLike, overwrite: bool) -> Path:
    """The rules every output path follows: not a folder, its folder exists, replaced only with ``overwrite``."""
    path = Path(path)
    folder = path.parent
    if path.is_dir():
        raise AsanetError(f"{path}: is a folder, not a file; give the path of the file to write inside it")
    if not folder.is_dir():
        what = "is not a folder" if folder.exists() else "does not exist"
        raise AsanetError(f"{path}: output folder {folder} {what}")
    if (path.exists() or path.is_symlink()) and not overwrite:
        raise AsanetError(f"{path}: exists; pass --overwrite to replace it")
    return path


def write_failure(exc: BaseException, path: Path, files: Iterable[Path] = ()) -> OutputError | None:
    """The one-line error for a write to ``path`` that failed for lack of space, a size limit or permission.

    None when ``exc`` is something else. Call it before removing the temporary ``files`` (their size and the
    free space left tell a full disk from other GDAL write errors).
    """
    if isinstance(exc, AsanetError) or not isinstance(exc, Exception):
        return None
    code = None
    chain: BaseException | None = exc
    while chain is not None and code is None:
        if isinstance(chain, OSError) and chain.errno in _REASONS:
            code = chain.errno
        chain = chain.__cause__ or chain.__context__
    if code is None:
        if not _is_io_error(exc):
            return None
        code = _code_from_text(str(exc)) or _code_from_state(path, files)
        if code is None:
            return None
    folder = path.parent
    return OutputError(f"{path}: cannot write: {_REASONS[code]} in {folder} ({_HINTS[code]}); nothing was written")


def _is_io_error(exc: BaseException) -> bool:
    """OSError, or an error GDAL raised through rasterio (imported only if rasterio already is)."""
    if isinstance(exc, OSError):
        return True
    import sys

    errors = sys.modules.get("rasterio.errors")
    if errors is not None and isinstance(exc, errors.RasterioError):
        return True
    err = sys.modules.get("rasterio._err")
    return err is not None and isinstance(exc, getattr(err, "CPLE_BaseError", ()))


def _code_from_text(text: str) -> int | None:
    low = text.lower()
    return next((code for words, code in _TEXT_REASONS if words in low), None)


def _code_from_state(path: Path, files: Iterable[Path]) -> int | None:
    """Why a write without an errno failed, judged from the folder: full, read-only, or at the size limit."""
    folder = path.parent
    try:
        st = os.statvfs(folder)
    except OSError:
        return None
    if st.f_flag & os.ST_RDONLY:
        return errno.EROFS
    if st.f_bavail * st.f_frsize < LOW_SPACE:
        return errno.ENOSPC
    try:
        import resource

        limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    except (ImportError, ValueError, OSError):
        return None
    if limit != resource.RLIM_INFINITY:
        sizes = [f.stat().st_size for f in files if f.exists()]
        if sizes and max(sizes) + (1 << 16) >= limit:
            return errno.EFBIG
    return None


class OutputSet:
    """The temporary paths of a group of outputs being written (see ``atomic_outputs``)."""

    def __init__(self, temps: dict[Path, Path]) -> None:
        self._temps = temps
        self._scratch: list[Path] = []

    def __getitem__(self, path: str | os.PathLike) -> Path:
        """The temporary path to write in place of ``path``."""
        return self._temps[Path(path)]

    def scratch(self, path: str | os.PathLike, suffix: str) -> Path:
        """A scratch file beside the temporary file of ``path`` (e.g. a staging raster), removed at the end."""
        tmp = self[path]
        scratch = tmp.with_name(tmp.name + suffix)
        self._scratch.append(scratch)
        return scratch

    def files(self) -> list[Path]:
        return list(self._temps.values()) + self._scratch

    def _remove(self, scratch_only: bool = False) -> None:
        for f in (self._scratch if scratch_only else self.files()):
            for p in (f, f.with_name(f.name + ".aux.xml")):  # GDAL may leave a PAM sidecar beside a scratch raster
                with contextlib.suppress(FileNotFoundError, IsADirectoryError):
                    p.unlink()


def _temp_beside(path: Path) -> Path:
    folder = path.parent
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{_owner_tag()}.", suffix=".partial", dir=folder)
    except OSError as exc:
        failure = write_failure(exc, path)
        if failure is None:
            raise
        raise failure from exc
    os.close(fd)
    # mkstemp creates 0600; outputs get the permissions any new file of this user would get.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    return Path(tmp)


@contextlib.contextmanager
def _signals_deferred() -> Iterator[None]:
    """Hold SIGINT and SIGTERM back during the block (main thread only; elsewhere they do not interrupt)."""
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "pthread_sigmask"):
        yield
        return
    held = {signal.SIGINT, signal.SIGTERM}
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


@contextlib.contextmanager
def atomic_outputs(paths: Sequence[str | os.PathLike | None], *, overwrite: bool = False) -> Iterator[OutputSet]:
    """Temporary paths for a group of outputs, moved into place together when the block completes.

    The first path is moved last, so once it is visible the others are too. On any error (Ctrl-C and SIGTERM
    included) every temporary and scratch file is removed and existing outputs are left untouched; a write that
    failed for lack of space or permission becomes one ``OutputError`` naming the path.
    """
    chosen = [Path(p) for p in paths if p is not None]
    for path in chosen:
        check_output_path(path, overwrite)
    for path in chosen:
        remove_leftovers(path)
    temps: dict[Path, Path] = {}
    out = OutputSet(temps)
    try:
        for path in chosen:
            temps[path] = _temp_beside(path)
        yield out
        out._remove(scratch_only=True)
        with _signals_deferred():  # all renamed or none: Ctrl-C / SIGTERM take effect after the last rename
            for path in reversed(chosen):
                os.replace(temps[path], path)
                del temps[path]
    except BaseException as exc:
        failure = write_failure(exc, chosen[0], out.files()) if chosen else None
        out._remove()
        for path in chosen:  # a temporary file created just before an interrupt, not yet in ``temps``
            folder = path.parent
            for own in folder.glob(f".{glob_escape(path.name)}.{glob_escape(_owner_tag())}.*.partial*"):
                with contextlib.suppress(OSError):
                    own.unlink()
        if failure is not None:
            raise failure from exc
        raise


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike, *, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; move it into place only if the block completes.

    On any error the temporary file is removed and an existing ``path`` is left untouched.
    """
    with atomic_outputs([path], overwrite=overwrite) as out:
        yield out[path]


def cache_dir(*parts: str) -> Path:
    """asanet-rt's cache folder (``$ASANET_RT_CACHE``, else ``~/.cache/asanet_rt``), or a subfolder of it."""
    return Path(os.environ.get("ASANET_RT_CACHE") or Path.home() / ".cache" / "asanet_rt", *parts)


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()
