"""The writer's SQLite connection: opened in WAL mode, written one transaction per call.

Split from :mod:`trajmon.writer` so that the one place reaching into aiosqlite's internals
(:func:`on_connection_thread`) stands alone, next to the transaction it runs.
"""

from __future__ import annotations

import contextlib
import errno
import sqlite3
import stat
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any, TypeVar, cast

import aiosqlite
import anyio

from .schema import ACTION_INSERT, GROUP_UPDATE, RUN_BEAT, SEGMENT_UPSERT
from .streaks import ERROR_UPSERT

__all__ = [
    "JOURNAL_SIZE_LIMIT",
    "RunTakenOverError",
    "StorageError",
    "check_owner",
    "immediate_transaction",
    "not_a_file",
    "on_connection_thread",
    "open_connection",
    "read_snapshot",
    "write_transaction",
]

T = TypeVar("T")


class StorageError(RuntimeError):
    """SQLite refused a write (disk full, read-only file, locked by another writer)."""


class RunTakenOverError(StorageError):
    """Another process resumed this run while this one was not heard from (suspended, say, past
    ``stale_after_s``): the run's record is that process's now, and this one must not write to
    it again — not its samples (their indices are taken), not its counters, not its end."""


def check_owner(db: sqlite3.Connection, run_id: int, session_idx: int) -> None:
    """Inside a write transaction: raise :class:`RunTakenOverError` unless ``session_idx`` is
    still the run's newest session (every resume adds one, under the same write lock)."""
    row = db.execute("SELECT sessions FROM runs WHERE run_id = ?", (run_id,)).fetchone()
    if row is None or int(row[0]) != session_idx + 1:
        raise RunTakenOverError(
            "another process resumed this run while this one was not heard from"
            f" (session {session_idx} of {'?' if row is None else row[0]}); stopped writing to it"
        )


def write_transaction(
    db: sqlite3.Connection,
    owner: tuple[int, int],
    inserts: list[tuple[str, list[tuple[Any, ...]], list[tuple[Any, ...]]]],
    actions: list[tuple[Any, ...]],
    errors: list[tuple[Any, ...]],
    group_rows: list[tuple[Any, ...]],
    beat: tuple[Any, ...],
) -> None:
    """One commit, run on the connection's thread: every group's rows and segment spans, the
    actions and errors, the live counters and the heartbeat — all or nothing, and only while
    ``owner`` (run id, session index) is still the session recording the run."""
    db.execute("BEGIN IMMEDIATE")
    try:
        check_owner(db, *owner)
        for sql, rows, spans in inserts:
            db.executemany(sql, rows)
            db.executemany(SEGMENT_UPSERT, spans)
        if actions:
            db.executemany(ACTION_INSERT, actions)
        if errors:
            db.executemany(ERROR_UPSERT, errors)
        db.executemany(GROUP_UPDATE, group_rows)
        db.execute(RUN_BEAT, beat)
        db.execute("COMMIT")
    except BaseException:
        with contextlib.suppress(sqlite3.Error):
            db.execute("ROLLBACK")
        raise


def immediate_transaction(conn: aiosqlite.Connection) -> AbstractAsyncContextManager[None]:
    """``BEGIN IMMEDIATE`` … ``COMMIT`` for the run record's own writes (start, resume, end).

    On any failure, cancellation included, the ``ROLLBACK`` is awaited in a shielded scope, so
    the block is left with the connection outside any transaction, and a failing ``ROLLBACK``
    (the connection already broken, say) never hides the error that caused it.
    """
    return _transaction(conn, "BEGIN IMMEDIATE")


def read_snapshot(conn: aiosqlite.Connection) -> AbstractAsyncContextManager[None]:
    """A deferred transaction for reads that must agree with each other (one WAL snapshot)
    and may take long: unlike :func:`immediate_transaction`, it blocks no other writer."""
    return _transaction(conn, "BEGIN")


@contextlib.asynccontextmanager
async def _transaction(conn: aiosqlite.Connection, begin: str) -> AsyncIterator[None]:
    await conn.execute(begin)
    try:
        yield
        await conn.execute("COMMIT")
    except BaseException:
        with anyio.CancelScope(shield=True), contextlib.suppress(sqlite3.Error):
            await conn.execute("ROLLBACK")
        raise


async def on_connection_thread(conn: aiosqlite.Connection, fn: Callable[..., T], *args: Any) -> T:
    """``fn(sqlite3_connection, *args)`` on ``conn``'s own thread, in one hop.

    aiosqlite has no public call for this; ``Connection._execute`` is the one every public
    method goes through (and ``_conn`` its sqlite3 connection). Kept to this one function, and
    tests/test_writer.py fails loudly if a new aiosqlite changes either.
    """
    return cast(T, await conn._execute(fn, conn._conn, *args))  # type: ignore[no-untyped-call]


def not_a_file(path: Path) -> str | None:
    """What ``path`` is when it exists but cannot be a database file ("a FIFO"), else None.
    SQLite opening a FIFO waits for a writer forever, deaf to Ctrl-C and SIGTERM; a symlink
    loop does not "exist" (``Path.exists``), so it was "database not found" beside its name."""
    try:
        mode = path.stat().st_mode
    except OSError as exc:
        return "a symlink loop" if exc.errno == errno.ELOOP else None
    kinds = {stat.S_ISREG: None, stat.S_ISDIR: "a directory", stat.S_ISFIFO: "a FIFO"}
    return next((kind for test, kind in kinds.items() if test(mode)), "a device or socket")


#: Bytes the ``-wal`` file keeps once its log restarts (see :func:`open_connection`).
JOURNAL_SIZE_LIMIT = 8 * 1024 * 1024


async def open_connection(path: Path) -> aiosqlite.Connection:
    """The writer's connection: WAL so readers never block it, explicit transactions."""
    conn = await aiosqlite.connect(path, isolation_level=None)
    try:
        await conn.execute("PRAGMA busy_timeout = 2000")
        cursor = await conn.execute("PRAGMA journal_mode = WAL")
        row = await cursor.fetchone()
        if row is None or str(row[0]).lower() != "wal":
            raise StorageError(f"{path}: cannot switch the database to WAL mode (got {row!r})")
        await conn.execute("PRAGMA synchronous = NORMAL")
        # Once the log restarts (its content all checkpointed), cut its file back to 8 MiB: a
        # log grown under a long reader otherwise keeps its peak size until the run ends.
        await conn.execute(f"PRAGMA journal_size_limit = {JOURNAL_SIZE_LIMIT}")
    except BaseException:
        await conn.close()
        raise
    return conn
