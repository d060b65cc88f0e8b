"""What flows through the bounded queue from the pollers to the writer.

Slotted dataclasses rather than dicts: a 1 kHz poller creates one of these per tick, and the
writer turns them into SQL parameters without looking anything up by name.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from .sampling import ReadFailure

__all__ = [
    "IMMUTABLE_TYPES",
    "ActionEvent",
    "FlaggedSample",
    "GroupStats",
    "MonitorError",
    "Sample",
    "SampleBatch",
    "owned_value",
]

#: Values that cannot change once read: a sample holds them as the driver returned them.
IMMUTABLE_TYPES = frozenset({float, int, bool, str, bytes, complex, type(None)})


def owned_value(value: Any) -> Any:
    """A copy of a value the driver may change in place after handing it out (an array it
    reuses as its buffer, its state dict); immutable values as they are. A sample waits for the
    next commit before it is encoded, and a spec's known value is compared for as long as it
    stands: both must keep what the read returned, not what the object holds later."""
    if type(value) in IMMUTABLE_TYPES or isinstance(value, np.generic | BaseException):
        return value
    if isinstance(value, np.ndarray):
        return value.copy()
    try:
        return copy.deepcopy(value)
    except Exception:  # an object that cannot be copied (a lock inside) is kept as it is
        return value


@dataclass(slots=True)
class Sample:
    """One read of a poll group. ``values`` holds ``None`` where that channel's read failed."""

    group_id: int
    sample_idx: int
    dt_s: float
    read_s: float
    values: Sequence[Any]


@dataclass(slots=True)
class SampleBatch:
    """Consecutive clean samples of one group, queued as one item.

    The instrument thread hands samples over in batches (:mod:`trajmon.threaded`); queueing them
    the same way saves a queue operation and a dispatch per sample, which at 1 kHz and above is
    a measurable share of the event loop's time. The queue's bound still counts samples.
    """

    group_id: int
    samples: list[Sample]


@dataclass(slots=True)
class ActionEvent:
    """A spec changed between two consecutive spec samples."""

    action_idx: int
    dt_s: float
    sample_idx: int
    prev_dt_s: float
    detected_at_utc: str
    spec_label: str
    channel_id: int
    old_value: Any
    new_value: Any
    delta: float | None
    window_start_s: float
    window_end_s: float


@dataclass(slots=True)
class MonitorError:
    """One failed read (or a value that did not fit) the run survived; the writer folds a
    channel's consecutive ones into one ``monitor_errors`` row (:mod:`trajmon.streaks`)."""

    dt_s: float
    channel: str | None
    instrument: str | None
    error_type: str
    message: str


@dataclass(slots=True)
class FlaggedSample:
    """A sample with the read failures and action events it gave rise to, queued as one item.

    One item is taken by one commit, so the sample, its error rows and its actions land in the
    same transaction. Sent one by one, a commit could take the sample and leave its action in
    the queue; a kill right then kept the new spec value but lost the action, and a resume,
    which primes detection from the last stored values, never detects it again. Counts as one
    sample against the queue's bound.
    """

    sample: Sample
    errors: tuple[MonitorError, ...]
    events: tuple[ActionEvent, ...]


@dataclass(slots=True)
class GroupStats:
    """Live counters of one poll group, copied onto its row at every commit."""

    group_id: int
    name: str
    interval_s: float
    samples_read: int = 0
    samples_committed: int = 0
    missed_ticks: int = 0
    failed_reads: int = 0
    read_s_sum: float = 0.0
    read_s_max: float = 0.0
    lateness_max_s: float = 0.0
    last_dt_s: float | None = None
    last_values: Sequence[Any] | None = None
    #: The latest failed read, for the live view: (dt_s, channel, error type, message).
    last_error: tuple[float, str, str, str] | None = None
    #: When (the clock's monotonic seconds) the read in flight began; None between reads. The
    #: counters only move when a read returns: without this, a read hung in its driver left
    #: the live view showing a healthy group (0 missed) for as long as the hang lasted.
    reading_since: float | None = None

    def read_failed(self, dt_s: float, failures: Sequence[ReadFailure]) -> None:
        """Count a sample in which reads failed (both schedulers call this); keep the first
        failure for the live view."""
        self.failed_reads += 1
        f = failures[0]
        self.last_error = (dt_s, f.channel, f.error_type, f.message)
