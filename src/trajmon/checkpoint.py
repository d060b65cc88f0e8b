"""WAL checkpoints beside the writer's commits, never inside them.

SQLite's automatic checkpoint runs inside the commit that pushes the write-ahead log past 1000
pages. Normally that is a few MB and a few milliseconds. But while a reader holds an old
snapshot (a DB browser left open, a notebook with an unfinished cursor, a long export) nothing
can be checkpointed and the log grows: ~300 MB an hour at the defaults. When the reader lets go,
the next commit copied the whole backlog into the database. That commit also writes the
heartbeat, so with ~800 MB of backlog the heartbeat went silent for 5-7 s: the live run read as
``crashed``, and a ``--resume`` took it over.

So while the writer runs, its connection checkpoints nothing itself (``wal_autocheckpoint =
0``). After a commit, at most once a second of the writer's clock, a ``PASSIVE`` checkpoint is
handed to a thread and connection of its own, and the writer goes on without waiting for it: a
passive checkpoint never takes the write lock, so commits — and the heartbeat — continue while
it copies. No timer and no task: the writer's commits are the only thing that grows the log.
``journal_size_limit`` (set by :func:`trajmon.connection.open_connection`) then cuts the file
back once the log restarts, instead of it keeping its peak size for the rest of the run.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import AsyncIterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import aiosqlite
import anyio

__all__ = ["AUTOCHECKPOINT_PAGES", "CHECKPOINT_EVERY_S", "Checkpoints", "checkpoints_beside"]

#: How often the log is copied into the database. At the defaults a second of commits is a few
#: dozen pages; at 1 kHz x 12 channels a few hundred: about what one autocheckpoint copied.
CHECKPOINT_EVERY_S = 1.0
#: SQLite's default, restored on the writer's connection once the writer stops, so the run's
#: last transactions and the connection's close checkpoint as they always did.
AUTOCHECKPOINT_PAGES = 1000


class Checkpoints:
    """Passive checkpoints of one database on a thread and connection of their own."""

    def __init__(self, path: Path | None, every_s: float = CHECKPOINT_EVERY_S) -> None:
        self.path = path
        self.every_s = every_s
        #: Checkpoints done, failed (each failure is retried a second later), and why the
        #: latest failed: a log that cannot be copied only grows, and a storage fault that
        #: matters fails the writer's own commits, which end the run with their message.
        self.runs = 0
        self.failures = 0
        self.last_error: str | None = None
        self._last = -float("inf")
        self._pending: Future[None] | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._conn: sqlite3.Connection | None = None

    def after_commit(self, now: float) -> None:
        """Called by the writer after each commit, on the loop: hands a checkpoint to the
        thread when one is due and none is still running. Never waits."""
        if self._executor is None or now - self._last < self.every_s:
            return
        if self._pending is not None and not self._pending.done():
            return
        self._last = now
        self._pending = self._executor.submit(self._checkpoint)

    def settle(self) -> None:
        """Blocking: wait for the checkpoint in flight, if any (for tests and tools)."""
        pending = self._pending
        if pending is not None:
            pending.result()

    def _checkpoint(self) -> None:
        try:
            if self._conn is None:
                self._conn = sqlite3.connect(self.path or "", isolation_level=None)
            self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        except sqlite3.Error as exc:
            self.failures += 1
            self.last_error = str(exc)
        else:
            self.runs += 1

    def _close(self) -> None:
        """On the checkpoint thread, after any checkpoint still running there."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def start(self) -> None:
        if self.path is not None:
            self._executor = ThreadPoolExecutor(1, thread_name_prefix="trajmon-checkpoint")

    def stop(self) -> None:
        """Blocking: waits for a checkpoint in flight, then closes the connection."""
        executor, self._executor = self._executor, None
        if executor is not None:
            executor.submit(self._close)
            executor.shutdown(wait=True)


async def _database_file(conn: aiosqlite.Connection) -> Path | None:
    async with conn.execute("PRAGMA database_list") as cursor:
        for _, name, file in await cursor.fetchall():
            if name == "main" and file:
                return Path(file)
    return None  # an in-memory database: no log to copy


@contextlib.asynccontextmanager
async def checkpoints_beside(
    conn: aiosqlite.Connection, every_s: float = CHECKPOINT_EVERY_S
) -> AsyncIterator[Checkpoints]:
    """For as long as the block runs, ``conn`` leaves checkpoints to the :class:`Checkpoints`
    it yields (call its :meth:`~Checkpoints.after_commit` after each commit)."""
    checkpoints = Checkpoints(await _database_file(conn), every_s)
    if checkpoints.path is not None:
        await conn.execute("PRAGMA wal_autocheckpoint = 0")
    checkpoints.start()
    try:
        yield checkpoints
    finally:
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(checkpoints.stop)
            if checkpoints.path is not None:
                with contextlib.suppress(sqlite3.Error, ValueError):  # a broken connection
                    await conn.execute(f"PRAGMA wal_autocheckpoint = {AUTOCHECKPOINT_PAGES}")
