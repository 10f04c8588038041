"""Process-wide setup of the command line: SIGTERM handled like Ctrl-C, so that a killed command (a scheduler,
``timeout``, ``kill``) removes its temporary files as an interrupted one does; GDAL's messages at debug level, so
that a failure prints our one-line error alone."""
from __future__ import annotations

import contextlib
import ctypes
import logging
import signal
import threading
from typing import Any, Iterator


class Terminated(KeyboardInterrupt):
    """Raised in the main thread when the process receives SIGTERM."""

    def __init__(self, signum: int = signal.SIGTERM) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _raise(signum: int, frame: Any) -> None:
    raise Terminated(signum)


@contextlib.contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """While the block runs, SIGTERM raises ``Terminated`` (a KeyboardInterrupt) in the main thread."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


class _GdalToDebug(logging.Filter):
    """Messages GDAL passes through rasterio's loggers, demoted to debug: our own error says what went wrong."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name.startswith("rasterio") and record.levelno > logging.DEBUG:
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)
        return True


def route_gdal_messages(verbose: bool = False) -> None:
    """Demote GDAL's messages to debug on every handler of the root logger (shown with ``--verbose``)."""
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, _GdalToDebug) for f in handler.filters):
            handler.addFilter(_GdalToDebug())
    if not verbose:
        _quiet_libtiff()


def _quiet_libtiff() -> None:
    """Stop libtiff printing write errors (``_tiffWriteProc: No space left on device.``) straight to stderr.

    GDAL reports the same failure through its own error, which reaches us as an exception; libtiff's default
    handler would add a raw line before our message. Best effort: nothing happens where libtiff is not found.
    """
    try:
        import rasterio  # noqa: F401 - loads GDAL and its libtiff

        with open("/proc/self/maps", encoding="utf-8") as maps:
            paths = {line.split()[-1] for line in maps if "/libtiff" in line and ".so" in line}
        for path in paths:
            lib = ctypes.CDLL(path)
            lib.TIFFSetErrorHandler.restype = ctypes.c_void_p
            lib.TIFFSetErrorHandler.argtypes = [ctypes.c_void_p]
            lib.TIFFSetErrorHandler(None)
    except (OSError, AttributeError, ImportError):
        pass
