"""What a :class:`~trajmon.recorder.Recorder` is handed, and from where it is called: checked
at once, so a wrong argument is a one-line ``TypeError`` in the cell that made it, not an
``AttributeError`` deep inside ``run()``."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from .clock import Clock

__all__ = ["check_arguments", "running"]


def check_arguments(instruments: Any, clock: Any) -> None:
    """Refuse instruments that are not a mapping (naming ``station.components`` when a
    station was passed) and a clock that is not a trajmon :class:`Clock`."""
    if not isinstance(instruments, Mapping):
        station = isinstance(getattr(instruments, "components", None), Mapping)
        raise TypeError(
            "instruments must map the names used in the channels' sources to instruments,"
            f" e.g. {{'dmm': dmm}}; got {type(instruments).__name__}"
            + (" (pass station.components)" if station else "")
        )
    if clock is not None and not isinstance(clock, Clock):  # else: an AttributeError in run()
        got = type(clock).__name__
        raise TypeError(f"clock must be a trajmon Clock (e.g. FakeClock()), not {got}")


def running(loop: asyncio.AbstractEventLoop) -> bool:
    """Whether the calling thread is running ``loop`` (inside a task or one of its callbacks)."""
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False
