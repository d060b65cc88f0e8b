"""The SQLite schema: catalog tables shared by all runs, one typed table per run and poll group.

Each poll group of a run gets its own table, named ``"<run name>/<group>"``, with one typed
column per channel named by its label — so a plain ``sqlite3`` user reads a channel with::

    SELECT dt_s, "Tunnel Current" FROM "my run/signals" WHERE dt_s BETWEEN 10 AND 15;

Identifiers are always quoted (:func:`quote_ident`), so labels and run names with quotes, spaces,
SQL keywords or unicode are just names. ``segment_id`` is a virtual generated column
(``sample_idx / rotate_entries``): it costs no bytes per row and can never disagree with
``sample_idx``.
"""

from __future__ import annotations

import contextlib
import re
import sqlite3
import time
from collections.abc import Sequence
from typing import Any

from .channels import Channel, PollGroup, sql_type
from .records import GroupStats
from .streaks import V1_STREAK_COLUMNS

__all__ = [
    "ACTION_INSERT",
    "CATALOG_TABLES",
    "GROUP_UPDATE",
    "RUN_BEAT",
    "SCHEMA_VERSION",
    "SEGMENT_UPSERT",
    "SchemaError",
    "check_version",
    "group_counters",
    "group_table_ddl",
    "group_table_name",
    "insert_sql",
    "migrate",
    "quote_ident",
    "segment_spans",
]

SCHEMA_VERSION = 2


class SchemaError(RuntimeError):
    """The database was written by a newer trajmon, or is not a trajmon database."""


_CATALOG = """
CREATE TABLE IF NOT EXISTS runs (
    run_id INTEGER PRIMARY KEY,
    run_name TEXT NOT NULL UNIQUE COLLATE NOCASE,
    status TEXT NOT NULL,
    run_start_utc TEXT NOT NULL,
    run_start_epoch REAL NOT NULL,
    ended_utc TEXT,
    end_dt_s REAL,
    duration_s REAL,
    rotate_entries INTEGER NOT NULL,
    window_before_s REAL NOT NULL,
    window_after_s REAL NOT NULL,
    commit_interval_s REAL NOT NULL,
    stale_after_s REAL NOT NULL,
    heartbeat_utc TEXT,
    heartbeat_epoch REAL,
    heartbeat_dt_s REAL,
    actions INTEGER NOT NULL DEFAULT 0,
    errors INTEGER NOT NULL DEFAULT 0,
    lost_samples INTEGER NOT NULL DEFAULT 0,
    sessions INTEGER NOT NULL DEFAULT 1,
    message TEXT,
    config_json TEXT NOT NULL,
    snapshot_json TEXT,
    trajmon_version TEXT NOT NULL,
    pid INTEGER
);
CREATE TABLE IF NOT EXISTS poll_groups (
    run_id INTEGER NOT NULL REFERENCES runs(run_id),
    group_id INTEGER NOT NULL,
    name TEXT NOT NULL,
    kind TEXT NOT NULL,
    interval_s REAL NOT NULL,
    table_name TEXT NOT NULL,
    samples INTEGER NOT NULL DEFAULT 0,
    samples_read INTEGER NOT NULL DEFAULT 0,
    missed_ticks INTEGER NOT NULL DEFAULT 0,
    failed_reads INTEGER NOT NULL DEFAULT 0,
    read_s_sum REAL NOT NULL DEFAULT 0,
    read_s_max REAL NOT NULL DEFAULT 0,
    lateness_max_s REAL NOT NULL DEFAULT 0,
    first_dt_s REAL,
    last_dt_s REAL,
    PRIMARY KEY (run_id, group_id)
);
CREATE TABLE IF NOT EXISTS channels (
    run_id INTEGER NOT NULL REFERENCES runs(run_id),
    channel_id INTEGER NOT NULL,
    label TEXT NOT NULL,
    kind TEXT NOT NULL,
    group_id INTEGER NOT NULL,
    position INTEGER NOT NULL,
    unit TEXT NOT NULL,
    value_type TEXT NOT NULL,
    vals TEXT,
    source TEXT NOT NULL,
    instrument TEXT NOT NULL,
    tolerance_abs REAL,
    tolerance_rel REAL,
    PRIMARY KEY (run_id, channel_id),
    UNIQUE (run_id, label COLLATE NOCASE)
);
CREATE TABLE IF NOT EXISTS segments (
    run_id INTEGER NOT NULL,
    group_id INTEGER NOT NULL,
    segment_id INTEGER NOT NULL,
    first_idx INTEGER NOT NULL,
    last_idx INTEGER NOT NULL,
    first_dt_s REAL NOT NULL,
    last_dt_s REAL NOT NULL,
    rows INTEGER NOT NULL,
    PRIMARY KEY (run_id, group_id, segment_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS actions (
    run_id INTEGER NOT NULL REFERENCES runs(run_id),
    action_idx INTEGER NOT NULL,
    dt_s REAL NOT NULL,
    sample_idx INTEGER NOT NULL,
    prev_dt_s REAL NOT NULL,
    detected_at_utc TEXT NOT NULL,
    spec_label TEXT NOT NULL,
    channel_id INTEGER NOT NULL,
    old_value,
    new_value,
    delta REAL,
    window_start_s REAL NOT NULL,
    window_end_s REAL NOT NULL,
    PRIMARY KEY (run_id, action_idx)
);
CREATE INDEX IF NOT EXISTS actions_by_time ON actions (run_id, dt_s);
CREATE TABLE IF NOT EXISTS monitor_errors (
    run_id INTEGER NOT NULL REFERENCES runs(run_id),
    error_idx INTEGER NOT NULL,
    dt_s REAL NOT NULL,
    channel TEXT,
    instrument TEXT,
    error_type TEXT NOT NULL,
    message TEXT NOT NULL,
    reads INTEGER NOT NULL DEFAULT 1,
    last_dt_s REAL,
    last_message TEXT,
    PRIMARY KEY (run_id, error_idx)
);
CREATE TABLE IF NOT EXISTS sessions (
    run_id INTEGER NOT NULL REFERENCES runs(run_id),
    session_idx INTEGER NOT NULL,
    started_utc TEXT NOT NULL,
    start_dt_s REAL NOT NULL,
    end_dt_s REAL,
    status TEXT NOT NULL,
    PRIMARY KEY (run_id, session_idx)
);
"""


def quote_ident(name: str) -> str:
    """SQL identifier quoting: the only safe way to use operator-chosen names in DDL."""
    if "\x00" in name:
        raise ValueError("identifier contains a NUL character")
    return '"' + name.replace('"', '""') + '"'


def group_table_name(run_name: str, group: str) -> str:
    return f"{run_name}/{group}"


def group_table_ddl(table: str, channels: Sequence[Channel], rotate_entries: int) -> str:
    columns = ",\n    ".join(
        f"{quote_ident(c.label)} {sql_type(c.value_type)}".rstrip() for c in channels
    )
    return (
        f"CREATE TABLE {quote_ident(table)} (\n"
        "    sample_idx INTEGER PRIMARY KEY,\n"
        "    dt_s REAL NOT NULL,\n"
        "    read_s REAL NOT NULL,\n"
        "    segment_id INTEGER GENERATED ALWAYS AS"
        f" (sample_idx / {int(rotate_entries)}) VIRTUAL,\n"
        f"    {columns}\n)"
    )


def insert_sql(table: str, group: PollGroup) -> str:
    names = ", ".join(quote_ident(c.label) for c in group.channels)
    marks = ", ".join("?" for _ in range(len(group.channels) + 3))
    return f"INSERT INTO {quote_ident(table)} (sample_idx, dt_s, read_s, {names}) VALUES ({marks})"


#: The catalog's tables, as the DDL above creates them: every reader needs all of them.
CATALOG_TABLES = tuple(re.findall(r"CREATE TABLE IF NOT EXISTS (\w+)", _CATALOG))


def check_version(version: int) -> None:
    """Refuse a database a newer trajmon wrote: its tables may mean something else — for the
    writer (:func:`migrate`) and the readers alike."""
    if version > SCHEMA_VERSION:
        raise SchemaError(
            f"database schema version {version} is newer than this trajmon ({SCHEMA_VERSION}); "
            "upgrade trajmon"
        )


def switch_to_wal(conn: sqlite3.Connection, wait_s: float) -> None:
    """``PRAGMA journal_mode = WAL``, retried for up to ``wait_s`` while another connection
    holds a lock: SQLite answers that pragma "database is locked" at once, without the busy
    handler ``timeout`` installs, so two recorders creating one new file together had one fail.
    """
    deadline = time.monotonic() + wait_s
    while True:
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise
        time.sleep(0.005)


def migrate(conn: sqlite3.Connection, wait_s: float = 2.0) -> int:
    """Bring a database to :data:`SCHEMA_VERSION`; never drops data. Returns the old version.

    ``wait_s`` bounds the wait for another process that holds the file (as ``timeout`` does
    for the statements)."""
    (version,) = conn.execute("PRAGMA user_version").fetchone()
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    if version != 0 and "runs" not in tables:  # many programs set a version: not "upgrade"
        raise SchemaError(f"not a trajmon database (schema version {version}, no 'runs' table)")
    check_version(version)
    if version == 0:
        if tables:
            # trajmon commits its catalog and its version in one transaction, so tables with
            # version 0 are another program's — even with a table named ``runs``: that file was
            # switched to WAL and given trajmon's tables before the first insert failed. Read
            # again after the tables: a recorder that just created the catalog has set it.
            (version,) = conn.execute("PRAGMA user_version").fetchone()
            if version == 0:
                raise SchemaError(
                    "not a trajmon database (it has tables but no trajmon schema version)"
                )
            return migrate(conn, wait_s)
        # WAL before the catalog's transaction, not after it: a process killed inside that
        # transaction then leaves uncommitted WAL frames, which every reader ignores, rather
        # than a hot rollback journal, which read-only connections cannot roll back — each
        # `trajmon runs`, `status` or `run` pre-check refused the file until a writer came.
        switch_to_wal(conn, wait_s)
        # IMMEDIATE: the write lock first, waited for with the busy timeout. A deferred
        # transaction reads the schema first, and when another creator commits the catalog
        # meanwhile its snapshot is stale: SQLite then answers "database is locked" at once
        # (no busy wait in WAL mode), which once failed one of two recorders starting together.
        conn.executescript(
            f"BEGIN IMMEDIATE;{_CATALOG}{';'.join(_LATE_INDEXES.values())};"
            f"PRAGMA user_version = {SCHEMA_VERSION};COMMIT;"
        )
    else:
        if version < SCHEMA_VERSION:
            _upgrade(conn)
        _add_late_indexes(conn)
    return int(version)


#: Indexes added after their schema version: they change no row or meaning, so a trajmon of that
#: version reads and writes the file as before (a new version would lock it out). ``status``
#: finds the latest failed read by this one, not by sorting every streak (92 ms at 360k).
_LATE_INDEXES = {
    "monitor_errors_by_last_read": "CREATE INDEX IF NOT EXISTS monitor_errors_by_last_read"
    " ON monitor_errors (run_id, coalesce(last_dt_s, dt_s), error_idx)",  # as streaks read it
}
#: The most rows an older file's table may have for its late index to be built: that holds the
#: write lock ~0.7 µs a row, and an older recorder writing the file waits 2 s at most.
LATE_INDEX_MAX_ROWS = 100_000


def _add_late_indexes(conn: sqlite3.Connection) -> None:
    """Build the missing :data:`_LATE_INDEXES` of a file made before them. They only speed
    reads up: a file another writer holds past the busy timeout is left for the next recorder."""
    have = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    (rows,) = conn.execute("SELECT coalesce(max(rowid), 0) FROM monitor_errors").fetchone()
    missing = [sql for name, sql in _LATE_INDEXES.items() if name not in have]
    if not missing or rows > LATE_INDEX_MAX_ROWS:
        return
    try:
        conn.execute("BEGIN IMMEDIATE")
        for sql in missing:
            conn.execute(sql)
        conn.execute("COMMIT")
    except sqlite3.OperationalError as exc:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")
        if "locked" not in str(exc) and "busy" not in str(exc):
            raise


#: Version 1 -> 2: a ``monitor_errors`` row stands for a streak of failed reads (``reads``,
#: ``last_dt_s``, ``last_message``); a version-1 row is a streak of one. Only ``ALTER TABLE``,
#: which rewrites no row (:data:`trajmon.streaks.V1_STREAK_COLUMNS`).
_UPGRADES = {1: V1_STREAK_COLUMNS}


def _upgrade(conn: sqlite3.Connection) -> None:
    """Migrate in place under the write lock, reading the version again inside it: another
    recorder may have upgraded the file meanwhile, and ``ALTER TABLE`` must run once. No row is
    rewritten, so the lock is held for milliseconds whatever the file holds, and a recorder still
    writing the file (an older trajmon's too) never waits past its 2 s."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        (version,) = conn.execute("PRAGMA user_version").fetchone()
        check_version(version)
        while version < SCHEMA_VERSION:
            for statement in _UPGRADES[version]:
                conn.execute(statement)
            version += 1
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        conn.execute("COMMIT")
    except BaseException:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")
        raise


# The statements the writer runs for every batch (one transaction per commit).
SEGMENT_UPSERT = """
INSERT INTO segments
    (run_id, group_id, segment_id, first_idx, last_idx, first_dt_s, last_dt_s, rows)
VALUES (?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (run_id, group_id, segment_id) DO UPDATE SET
    first_idx = min(first_idx, excluded.first_idx),
    last_idx = max(last_idx, excluded.last_idx),
    first_dt_s = min(first_dt_s, excluded.first_dt_s),
    last_dt_s = max(last_dt_s, excluded.last_dt_s),
    rows = rows + excluded.rows
"""
ACTION_INSERT = """
INSERT INTO actions (run_id, action_idx, dt_s, sample_idx, prev_dt_s, detected_at_utc, spec_label,
    channel_id, old_value, new_value, delta, window_start_s, window_end_s)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
"""
GROUP_UPDATE = """
UPDATE poll_groups SET samples = ?, samples_read = ?, missed_ticks = ?, failed_reads = ?,
    read_s_sum = ?, read_s_max = ?, lateness_max_s = ?,
    first_dt_s = coalesce(first_dt_s, ?), last_dt_s = coalesce(?, last_dt_s)
WHERE run_id = ? AND group_id = ?
"""


def group_counters(
    run_id: int,
    gid: int,
    stats: GroupStats,
    samples: int,
    first_dt_s: float | None = None,
    last_dt_s: float | None = None,
) -> tuple[Any, ...]:
    """:data:`GROUP_UPDATE`'s parameters, for every commit and for the run's end alike, so the
    run record's counters are written one way. ``samples`` is what is committed once this
    statement's transaction is; a ``None`` first/last ``dt_s`` keeps the stored one."""
    return (
        samples,
        stats.samples_read,
        stats.missed_ticks,
        stats.failed_reads,
        stats.read_s_sum,
        stats.read_s_max,
        stats.lateness_max_s,
        first_dt_s,
        last_dt_s,
        run_id,
        gid,
    )


RUN_BEAT = """
UPDATE runs SET heartbeat_utc = ?, heartbeat_epoch = ?, heartbeat_dt_s = ?, actions = ?, errors = ?
WHERE run_id = ?
"""


def segment_spans(
    run_id: int, gid: int, rows: list[tuple[Any, ...]], rotate: int
) -> list[tuple[Any, ...]]:
    """Per-segment spans of a batch (rows are in sample_idx order)."""
    seg = rows[0][0] // rotate
    if rows[-1][0] // rotate == seg:  # almost every batch: one segment, no loop
        return [(run_id, gid, seg, rows[0][0], rows[-1][0], rows[0][1], rows[-1][1], len(rows))]
    out: list[tuple[Any, ...]] = []
    start = 0
    for i in range(1, len(rows) + 1):
        if i == len(rows) or rows[i][0] // rotate != seg:
            first, last = rows[start], rows[i - 1]
            out.append((run_id, gid, seg, first[0], last[0], first[1], last[1], i - start))
            if i < len(rows):
                seg, start = rows[i][0] // rotate, i
    return out
