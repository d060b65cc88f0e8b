"""Turning spec samples into action events.

An action is inferred, never observed: a successful read of a spec differs from its known value
by more than its tolerance. The known value is the first read, then the new value of each
action; a read within the tolerance leaves it as it was, so a knob turned slowly — each step
inside the tolerance — is an action once it has moved by more than the tolerance in all. A
failed read (``None``) is not a value, so it neither triggers an event nor replaces the known
value — the change is reported against the value before the gap.

Values are compared as they are stored (:func:`~trajmon.channels.canonical_for` of the spec's
value type): a read its column cannot hold is stored as NULL, so it is a gap here too, and a
value that only changed its Python type (``5`` then ``"5"`` in a text column) is no action.
"""

from __future__ import annotations

import ast
import contextlib
import math
import unicodedata
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np

from .channels import Channel, canonical_for, encoder_for, numeric_delta
from .clock import utc_iso
from .records import ActionEvent, Sample, owned_value

__all__ = ["ChangeDetector", "shown_apart", "values_equal"]


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


#: What an untyped column keeps of a value: its text for objects it cannot store as themselves.
_STORED_ANY = encoder_for("any")


def values_equal(
    old: Any, new: Any, tolerance_abs: float | None = None, tolerance_rel: float | None = None
) -> bool:
    """Equality as an operator means it: NaN equals NaN, floats within tolerance, else exact."""
    old, new = _plain(old), _plain(new)
    if isinstance(old, np.ndarray) or isinstance(new, np.ndarray):
        if isinstance(old, tuple) or isinstance(new, tuple):
            # arrays of different shapes (an .npz) never equal one array; numpy cannot even
            # make one array of them, and that ValueError used to end the run
            return False
        try:
            return bool(np.array_equal(np.asarray(old), np.asarray(new), equal_nan=True))
        except TypeError:
            return bool(np.array_equal(np.asarray(old), np.asarray(new)))
    if isinstance(old, tuple) and isinstance(new, tuple):  # a MultiParameter's arrays
        return len(old) == len(new) and all(map(values_equal, old, new))
    if isinstance(old, int) and isinstance(new, int) and _is_plain_number(old, new):
        return old == new or _ints_within(old, new, tolerance_abs, tolerance_rel)
    if isinstance(old, complex) and isinstance(new, complex):  # NaN parts equal, as for floats
        return values_equal(old.real, new.real) and values_equal(old.imag, new.imag)
    if isinstance(old, float) != isinstance(new, float) and _is_plain_number(old, new):
        if tolerance_abs is None and tolerance_rel is None:
            return bool(old == new)  # exact: float() would make 2**53 + 1 equal 2.0**53
        try:
            old, new = float(old), float(new)  # a float spec read once as 0 instead of 0.0
        except OverflowError:  # an int beyond every float equals none of them
            return False
    if isinstance(old, float) and isinstance(new, float):
        if math.isnan(old) or math.isnan(new):
            return math.isnan(old) and math.isnan(new)
        if old == new:
            return True
        if tolerance_abs is None and tolerance_rel is None:
            return False
        return math.isclose(old, new, rel_tol=tolerance_rel or 0.0, abs_tol=tolerance_abs or 0.0)
    if isinstance(old, bool) != isinstance(new, bool):
        return False
    try:
        return bool(old == new)
    except Exception:
        return False


def shown_apart(old: Any, new: Any, show: Callable[[Any], str]) -> tuple[str, str]:
    """An action's old and new values as text: ``show`` of each, unless it writes them alike —
    six digits of 0.1 and its float32 read-back 0.10000000149, ``1`` and ``1.0000001``,
    ``"idle"`` and ``"idle "`` (a table shows no trailing space), an array of 20 printed as
    its ends — for "0.1 → 0.1" tells the operator that nothing changed. Then numbers and text
    are written as Python writes them (every digit; quotes that show spaces), and arrays with
    their shape or the first element that differs."""
    shown = show(old), show(new)
    if _looks(shown[0]) != _looks(shown[1]):
        return shown
    old, new = _plain(old), _plain(new)
    if isinstance(old, np.ndarray) and isinstance(new, np.ndarray):
        if old.shape != new.shape:
            return f"{shown[0]} shape {old.shape}", f"{shown[1]} shape {new.shape}"
        at = _first_difference(old, new)
        if at is None:
            return shown
        if not at:  # 0-d arrays: their one value
            return repr(_plain(old[at])), repr(_plain(new[at]))
        where = f"[{', '.join(map(str, at))}]"
        return (
            f"{shown[0]} {where}={_plain(old[at])!r}",
            f"{shown[1]} {where}={_plain(new[at])!r}",
        )
    if isinstance(old, str | int | float | complex) and isinstance(
        new, str | int | float | complex
    ):
        return repr(old), repr(new)
    return shown


def _looks(text: str) -> str:
    """What a reader sees of ``text`` in a table: no spaces at the ends, one space for any run
    of them (a tab, a no-break space), characters in their compatibility form (NFKC)."""
    return " ".join(unicodedata.normalize("NFKC", text).split())


def _first_difference(old: np.ndarray, new: np.ndarray) -> tuple[int, ...] | None:
    """The index of the first element in which two arrays of one shape differ (NaN equal)."""
    try:
        differs = np.asarray(old != new, dtype=bool)
    except (TypeError, ValueError):
        return None
    if differs.shape != old.shape:
        return None
    with contextlib.suppress(TypeError):  # text has no NaN: its != holds as it is
        differs &= ~(np.isnan(old) & np.isnan(new))
    hits = np.argwhere(differs)
    return tuple(int(i) for i in hits[0]) if len(hits) else None


def _ints_within(old: int, new: int, tol_abs: float | None, tol_rel: float | None) -> bool:
    """``math.isclose`` for ints, exact at any size (floats would round beyond 2**53)."""
    diff = abs(new - old)
    if tol_abs is not None and diff <= tol_abs:
        return True
    # int / int is correctly rounded at any size (old != new, so the divisor is not 0)
    return tol_rel is not None and diff / max(abs(old), abs(new)) <= tol_rel


def _is_plain_number(*values: Any) -> bool:
    return all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)


def _reads_back_as(text: str, value: Any) -> bool:
    """Whether ``value``, read now, is the object whose stored text a resumed run was primed
    with: an untyped column keeps a dict (and, in files recorded before complex numbers had
    their tag, a complex) as its ``str()``, so the known value read back from the file is that
    text, while the detector compares the objects themselves — an unchanged dict used to be an
    action (text -> dict) at the first read after every resume."""
    if isinstance(value, str):
        return False  # text read as text: compared the usual way
    if isinstance(value, complex):
        stored: Any = str(value)  # how an older file kept it
    else:
        try:
            stored = _STORED_ANY(value)
        except (TypeError, ValueError, OverflowError):
            return False
        if type(stored) is not str:
            return False  # kept as itself (a number, an array): the text was another value
    if stored == text:
        return True
    try:  # the same items in another order are equal, as they are within a session
        return values_equal(ast.literal_eval(text), value)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return False


class _SpecState:
    __slots__ = ("canonical", "channel", "channel_id", "last", "last_dt_s", "primed_text", "seen")

    def __init__(self, channel: Channel, channel_id: int) -> None:
        self.channel = channel
        self.channel_id = channel_id
        self.canonical = canonical_for(channel.value_type)
        self.seen = False
        self.last: Any = None
        self.last_dt_s = 0.0
        # primed from a stored text that may stand for an object (see _reads_back_as)
        self.primed_text = False


class ChangeDetector:
    """Compares each spec sample with the last known value of every spec, across all groups."""

    def __init__(
        self,
        groups: dict[int, Sequence[tuple[int, Channel]]],
        *,
        window_before_s: float,
        window_after_s: float,
        wall: Callable[[], float],
        next_action_idx: int = 0,
    ) -> None:
        self._states = {
            gid: [_SpecState(ch, cid) for cid, ch in chans] for gid, chans in groups.items()
        }
        self._before = window_before_s
        self._after = window_after_s
        self._wall = wall
        self.next_action_idx = next_action_idx

    def prime(self, last_values: dict[str, tuple[float, Any]]) -> None:
        """Seed last known values (label -> (dt_s, value)), e.g. when resuming a run."""
        for states in self._states.values():
            for state in states:
                if state.channel.label in last_values:
                    state.last_dt_s, state.last = last_values[state.channel.label]
                    state.seen = True
                    state.primed_text = state.channel.value_type == "any" and isinstance(
                        state.last, str
                    )

    def feed(self, sample: Sample) -> list[ActionEvent]:
        states = self._states.get(sample.group_id)
        if not states:
            return []
        events: list[ActionEvent] = []
        for state, value in zip(states, sample.values, strict=True):
            if value is None:
                continue
            try:
                value = state.canonical(value)
            except Exception:  # whatever a driver's object raises (numpy's MaskError, ...):
                continue  # stored as NULL with a bad_value error: a gap, like a failed read
            if not state.seen:
                state.seen = True
                state.last = owned_value(value)
            elif state.primed_text and _reads_back_as(state.last, value):
                state.last = owned_value(value)  # the object from now on, compared as itself
            elif not values_equal(
                state.last, value, state.channel.tolerance_abs, state.channel.tolerance_rel
            ):
                value = owned_value(value)
                events.append(self._event(state, sample, value))
                state.last = value
            # else: equal, or within the tolerance of the known value, which stays as it was
            state.primed_text = False
            state.last_dt_s = sample.dt_s
        return events

    def _event(self, state: _SpecState, sample: Sample, value: Any) -> ActionEvent:
        idx = self.next_action_idx
        self.next_action_idx += 1
        return ActionEvent(
            action_idx=idx,
            dt_s=sample.dt_s,
            sample_idx=sample.sample_idx,
            prev_dt_s=state.last_dt_s,
            detected_at_utc=utc_iso(self._wall()),
            spec_label=state.channel.label,
            channel_id=state.channel_id,
            old_value=_plain(state.last),
            new_value=_plain(value),
            delta=numeric_delta(_plain(state.last), _plain(value)),
            window_start_s=sample.dt_s - self._before,
            window_end_s=sample.dt_s + self._after,
        )

    def last_values(self) -> Iterable[tuple[str, Any]]:
        for states in self._states.values():
            for state in states:
                if state.seen:
                    yield state.channel.label, state.last
