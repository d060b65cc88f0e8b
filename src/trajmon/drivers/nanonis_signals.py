"""The controller's signal list as the Nanonis driver last fetched it, and what changed in it.

Signals are read by index (``Signals.ValsGet``) after being looked up by name in
``Signals.NamesGet``. The operator can change that list during a run (rename an input in the
Signals Manager, for instance), and an index kept from before then reads another signal, or
nothing the name means any more, under the old label: silently wrong data. The driver fetches
the list again now and then (:class:`~trajmon.drivers.nanonis.NanonisSTM` ``signal_check_s``)
and hands it to :meth:`SignalMap.adopt`, which keeps a note for each signal already read whose
index moved; the next read of that signal reports the note once, as :class:`SignalListChanged`.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, TypeVar

from trajmon.drivers.nanonis_params import SIGNALS_GET
from trajmon.drivers.nanonis_protocol import ProtocolError

__all__ = ["SignalListChanged", "SignalMap", "check_count", "unlisted", "unlisted_signals"]

K = TypeVar("K")


class SignalListChanged(Exception):
    """The controller's signal list changed under a signal being read: its index moved or it
    left the list. Reported once per signal, by its first read after the change was seen: that
    read's value is not kept, so the record shows where the run's meaning of the label was in
    doubt. Later reads follow the name to its new index (or fail: not in the list)."""


class SignalMap:
    """Names to indexes of the last fetched list, with notes of moved signals still to report."""

    def __init__(self) -> None:
        self.names: tuple[str, ...] = ()
        self.index: dict[str, int] = {}
        self.checked_at = 0.0  # when the list was last fetched, on the driver's clock
        self.read: set[str] = set()  # signals read so far: only their moves are told
        self._notes: dict[str, str] = {}

    def adopt(self, names: tuple[str, ...], now: float) -> bool:
        """Take ``names`` as the list fetched at ``now``; return whether it changed (the
        driver's read plans hold indexes of the old one). A signal already read whose index
        moved, or that is no longer listed, gets a note for its next read."""
        since, self.checked_at = now - self.checked_at, now
        if names == self.names:
            return False
        # A name listed twice is the first one, as a search of the list finds it.
        index = {n: i for i, n in reversed(list(enumerate(names)))}
        for name in sorted(self.read):
            old, new = self.index.get(name), index.get(name)
            if old is not None and old != new:
                now_at = "is no longer listed" if new is None else f"is now at index {new}"
                self._notes[name] = (
                    f"the controller's signal list changed: {name!r} was at index {old} and "
                    f"{now_at}; values read in the {since:.3g} s before this check may be "
                    "another signal's"
                )
        self.names, self.index = names, index
        return True

    def take(self, names: Iterable[str]) -> dict[str, str]:
        """The notes for ``names`` still to report, each handed out once."""
        return {n: note for n in names if (note := self._notes.pop(n, None)) is not None}


def unlisted_signals(signals: Mapping[K, str | None], names: Sequence[str]) -> dict[K, str]:
    """Why each entry of ``signals`` (key: its signal name, or None for no signal) that the
    list ``names`` lacks cannot be read; listed entries and those without a signal are left out.

    Said before a run's first read: a controller whose Signals Manager names a signal otherwise
    (another station's layout, a relayout) gives nothing but failed reads of its channel for
    the whole run, and the operator must learn it at the start, with the names to look for."""
    out: dict[K, str] = {}
    for key, signal in signals.items():
        if signal is not None and (why := unlisted(signal, names)) is not None:
            out[key] = why
    return out


def unlisted(signal: str, names: Sequence[str]) -> str | None:
    """Why ``signal`` cannot be read with the list ``names`` (with the closest names listed,
    as a renamed input is most often a near spelling), or None when it is listed."""
    if signal in names:
        return None
    close = difflib.get_close_matches(signal, names, n=3, cutoff=0.5)
    hint = (
        f"closest listed: {', '.join(repr(n) for n in close)}"
        if close
        else f"none of its {len(names)} signals has a similar name"
    )
    return f"signal {signal!r} is not in the controller's list ({hint})"


def check_count(values: list[Any], expected: int) -> list[float]:
    """The values of a ``Signals.ValsGet`` reply, which must be one per index asked for."""
    if len(values) != expected:
        raise ProtocolError(f"{SIGNALS_GET} returned {len(values)} values for {expected}")
    return [float(v) for v in values]
