"""A dependency-free progress bar on stderr: tiles done, tiles/s and ETA."""
from __future__ import annotations

import sys
import threading
import time
from typing import TextIO


def format_seconds(seconds: float) -> str:
    """``75.2`` -> ``1:15``; ``3725`` -> ``1:02:05``."""
    seconds = int(round(max(seconds, 0)))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class Progress:
    """Counts finished tiles; redraws at most every ``interval`` seconds. Thread-safe; a no-op when disabled."""

    def __init__(self, total: int, enabled: bool = True, label: str = "tiles", stream: TextIO | None = None,
                 interval: float = 0.2, width: int = 28) -> None:
        self.total = max(int(total), 1)
        self.enabled = enabled
        self.label = label
        self.stream = stream if stream is not None else sys.stderr
        self.interval = interval
        self.width = width
        self.done = 0
        self.start = time.perf_counter()
        self._last = 0.0
        self._drawn = -1  # ``done`` when last drawn
        self._lock = threading.Lock()

    def update(self, n: int = 1) -> None:
        if n <= 0:
            return
        with self._lock:
            self.done += n
            now = time.perf_counter()
            if self.enabled and (now - self._last >= self.interval or self.done >= self.total):
                self._last = now
                self._draw(now)

    def _draw(self, now: float) -> None:
        self._drawn = self.done
        elapsed = now - self.start
        rate = self.done / elapsed if elapsed > 0 else 0.0
        eta = (self.total - self.done) / rate if rate > 0 else 0.0
        filled = int(self.width * min(self.done, self.total) / self.total)
        bar = "#" * filled + "." * (self.width - filled)
        self.stream.write(f"\r[{bar}] {self.done}/{self.total} {self.label}  {rate:.1f} {self.label}/s  "
                          f"ETA {format_seconds(eta)} ")
        self.stream.flush()

    def close(self) -> None:
        """End the bar's line."""
        if self.enabled:
            with self._lock:
                if self._drawn != self.done:
                    self._draw(time.perf_counter())
                self.stream.write("\n")
                self.stream.flush()
