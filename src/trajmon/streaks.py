"""Failed reads as streaks: one ``monitor_errors`` row per run of consecutive failures.

A controller switched off for the night fails every read of every channel. One row per failed
read was about 130 rows a second at the default 10 Hz with 12 channels — some 100 MB an hour,
ten times what the samples themselves take — while what the operator needs is when a channel
stopped, why, and when it came back. So a row stands for consecutive failed reads of one channel
with one error type: where the streak began (``dt_s``, ``message``), how many reads it spans
(``reads``) and its latest read (``last_dt_s``, ``last_message``). The channel's next read that
succeeds, or an error of another type, ends it; the next failure starts a new row.

"Consecutive" means adjacent ``sample_idx`` of the channel's poll group, so a streak never
spans a read that succeeded, and each of its reads is a NULL in the sample table.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .records import MonitorError

__all__ = ["ErrorStreaks", "Streak"]


@dataclass(slots=True)
class Streak:
    """One ``monitor_errors`` row: its first failed read, and the latest one so far."""

    error_idx: int
    first: MonitorError
    reads: int
    last_sample_idx: int
    last_dt_s: float
    last_message: str

    def row(self, run_id: int) -> tuple[Any, ...]:
        """The row as :data:`trajmon.schema.ERROR_UPSERT` binds it."""
        first = self.first
        return (
            run_id,
            self.error_idx,
            first.dt_s,
            first.channel,
            first.instrument,
            first.error_type,
            first.message,
            self.reads,
            self.last_dt_s,
            self.last_message,
        )


class ErrorStreaks:
    """The writer's latest streak per channel; at most one entry per channel of the run."""

    __slots__ = ("_latest",)

    def __init__(self) -> None:
        self._latest: dict[tuple[int, str | None], Streak] = {}

    def extend(self, group_id: int, sample_idx: int, error: MonitorError) -> Streak | None:
        """Add ``error`` to its channel's streak when it continues it; None when it starts one."""
        streak = self._latest.get((group_id, error.channel))
        if (
            streak is None
            or streak.last_sample_idx + 1 != sample_idx
            or streak.first.error_type != error.error_type
        ):
            return None
        streak.reads += 1
        streak.last_sample_idx = sample_idx
        streak.last_dt_s = error.dt_s
        streak.last_message = error.message
        return streak

    def start(self, group_id: int, sample_idx: int, error: MonitorError, error_idx: int) -> Streak:
        """A new streak (a new row) for ``error``'s channel, numbered ``error_idx``."""
        streak = Streak(error_idx, error, 1, sample_idx, error.dt_s, error.message)
        self._latest[(group_id, error.channel)] = streak
        return streak
