"""Creating and closing a run's rows: the writer connection's work outside the sample stream.

A run is created in one transaction — run row, poll groups, channel catalog, per-group tables,
first session — so a database either knows a run completely or not at all.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiosqlite

from . import __version__
from .channels import PollGroup
from .clock import utc_iso
from .config import ConfigError, MonitorConfig
from .connection import (
    StorageError,
    check_owner,
    immediate_transaction,
    not_a_file,
    on_connection_thread,
)
from .files import wal_file
from .queries import effective_status, open_readonly
from .records import GroupStats
from .resume_checks import check_settings
from .schema import (
    GROUP_UPDATE,
    SchemaError,
    group_counters,
    group_table_ddl,
    group_table_name,
    migrate,
)
from .writer import WriterTarget

__all__ = ["RunExistsError", "create_run", "finish_run", "prepare_db"]


class RunExistsError(ValueError):
    """Run names are single-use within a database."""


def prepare_db(cfg: MonitorConfig, resume: bool) -> None:
    """Bring the file to the current schema and check the run name before anything is built:
    a new run's name must be unused, a resumed run's known and its settings kept.

    A file this call created is removed again when it fails before the catalog is committed
    (a full disk): an empty file left behind was taken for a damaged database."""
    if (problem := not_a_file(cfg.db)) is not None:  # SQLite would wait on a FIFO for good
        raise ConfigError(f"cannot open database {cfg.db}: it is {problem}, not a database file")
    if resume and not cfg.db.exists():  # connecting would create it: a mistyped path, kept
        raise ConfigError(f"cannot resume {cfg.run_name!r}: database not found: {cfg.db}")
    target = Path(os.path.realpath(cfg.db))  # SQLite creates a dangling link's target
    created = not target.exists()
    try:
        _prepare(cfg, resume)
    except BaseException:
        if created:
            _remove_if_empty(target)
        raise


def _remove_if_empty(db: Path) -> None:
    """Remove ``db`` with its ``-wal`` and ``-shm`` while it holds no table and no version: a
    recorder that created the catalog in it meanwhile keeps it."""
    with contextlib.suppress(OSError, sqlite3.Error):
        if db.stat().st_size > 0:  # SQLite wrote its header (WAL mode): read what it holds
            # With no log, the file is the whole database: read it as such, needing no -shm
            # (which a full disk may not have let SQLite grow).
            wal = wal_file(db)
            whole = not wal.exists() or wal.stat().st_size == 0
            conn, tables = open_readonly(db, immutable=whole)
            with contextlib.closing(conn):
                (version,) = conn.execute("PRAGMA user_version").fetchone()
            if tables or version:
                return
        for path in (db, wal_file(db), db.with_name(f"{db.name}-shm")):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()


def _prepare(cfg: MonitorConfig, resume: bool) -> None:
    try:
        conn = sqlite3.connect(cfg.db, timeout=2.0)
    except sqlite3.Error as exc:
        raise StorageError(f"cannot open database {cfg.db}: {exc}") from exc
    with contextlib.closing(conn):
        try:
            migrate(conn)
            conn.row_factory = sqlite3.Row
            row = conn.execute(
                "SELECT rotate_entries, window_before_s, window_after_s, status,"
                " heartbeat_epoch, stale_after_s, pid FROM runs WHERE run_name = ?",
                (cfg.run_name,),
            ).fetchone()
        except sqlite3.Error as exc:
            raise StorageError(f"cannot use database {cfg.db}: {exc}") from exc
        except SchemaError as exc:  # say which file: the message alone names none
            raise SchemaError(f"{cfg.db}: {exc}") from exc
        if resume:
            if row is None:
                raise ConfigError(f"cannot resume: unknown run {cfg.run_name!r}")
            check_settings(cfg, row[:3])
        elif row is not None:
            raise RunExistsError(
                f"run name {cfg.run_name!r} is already used in {cfg.db}{_recording(row)}"
            )


def _recording(row: sqlite3.Row) -> str:
    """Whether the run holding the name is still recording: a notebook cell run twice is
    refused beside its own first run, and "delete the database" would be the wrong advice."""
    if effective_status(row) != "running":
        return ""
    where = " in this process" if row["pid"] == os.getpid() else ""
    return f" by a run still recording{where}: stop it, or choose another run name"


@dataclass(frozen=True, slots=True)
class NewRun:
    run_name: str
    run_start_epoch: float
    t0_mono: float
    config: MonitorConfig
    groups: Sequence[PollGroup]
    snapshot: dict[str, Any] | None


def _json(value: Any) -> str:
    """Strict JSON: a snapshot's NaN or infinity (an instrument reporting one) is written as the
    string "NaN", "Infinity" or "-Infinity" — bare ``NaN`` is not JSON, and SQLite's
    ``json_extract`` refuses the whole document over it."""
    return json.dumps(_finite(value), default=str, allow_nan=False)


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


async def create_run(conn: aiosqlite.Connection, new: NewRun) -> WriterTarget:
    cfg = new.config
    cursor = await conn.execute("SELECT 1 FROM runs WHERE run_name = ?", (new.run_name,))
    if await cursor.fetchone() is not None:
        raise RunExistsError(f"run name {new.run_name!r} is already used in {cfg.db}")
    async with immediate_transaction(conn):
        try:
            cursor = await conn.execute(
                "INSERT INTO runs (run_name, status, run_start_utc, run_start_epoch, duration_s,"
                " rotate_entries, window_before_s, window_after_s, commit_interval_s,"
                " stale_after_s, config_json, snapshot_json, trajmon_version, pid,"
                " heartbeat_utc, heartbeat_epoch, heartbeat_dt_s)"
                " VALUES (?, 'running', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0)",
                (
                    new.run_name,
                    utc_iso(new.run_start_epoch),
                    new.run_start_epoch,
                    cfg.duration_s,
                    cfg.rotate_entries,
                    cfg.window_before_s,
                    cfg.window_after_s,
                    cfg.commit_interval_s,
                    cfg.stale_after_s,
                    cfg.model_dump_json(),
                    None if new.snapshot is None else _json(new.snapshot),
                    __version__,
                    os.getpid(),
                    utc_iso(new.run_start_epoch),
                    new.run_start_epoch,
                ),
            )
        except sqlite3.IntegrityError as exc:
            raise RunExistsError(f"run name {new.run_name!r} is already used in {cfg.db}") from exc
        run_id = cursor.lastrowid
        assert run_id is not None
        tables: dict[int, str] = {}
        stats: dict[int, GroupStats] = {}
        types: dict[int, str] = {}
        channel_id = 0
        for gid, group in enumerate(new.groups):
            table = group_table_name(new.run_name, group.name)
            tables[gid] = table
            stats[gid] = GroupStats(gid, group.name, group.interval_s)
            await conn.execute(
                "INSERT INTO poll_groups (run_id, group_id, name, kind, interval_s, table_name)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (run_id, gid, group.name, group.kind, group.interval_s, table),
            )
            for pos, ch in enumerate(group.channels):
                await conn.execute(
                    "INSERT INTO channels (run_id, channel_id, label, kind, group_id, position,"
                    " unit, value_type, vals, source, instrument, tolerance_abs, tolerance_rel)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        run_id,
                        channel_id,
                        ch.label,
                        ch.kind,
                        gid,
                        pos,
                        ch.unit,
                        ch.value_type,
                        ch.vals,
                        ch.source,
                        ch.instrument,
                        ch.tolerance_abs,
                        ch.tolerance_rel,
                    ),
                )
                types[channel_id] = ch.value_type
                channel_id += 1
            await conn.execute(group_table_ddl(table, group.channels, cfg.rotate_entries))
        await conn.execute(
            "INSERT INTO sessions (run_id, session_idx, started_utc, start_dt_s, status)"
            " VALUES (?, 0, ?, 0, 'running')",
            (run_id, utc_iso(new.run_start_epoch)),
        )
    return WriterTarget(
        run_id=run_id,
        t0_mono=new.t0_mono,
        groups=dict(enumerate(new.groups)),
        tables=tables,
        rotate_entries=cfg.rotate_entries,
        stats=stats,
        channel_types=types,
    )


async def finish_run(
    conn: aiosqlite.Connection,
    target: WriterTarget,
    *,
    status: str,
    end_dt_s: float,
    end_epoch: float,
    lost_samples: int,
    message: str | None,
) -> None:
    """Record the run's final state; the last write of every run, whatever its outcome —
    unless another process has resumed the run meanwhile (:class:`RunTakenOverError`).
    ``lost_samples`` is the run's total, earlier sessions' included (``target.lost_before``)."""
    async with immediate_transaction(conn):
        await on_connection_thread(conn, check_owner, target.run_id, target.session_idx)
        await conn.execute(
            "UPDATE runs SET status = ?, ended_utc = ?, end_dt_s = ?,"
            " lost_samples = ?,"
            " message = ?, heartbeat_utc = ?, heartbeat_epoch = ?, heartbeat_dt_s = ?,"
            " actions = ?, errors = ? WHERE run_id = ?",
            (
                status,
                utc_iso(end_epoch),
                end_dt_s,
                lost_samples,
                message,
                utc_iso(end_epoch),
                end_epoch,
                end_dt_s,
                target.actions,
                target.errors,
                target.run_id,
            ),
        )
        await conn.executemany(
            GROUP_UPDATE,
            [
                group_counters(target.run_id, gid, stats, stats.samples_committed)
                for gid, stats in target.stats.items()
            ],
        )
        await conn.execute(
            "UPDATE sessions SET end_dt_s = ?, status = ? WHERE run_id = ? AND session_idx = ?",
            (end_dt_s, status, target.run_id, target.session_idx),
        )
