"""A poll group that has stopped reading: a read hung in its driver, or its instrument's
thread held by another group's hung read.

Until a hung read returns (or the read timeout's watchdog gives it up) nothing is counted: the
ticks passing meanwhile are only counted as missed when the next read begins. Both views
therefore work out what is already certain — how long the group has gone without beginning a
read, and how many tick slots have passed without one (each of them will be counted missed) —
from what they have: the live view from the running counters, ``trajmon status`` from the
rows of the last commit.
"""

from __future__ import annotations

import math
import sqlite3
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .records import GroupStats

__all__ = [
    "STALL_S",
    "Stall",
    "overdue_ticks",
    "running_stall",
    "skipped_in_flight",
    "stall_of",
    "status_stalls",
]

#: How much longer than its interval a group may go without beginning a read before it is
#: shown as stalled: long enough that scheduling jitter and a slow read are not, short enough
#: that an operator watching a hang sees it within a second or two.
STALL_S = 1.0

_EPS = 1e-9


@dataclass(frozen=True, slots=True)
class Stall:
    """A group that has gone ``for_s`` seconds without beginning a read (``in_flight``: its
    read begun at ``since_s`` has not returned), with ``overdue`` tick slots passed since."""

    in_flight: bool
    since_s: float
    for_s: float
    overdue: int

    def describe(self) -> str:
        """One line, what matters first (a narrow window cuts its end)."""
        what = "read in flight" if self.in_flight else "no read begun"
        text = f"{what} for {self.for_s:.1f} s"
        if self.overdue:
            text += f", {self.overdue} tick{'' if self.overdue == 1 else 's'} missed so far"
        return f"{text} (since t={self.since_s:.1f} s)"


def overdue_ticks(interval_s: float, since_s: float, now_s: float) -> int:
    """Ticks after the one a read began at ``since_s`` whose whole slot has passed by
    ``now_s`` (times from the run's ``t0``): the ticks :meth:`Schedule.begin` will count
    missed when the next read begins."""
    if interval_s <= 0 or now_s <= since_s:
        return 0
    began = math.floor(since_s / interval_s + _EPS)
    current = math.floor(now_s / interval_s + _EPS)
    return max(current - began - 1, 0)


def stall_of(
    interval_s: float,
    now_s: float,
    since_s: float | None,
    *,
    in_flight: bool,
    grace_s: float = STALL_S,
) -> Stall | None:
    """The group's stall, if it has gone more than ``interval_s + grace_s`` without beginning
    a read: ``since_s`` is when its read in flight (``in_flight``) or its latest read began,
    None when not known (no read yet)."""
    if since_s is None:
        return None
    for_s = now_s - since_s
    if for_s <= interval_s + grace_s:
        return None
    return Stall(in_flight, since_s, for_s, overdue_ticks(interval_s, since_s, now_s))


def running_stall(st: GroupStats, t0: float, now: float, stopping: bool) -> Stall | None:
    """A recording group's stall at ``now`` (its run's clock; ``t0`` the run's start), for the
    live view and the progress line. Once stopping, no tick after the stop is due, so none is
    shown overdue: the stall alone is (a hung read holding the stop up)."""
    reading = st.reading_since
    since = st.last_dt_s if reading is None else reading - t0
    stall = stall_of(st.interval_s, now - t0, since, in_flight=reading is not None)
    return replace(stall, overdue=0) if stall is not None and stopping else stall


def skipped_in_flight(st: GroupStats, t0: float) -> int:
    """The ticks the read in flight skipped — after the group's latest sample, before the
    tick the read took — for the live view and the progress line to show as missed already.
    Both schedulers count them only when that read returns. Until then they were shown nowhere:
    a read hung right after another one had (a driver timing out read after read) showed the
    first one's ticks while it hung, then the counted figure again — the missed column of an
    outage ran backwards. May be one too few (never too many) where the loop hands a read to
    the instrument's thread just before its tick."""
    reading, last = st.reading_since, st.last_dt_s
    if reading is None or last is None:
        return 0
    return overdue_ticks(st.interval_s, last, reading - t0)


def status_stalls(conn: sqlite3.Connection, doc: dict[str, Any]) -> None:
    """Add each group's stall to a running run's status document (:mod:`trajmon.status`), as
    of the last commit: ``stalled_for_s`` (None: not stalled) and ``overdue_ticks``.

    A group is stalled when, at the last heartbeat, every read it had returned was committed
    (nothing of it waiting in the queue: a writer behind is not a stall) and the latest of them
    had begun longer ago than its interval allows, plus a commit interval for a sample to reach
    the disk. The session's start stands in for a sample when none is newer: a resumed run's
    last sample is from before the pause."""
    run = conn.execute(
        "SELECT heartbeat_dt_s, commit_interval_s,"
        " (SELECT max(start_dt_s) FROM sessions s WHERE s.run_id = r.run_id) AS session_dt_s"
        " FROM runs r WHERE run_id = ?",
        (doc["run_id"],),
    ).fetchone()
    beat, commit_s, session_s = run[0], float(run[1]), float(run[2] or 0.0)
    for g in doc["groups"]:
        stall = None
        if doc["running"] and beat is not None and g["samples_read"] == g["samples"]:
            last = g["last_dt_s"]
            since = session_s if last is None else max(float(last), session_s)
            grace = STALL_S + commit_s
            stall = stall_of(g["interval_s"], float(beat), since, in_flight=False, grace_s=grace)
        g["stalled_for_s"] = None if stall is None else stall.for_s
        g["overdue_ticks"] = 0 if stall is None else stall.overdue
