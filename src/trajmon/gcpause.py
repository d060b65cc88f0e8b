"""Pausing the cyclic garbage collector around bulk reads.

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

__all__ = ["gc_paused"]


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
