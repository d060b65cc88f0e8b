"""The cyclic garbage collector around bulk reads (paused) and recordings (relaxed).

Reading a window or exporting a run builds hundreds of thousands of row tuples that hold only
numbers and strings: they can never form a reference cycle, yet every 700 of them trigger a
collection, and now and then a full one walks every object the process has (QCoDeS and numpy
bring ~75 000). Measured on a 5 000-row action window: the median query took ~10 % longer with
the collector on and the mean twice as long. So bulk reads pause it; reference counting still
frees everything as usual, and the collector resumes (if it was on) when the read is done.

A recording is not paused but relaxed (:func:`gc_recording`). A young collection runs each time
700 more container objects are alive than at the last one, and every sample is one (plus its
values until their first collection) from its read to its commit: flat out, thousands are in
flight, so the collector ran ~120 times a second, promoted every sample it found to the old
generations and ran a full collection (~55 ms over the whole heap) about once a second — 10-11 %
of the run's wall time (docs/performance.md). With the young threshold at
:data:`RECORDING_YOUNG_THRESHOLD` the samples are committed and freed before one is due: the
collector's share fell to 1-3 %. Cycles are still collected, only in larger young batches.
"""

from __future__ import annotations

import contextlib
import gc
import threading
from collections.abc import Iterator

__all__ = ["RECORDING_YOUNG_THRESHOLD", "gc_paused", "gc_recording"]

#: Net new container objects between two young collections while a run records (Python's
#: default is 700). Above the samples a run holds in flight at its default commit sizes, below
#: anything that would make one young collection long (each walks only the live young objects).
RECORDING_YOUNG_THRESHOLD = 20_000

_lock = threading.Lock()
_recordings = 0
_saved: tuple[int, int, int] | None = None


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


@contextlib.contextmanager
def gc_recording() -> Iterator[None]:
    """Raise the young-generation threshold while at least one run records in this process;
    the thresholds found before the first are put back when the last one ends."""
    global _recordings, _saved
    with _lock:
        if _recordings == 0:
            _saved = gc.get_threshold()
            young, *older = _saved
            if young:  # 0 turns automatic collection off: the application's choice stands
                gc.set_threshold(max(young, RECORDING_YOUNG_THRESHOLD), *older)
        _recordings += 1
    try:
        yield
    finally:
        with _lock:
            _recordings -= 1
            if _recordings == 0 and _saved is not None:
                gc.set_threshold(*_saved)
                _saved = None
