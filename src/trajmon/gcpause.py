"""Keeping the cyclic garbage collector's pauses short: paused around bulk reads, and the
start-up heap frozen while a run records.

Reading a window or exporting a run builds hundreds of thousands of row tuples that hold only
numbers and strings: they can never form a reference cycle, yet every 700 of them trigger a
collection, and now and then a full one walks every object the process has (QCoDeS and numpy
bring ~75 000). Measured on a 5 000-row action window: the median query took ~10 % longer with
the collector on and the mean twice as long. So bulk reads pause it; reference counting still
frees everything as usual, and the collector resumes (if it was on) when the read is done.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator

__all__ = ["gc_frozen", "gc_paused"]

_frozen_depth = 0


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
def gc_frozen() -> Iterator[None]:
    """Leave the objects that exist now out of every collection until the block ends.

    A recording process carries a large start-up heap (QCoDeS, numpy, drivers: ~75 000 objects)
    that never becomes garbage. A full collection walks all of it while holding the GIL — about
    40 ms on a small VM — and every thread stops for that long: 40 missed ticks at 1 kHz, each
    time one runs. Frozen (``gc.freeze``), it is skipped, and a full collection walks only what
    the run itself has made. One collection first, so that no garbage is frozen; the block is
    entered before the run's first tick is due, so that pause delays no tick. Unfrozen at the
    end, so a process that records again later (a notebook) can still collect those objects.
    Nested or concurrent blocks unfreeze when the last one ends.
    """
    global _frozen_depth
    if _frozen_depth == 0:
        gc.collect()
        gc.freeze()
    _frozen_depth += 1
    try:
        yield
    finally:
        _frozen_depth -= 1
        if _frozen_depth == 0:
            gc.unfreeze()
