"""The simulator's request log: one JSON line per request, for a test to compare with what the
client recorded.

A log that cannot be written (a full disk, its directory removed during an outage) stops, said
once: the log is a record of the session, the instrument is what clients depend on — failing
every request (each one a dropped connection and a traceback) would take the simulated
instrument away for the sake of its log.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO

__all__ = ["RequestLog"]


class RequestLog:
    """Appends to ``path``; ``error`` is why it stopped, or None while it is written."""

    def __init__(self, path: Path, on_error: Callable[[str], object]) -> None:
        self.path = path
        self.error: str | None = None
        self._on_error = on_error
        self._file: IO[str] | None = None

    def open(self, *, restart: bool) -> None:
        """Open for appending, unless open or stopped. At the first start a log that cannot be
        opened is the caller's error; at a restart after an outage it stops, as when a write
        fails, and the instrument comes back (raising kept it down for good)."""
        if self._file is not None or self.error is not None:
            return
        try:
            self._file = self.path.open("a", encoding="utf-8")
        except OSError as exc:
            if not restart:
                raise
            self._stop(exc)

    def write(self, command: str, status: str) -> None:
        if self._file is None:
            return
        entry = {
            "t_mono": time.monotonic(),
            "t_epoch": time.time(),
            "command": command,
            "status": status,
        }
        try:
            self._file.write(json.dumps(entry) + "\n")
            self._file.flush()
        except OSError as exc:
            self._stop(exc)

    def close(self) -> None:
        log, self._file = self._file, None
        if log is not None:
            log.close()

    def _stop(self, exc: OSError) -> None:
        log, self._file = self._file, None
        if log is not None:
            with contextlib.suppress(OSError):  # its buffer cannot be flushed either
                log.close()
        self.error = exc.strerror or str(exc)
        self._on_error(
            f"request log {self.path}: cannot write ({self.error}); requests are no"
            " longer logged, the simulator keeps serving"
        )
