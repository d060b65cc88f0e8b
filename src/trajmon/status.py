"""The state of one run, as a stable, versioned JSON document a supervising script can trust.

Everything here comes from rows the writer updates at every commit (heartbeat, per-group
counters), read through a read-only connection: with WAL the reader sees the last committed
state and never blocks — nor is blocked by — the recording process. The shape is versioned by
``schema``: fields may be *added* within a version, never renamed, retyped or removed.
"""

from __future__ import annotations

import sqlite3
import time
from typing import Any

from .queries import RunRef, effective_status
from .streaks import error_columns

__all__ = ["STATUS_SCHEMA", "TERMINAL_STATUSES", "run_status"]

#: Version of the ``trajmon status --json`` document.
STATUS_SCHEMA = 1

#: Statuses after which nothing will change (unless the run is resumed).
TERMINAL_STATUSES = frozenset({"completed", "interrupted", "failed", "crashed"})


def _rate(samples: int, seconds: float | None) -> float | None:
    if seconds is None or seconds <= 0:
        return None
    return samples / seconds


def _recorded_s(conn: sqlite3.Connection, run_id: int, counted_until: float | None) -> float | None:
    """Seconds the run recorded up to its last commit: the sum of its sessions' spans, the
    latest one up to ``counted_until``. Not ``counted_until`` itself: on a resumed run that
    includes the outages between sessions, and an achieved rate over it read far below the
    target (0.01 Hz of 10 after an hour down) though every tick was taken while recording."""
    if counted_until is None:
        return None
    spans = conn.execute(
        "SELECT start_dt_s, end_dt_s FROM sessions WHERE run_id = ? ORDER BY session_idx",
        (run_id,),
    ).fetchall()
    if not spans:  # a run row without sessions (made by hand): its timeline is all there is
        return float(counted_until)
    *earlier, (last_start, _) = spans
    total = sum(max(float(end) - float(start), 0.0) for start, end in earlier if end is not None)
    return total + max(float(counted_until) - float(last_start), 0.0)


def run_status(conn: sqlite3.Connection, ref: RunRef, now: float | None = None) -> dict[str, Any]:
    """The run's status document (see ``docs/cli.md``, "trajmon status")."""
    now = time.time() if now is None else now
    run = conn.execute("SELECT * FROM runs WHERE run_id = ?", (ref.run_id,)).fetchone()
    status = effective_status(run, now)
    beat_epoch = run["heartbeat_epoch"]
    # Negative: the heartbeat lies ahead of this computer's clock (set back since it was
    # written). A live recorder's next beat is written by the clock as it is now, so one that
    # stays ahead is a run that stopped beating before the clock was set back.
    beat_age = None if beat_epoch is None else now - float(beat_epoch)
    if beat_age is not None and beat_age > -1.0:  # a beat committed after ``now`` was taken
        beat_age = max(beat_age, 0.0)
    beat_dt = run["heartbeat_dt_s"]
    # Counters on the rows are as of the last commit: rates divide by the time recorded until
    # that commit's dt_s.
    counted_until = run["end_dt_s"] if run["end_dt_s"] is not None else beat_dt
    if status == "running" and beat_dt is not None and beat_age is not None:
        elapsed: float | None = float(beat_dt) + max(beat_age, 0.0)
    else:
        elapsed = counted_until
    recorded = _recorded_s(conn, ref.run_id, counted_until)
    groups = []
    pending = 0
    for g in conn.execute(
        "SELECT * FROM poll_groups WHERE run_id = ? ORDER BY group_id", (ref.run_id,)
    ):
        read = int(g["samples_read"])
        committed = int(g["samples"])
        pending += max(read - committed, 0)
        interval = float(g["interval_s"])
        groups.append(
            {
                "name": g["name"],
                "kind": g["kind"],
                "interval_s": interval,
                "target_rate_hz": 1.0 / interval,
                "achieved_rate_hz": _rate(read, recorded),
                "samples": committed,
                "samples_read": read,
                "missed_ticks": int(g["missed_ticks"]),
                "failed_reads": int(g["failed_reads"]),
                "read_mean_s": float(g["read_s_sum"]) / read if read else None,
                "read_max_s": float(g["read_s_max"]),
                "first_dt_s": g["first_dt_s"],
                "last_dt_s": g["last_dt_s"],
            }
        )
    # The streak with the latest failed read: one that began earlier may still be going on.
    last_error = conn.execute(
        f"SELECT dt_s, channel, instrument, error_type, message, {error_columns(conn)}"
        " FROM monitor_errors WHERE run_id = ? ORDER BY last_dt_s DESC, error_idx DESC LIMIT 1",
        (ref.run_id,),
    ).fetchone()
    lost = int(run["lost_samples"])
    if status == "crashed":
        lost += pending  # read but never committed: nobody will commit them now
    return {
        "schema": STATUS_SCHEMA,
        "run_id": ref.run_id,
        "run_name": ref.run_name,
        "status": status,
        "stored_status": run["status"],
        "running": status == "running",
        "run_start_utc": run["run_start_utc"],
        "ended_utc": run["ended_utc"],
        "elapsed_s": elapsed,
        "requested_duration_s": run["duration_s"],
        "heartbeat_utc": run["heartbeat_utc"],
        "heartbeat_age_s": beat_age,
        "stale_after_s": float(run["stale_after_s"]),
        "signal_samples": sum(g["samples"] for g in groups if g["kind"] == "signal"),
        "spec_samples": sum(g["samples"] for g in groups if g["kind"] == "spec"),
        "missed_ticks": sum(g["missed_ticks"] for g in groups),
        "actions": int(run["actions"]),
        "errors": int(run["errors"]),
        "failed_reads": sum(g["failed_reads"] for g in groups),
        "last_error": None if last_error is None else dict(last_error),
        "lost_samples": lost,
        "pending_samples": pending if status == "running" else 0,
        "sessions": int(run["sessions"]),
        "pid": run["pid"],
        "message": run["message"],
        "groups": groups,
    }
