"""Continuing a crashed or interrupted run on its own timeline.

A resumed run keeps everything that makes it one recording: ``sample_idx`` continues per group,
``dt_s`` is still seconds since the *original* start (so the outage is a visible gap, also
recorded as a new row in ``sessions``), and the change detector starts from the last recorded
value of every spec, so a knob turned while trajmon was down is still an action.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Sequence
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiosqlite

from .channels import PollGroup, decode_value
from .clock import utc_iso
from .config import ConfigError, MonitorConfig
from .connection import immediate_transaction, read_snapshot
from .queries import QueryError, effective_status, resolve_run
from .records import GroupStats
from .resume_checks import as_recorded, check_channels
from .schema import SchemaError, check_version, quote_ident
from .writer import WriterTarget

__all__ = ["ResumeState", "load_resume_config", "resume_run"]

RESUMABLE = ("crashed", "interrupted", "failed")


@dataclass(slots=True)
class ResumeState:
    target: WriterTarget
    next_idx: dict[int, int]
    last_spec_values: dict[str, tuple[float, Any]]
    next_action_idx: int
    #: The groups as the run records them: its untyped columns stay untyped (as_recorded).
    groups: list[PollGroup]


def _check_resumable(row: sqlite3.Row | None, name: str, now: float) -> None:
    if row is None:
        raise ConfigError(f"cannot resume: unknown run {name!r}")
    status = effective_status(row, now)
    if status == "running":
        age = now - float(row["heartbeat_epoch"])
        if age < -float(row["stale_after_s"]):  # no recorder on this computer beats ahead of it
            raise ConfigError(
                f"cannot resume {name!r}: its last heartbeat is {-age:.1f} s in the future by"
                " this computer's clock (set back since, or behind the clock of the computer"
                " that recorded it); correct the clock, or resume it from that computer"
            )
        if age < -1.0:  # beyond a beat committed after ``now`` was taken (as status reads it)
            # "heartbeat 0.0 s ago" said the run had just beaten, and not when to retry.
            stale = float(row["stale_after_s"])
            raise ConfigError(
                f"cannot resume {name!r}: its last heartbeat is {-age:.1f} s ahead of this"
                " computer's clock (set back since): it may still be recording; if it is not,"
                f" it can be resumed once that heartbeat is {stale:g} s old, in"
                f" {stale - age:.1f} s"
            )
        raise ConfigError(
            f"cannot resume {name!r}: it is still recording (heartbeat {max(age, 0.0):.1f} s ago)"
        )
    if status not in RESUMABLE:
        raise ConfigError(
            f"cannot resume {name!r}: it is {status}; only crashed, interrupted or "
            "failed runs can be resumed"
        )


def load_resume_config(db: Path, run_name: str, now: float | None = None) -> MonitorConfig:
    """The stored configuration of a resumable run; refuses unknown, completed or live runs."""
    if not db.exists():
        raise ConfigError(f"cannot resume {run_name!r}: database not found: {db}")
    uri = f"{db.resolve().as_uri()}?mode=ro"
    try:
        with closing(sqlite3.connect(uri, uri=True)) as conn:
            (version,) = conn.execute("PRAGMA user_version").fetchone()
            check_version(version)  # before reading a newer trajmon's rows as this one's
            if conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'runs'").fetchone() is None:
                raise ConfigError(f"cannot resume {run_name!r}: {db} is not a trajmon database")
            conn.row_factory = sqlite3.Row
            row = conn.execute(
                "SELECT * FROM runs WHERE run_name = ?", (run_name.strip(),)
            ).fetchone()
            if row is None:  # as queries find it: up to Unicode form and case, or refused
                ref = resolve_run(conn, run_name)
                row = conn.execute("SELECT * FROM runs WHERE run_id = ?", (ref.run_id,)).fetchone()
    except QueryError as exc:
        raise ConfigError(f"cannot resume: {exc}") from exc
    except sqlite3.Error as exc:
        raise ConfigError(f"cannot resume {run_name!r}: cannot read {db}: {exc}") from exc
    except SchemaError as exc:
        raise ConfigError(f"cannot resume {run_name!r}: {exc}") from exc
    _check_resumable(row, run_name, time.time() if now is None else now)
    assert row is not None
    config = MonitorConfig.model_validate_json(row["config_json"])
    return config.updated(run_name=str(row["run_name"]), db=db)


async def _fetchone(conn: aiosqlite.Connection, sql: str, args: Sequence[Any] = ()) -> Any:
    cursor = await conn.execute(sql, args)
    return await cursor.fetchone()


async def _fetchall(conn: aiosqlite.Connection, sql: str, args: Sequence[Any] = ()) -> list[Any]:
    cursor = await conn.execute(sql, args)
    return list(await cursor.fetchall())


async def resume_run(
    conn: aiosqlite.Connection,
    run_name: str,
    groups: Sequence[PollGroup],
    *,
    now_mono: float,
    now_wall: float,
    duration_s: float | None = None,
) -> ResumeState:
    """Load a run's state and open a new session; raises ConfigError if it cannot continue.

    The check and the claim are one write transaction: a second process resuming the same run
    waits for this one's lock, then finds it running (a fresh heartbeat) and is refused.
    """
    conn.row_factory = aiosqlite.Row
    try:
        # Each spec's last value is a scan back over its NULLs (failed reads), which can take
        # seconds: a spec that could not be read for days leaves millions of them. Done first in
        # a snapshot, which blocks no other writer (another run recording into this file waits
        # at most busy_timeout for the lock); under the lock, only a table grown since is
        # scanned again.
        async with read_snapshot(conn):
            run, stored, labels = await _read_run(conn, run_name, groups, now_wall)
            groups = as_recorded(groups, labels)
            scans = await _scan_specs(conn, int(run["run_id"]), groups, stored, labels, {})
        async with immediate_transaction(conn):
            run, stored, labels = await _read_run(conn, run_name, groups, now_wall)
            groups = as_recorded(groups, labels)
            run_id = int(run["run_id"])
            scans = await _scan_specs(conn, run_id, groups, stored, labels, scans)
            last = {label: known for scan in scans.values() for label, known in scan.last.items()}
            target, next_idx = await _load_groups(conn, run_id, groups, stored, labels)
            action = await _fetchone(
                conn,
                "SELECT coalesce(max(action_idx) + 1, 0) FROM actions WHERE run_id = ?",
                (run_id,),
            )
            error = await _fetchone(
                conn,
                "SELECT coalesce(max(error_idx) + 1, 0) FROM monitor_errors WHERE run_id = ?",
                (run_id,),
            )
            session = await _fetchone(
                conn,
                "SELECT coalesce(max(session_idx) + 1, 1) FROM sessions WHERE run_id = ?",
                (run_id,),
            )
            target.actions, target.errors = int(run["actions"]), int(run["errors"])
            target.next_error_idx = int(error[0])
            start_dt = _session_start_dt(run, stored, now_wall)
            target.t0_mono = now_mono - start_dt
            target.session_idx = int(session[0])
            await _open_session(conn, run, target, start_dt, now_wall, duration_s)
    finally:
        conn.row_factory = None
    return ResumeState(
        target=target,
        next_idx=next_idx,
        last_spec_values=last,
        next_action_idx=int(action[0]),
        groups=list(groups),
    )


async def _read_run(
    conn: aiosqlite.Connection, run_name: str, groups: Sequence[PollGroup], now_wall: float
) -> tuple[Any, list[Any], list[Any]]:
    """The run's row, groups and channels, once checked that this configuration may go on
    recording it: resumable, the same groups, labels and intervals, each column's type and
    unit, each spec's tolerances (:mod:`trajmon.resume_checks`)."""
    run = await _fetchone(conn, "SELECT * FROM runs WHERE run_name = ?", (run_name.strip(),))
    _check_resumable(run, run_name, now_wall)
    run_id = int(run["run_id"])
    stored = await _fetchall(
        conn,
        "SELECT group_id, name, kind, interval_s, table_name, samples, samples_read,"
        " missed_ticks, failed_reads, read_s_sum, read_s_max, lateness_max_s, last_dt_s"
        " FROM poll_groups WHERE run_id = ? ORDER BY group_id",
        (run_id,),
    )
    labels = await _fetchall(
        conn,
        "SELECT channel_id, group_id, label, value_type, unit, tolerance_abs, tolerance_rel"
        " FROM channels"
        " WHERE run_id = ? ORDER BY group_id, position",
        (run_id,),
    )
    planned = [(g.name, g.kind, [c.label for c in g.channels]) for g in groups]
    recorded = [
        (r["name"], r["kind"], [c["label"] for c in labels if c["group_id"] == r["group_id"]])
        for r in stored
    ]
    if planned != recorded:
        raise ConfigError(
            f"cannot resume {run_name!r}: its channels differ from the configured ones"
            " (a resumed run must record the same groups and labels)"
        )
    check_channels(run_name, groups, stored, labels)
    return run, stored, labels


def _session_start_dt(run: Any, stored: Sequence[Any], now_wall: float) -> float:
    """Where the new session starts on the run's timeline: the wall-clock time since the run's
    start — but never before what the run has already recorded. A wall clock set back while
    the run recorded (an NTP step, a PC that lost its time in the crash) would otherwise put the
    new session before the old one, or before the run's start: its first tick then lies in the
    future (a resume with --duration recorded nothing) and its dt_s overlap the recorded ones."""
    recorded = [float(run["heartbeat_dt_s"] or 0.0)]
    recorded += [float(g["last_dt_s"]) for g in stored if g["last_dt_s"] is not None]
    return max(now_wall - float(run["run_start_epoch"]), *recorded)


async def _open_session(
    conn: aiosqlite.Connection,
    run: Any,
    target: WriterTarget,
    start_dt: float,
    now_wall: float,
    duration_s: float | None,
) -> None:
    """Close the previous session with how it ended, open ``target.session_idx`` starting at
    ``start_dt`` on the run's timeline, and mark the run running."""
    run_id, session_idx = target.run_id, target.session_idx
    # Samples read but never committed were lost. A run that recorded its end (interrupted,
    # failed) counted them then; only a crashed one, whose end was never written, has them
    # still to count.
    crashed = run["status"] == "running"
    lost = sum(s.samples_read - s.samples_committed for s in target.stats.values())
    for stats in target.stats.values():
        stats.samples_read = stats.samples_committed
    await conn.execute(
        "UPDATE sessions SET status = ?, end_dt_s = coalesce(end_dt_s, ?)"
        " WHERE run_id = ? AND session_idx = ?",
        (
            "crashed" if crashed else str(run["status"]),
            run["heartbeat_dt_s"],
            run_id,
            session_idx - 1,
        ),
    )
    await conn.execute(
        "INSERT INTO sessions (run_id, session_idx, started_utc, start_dt_s, status)"
        " VALUES (?, ?, ?, ?, 'running')",
        (run_id, session_idx, utc_iso(now_wall), start_dt),
    )
    # Counted once: from now on they are part of lost_samples, not still pending. Written in
    # this transaction, not left to the new session's first commit — a session killed before
    # that commit would otherwise have them counted again by the next resume.
    await conn.execute("UPDATE poll_groups SET samples_read = samples WHERE run_id = ?", (run_id,))
    target.lost_before = int(run["lost_samples"]) + (lost if crashed else 0)
    await conn.execute(
        "UPDATE runs SET status = 'running', ended_utc = NULL, end_dt_s = NULL, message = NULL,"
        " sessions = sessions + 1, lost_samples = lost_samples + ?, pid = ?, duration_s = ?,"
        " heartbeat_utc = ?, heartbeat_epoch = ?, heartbeat_dt_s = ? WHERE run_id = ?",
        (
            lost if crashed else 0,
            os.getpid(),
            duration_s,
            utc_iso(now_wall),
            now_wall,
            start_dt,
            run_id,
        ),
    )


async def _known_value(
    conn: aiosqlite.Connection, run_id: int, table: str, label: str, labels: Sequence[Any]
) -> Any:
    """The stored value the change detector knew for a spec with a tolerance when the run
    stopped: the new value of its latest action, else its first successful read. Not its last
    read: reads within the tolerance leave the known value as it was, so a knob turned slowly
    across a resume is an action once it has moved by more than the tolerance in all, against
    the value it started from, as in an uninterrupted run."""
    channel_id = next(int(c["channel_id"]) for c in labels if c["label"] == label)
    action = await _fetchone(
        conn,
        "SELECT new_value FROM actions WHERE run_id = ? AND channel_id = ?"
        " ORDER BY action_idx DESC LIMIT 1",
        (run_id, channel_id),
    )
    if action is not None:
        return action[0]
    col = quote_ident(label)
    first = await _fetchone(
        conn,
        f"SELECT {col} FROM {quote_ident(table)} WHERE {col} IS NOT NULL"
        " ORDER BY sample_idx LIMIT 1",
    )
    return first[0]


@dataclass(slots=True)
class _SpecScan:
    """A spec table's last values, (dt_s, value) per label, and the table's top sample_idx
    when they were read: while the top is the same, no row was added, and they still hold."""

    run_id: int
    top: int | None
    last: dict[str, tuple[float, Any]]


async def _scan_specs(
    conn: aiosqlite.Connection,
    run_id: int,
    groups: Sequence[PollGroup],
    stored: Sequence[Any],
    labels: Sequence[Any],
    earlier: dict[str, _SpecScan],
) -> dict[str, _SpecScan]:
    """The value the change detector starts from for each spec, by table; a table whose scan
    in ``earlier`` is still current is not read again."""
    scans: dict[str, _SpecScan] = {}
    for row, group in zip(stored, groups, strict=True):
        if group.kind != "spec":
            continue
        table = str(row["table_name"])
        top = (await _fetchone(conn, f"SELECT max(sample_idx) FROM {quote_ident(table)}"))[0]
        before = earlier.get(table)
        if before is not None and (before.run_id, before.top) == (run_id, top):
            scans[table] = before
            continue
        last: dict[str, tuple[float, Any]] = {}
        for channel in group.channels:
            col = quote_ident(channel.label)
            hit = await _fetchone(
                conn,
                f"SELECT dt_s, {col} FROM {quote_ident(table)} WHERE {col} IS NOT NULL"
                " ORDER BY sample_idx DESC LIMIT 1",
            )
            if hit is None:
                continue
            known = hit[1]
            if channel.tolerance_abs is not None or channel.tolerance_rel is not None:
                known = await _known_value(conn, run_id, table, channel.label, labels)
            last[channel.label] = (float(hit[0]), decode_value(channel.value_type, known))
        scans[table] = _SpecScan(run_id, top, last)
    return scans


async def _load_groups(
    conn: aiosqlite.Connection,
    run_id: int,
    groups: Sequence[PollGroup],
    stored: Sequence[Any],
    labels: Sequence[Any],
) -> tuple[WriterTarget, dict[int, int]]:
    stats: dict[int, GroupStats] = {}
    tables: dict[int, str] = {}
    next_idx: dict[int, int] = {}
    types = {int(c["channel_id"]): str(c["value_type"]) for c in labels}
    for row, group in zip(stored, groups, strict=True):
        gid, table = int(row["group_id"]), str(row["table_name"])
        tables[gid] = table
        stats[gid] = GroupStats(
            gid,
            group.name,
            group.interval_s,
            samples_read=int(row["samples_read"]),
            samples_committed=int(row["samples"]),
            missed_ticks=int(row["missed_ticks"]),
            failed_reads=int(row["failed_reads"]),
            read_s_sum=float(row["read_s_sum"]),
            read_s_max=float(row["read_s_max"]),
            lateness_max_s=float(row["lateness_max_s"]),
        )
        top = await _fetchone(conn, f"SELECT max(sample_idx) FROM {quote_ident(table)}")
        next_idx[gid] = 0 if top[0] is None else int(top[0]) + 1
    rotate_row = await _fetchone(
        conn, "SELECT rotate_entries FROM runs WHERE run_id = ?", (run_id,)
    )
    target = WriterTarget(
        run_id=run_id,
        t0_mono=0.0,
        groups=dict(enumerate(groups)),
        tables=tables,
        rotate_entries=int(rotate_row[0]),
        stats=stats,
        channel_types=types,
    )
    return target, next_idx
