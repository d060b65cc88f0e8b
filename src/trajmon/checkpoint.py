"""A reader's backlog of the write-ahead log is checkpointed beside the writer, not in its commits.

SQLite checkpoints automatically inside the commit that pushes the write-ahead log past 1000
pages: a few MB and a few milliseconds, and right after it the log restarts from its beginning.
That stays the writer's normal way. But while a reader holds an old snapshot (a DB browser left
open, a notebook with an unfinished cursor, a long export) nothing can be checkpointed and the
log grows: ~300 MB an hour at the defaults. When the reader let go, the next commit copied the
whole backlog into the database. That commit also writes the heartbeat, so with ~800 MB of
backlog the heartbeat went silent for 5-7 s: the live run read as ``crashed``, and a
``--resume`` took it over.

So once a second (of the writer's clock, after a commit) the writer looks at the ``-wal`` file's
size. A log past :data:`BACKLOG_BYTES` and still growing is a backlog: the writer's connection
stops checkpointing (``wal_autocheckpoint = 0``), and a ``PASSIVE`` checkpoint is handed to a
thread and connection of its own every second, without the writer waiting for it — a passive
checkpoint never takes the write lock, so commits and the heartbeat go on while it copies. Once
a checkpoint leaves less than 1000 pages uncopied, the writer's own checkpoints resume, the log
restarts at the next commit, and ``journal_size_limit`` (set by
:func:`trajmon.connection.open_connection`) cuts its file back.

Background checkpoints alone were tried and not kept: writing flat out, the log was never all
copied at the moment a commit began (when SQLite restarts it), so it grew to 138 MB over a
1M-row run and the last rows went 10-20 % slower than the first.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from pathlib import Path

import aiosqlite
import anyio

from .files import wal_file

__all__ = [
    "AUTOCHECKPOINT_PAGES",
    "BACKLOG_BYTES",
    "CHECK_EVERY_S",
    "Checkpoints",
    "checkpoints_beside",
]

#: SQLite's default autocheckpoint threshold, in pages: the writer's own setting outside a
#: backlog, and what a background checkpoint must get the uncopied log under to end one.
AUTOCHECKPOINT_PAGES = 1000
#: A growing log past this is a reader's backlog (with the writer's own checkpoints the file
#: stays near 1000 pages, ~4 MiB, plus a commit's; a larger one is cut back to 8 MiB).
BACKLOG_BYTES = 32 * 1024 * 1024
#: How often the writer looks at the log's size, and hands over a checkpoint in a backlog.
CHECK_EVERY_S = 1.0
#: How often :meth:`Checkpoints.stop` repeats its interrupt until the checkpoint has ended.
_INTERRUPT_EVERY_S = 0.005


def _file_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


class Checkpoints:
    """The writer's view of its database's log; background checkpoints while in a backlog."""

    def __init__(
        self,
        path: Path,
        *,
        every_s: float = CHECK_EVERY_S,
        backlog_bytes: int = BACKLOG_BYTES,
        wal_size: Callable[[], int] | None = None,
    ) -> None:
        self.path = path
        self.every_s = every_s
        self.backlog_bytes = backlog_bytes
        wal = wal_file(path)
        self._wal_size = wal_size or (lambda: _file_size(wal))
        #: In a backlog: the writer's own checkpoints are off and this thread's are on.
        self.backlog = False
        #: Backlogs entered, background checkpoints done and failed (a failure is retried a
        #: second later: a log that cannot be copied only grows, and a storage fault that
        #: matters fails the writer's own commits), and why the latest one failed.
        self.backlogs = 0
        self.runs = 0
        self.failures = 0
        self.last_error: str | None = None
        self._last = -float("inf")
        self._size = 0
        self._caught_up = False
        self._stopping = False
        self._pending: Future[None] | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._conn: sqlite3.Connection | None = None

    def after_commit(self, now: float) -> int | None:
        """Called by the writer after each commit, on the loop; never waits. Returns the
        ``wal_autocheckpoint`` its connection should switch to, or None to keep it."""
        if now - self._last < self.every_s:
            return None
        self._last = now
        size = self._wal_size()
        grew, self._size = size > self._size, size
        if not self.backlog:
            if size > self.backlog_bytes and grew:
                self.backlog = True
                self.backlogs += 1
                self._caught_up = False
                self._submit()
                return 0
            return None
        if self._pending is not None and not self._pending.done():
            return None
        if self._caught_up:
            self.backlog = False
            return AUTOCHECKPOINT_PAGES
        self._submit()
        return None

    def settle(self) -> None:
        """Blocking: wait for the background checkpoint in flight, if any (tests and tools)."""
        pending = self._pending
        if pending is not None:
            pending.result()

    def _submit(self) -> None:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(1, thread_name_prefix="trajmon-checkpoint")
        self._pending = self._executor.submit(self._checkpoint)

    def _checkpoint(self) -> None:
        if self._stopping:
            return
        try:
            if self._conn is None:
                # mode=rw: a database deleted or moved mid-run must not be re-created here,
                # empty, where the operator will look for the run.
                uri = f"{self.path.resolve().as_uri()}?mode=rw"
                self._conn = sqlite3.connect(uri, uri=True, isolation_level=None)
            row = self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        except sqlite3.Error as exc:
            if not self._stopping:  # else stop() interrupted it: not a failure
                self.failures += 1
                self.last_error = str(exc)
        else:
            self.runs += 1
            busy, log_pages, copied = row
            # Busy: another connection was checkpointing (a second recorder on this file, a
            # sqlite3 shell) and SQLite answers -1 for both counts. Nothing is known then; taken
            # as 0 left, it ended the backlog and the writer's next commit copied all of it.
            self._caught_up = not busy and log_pages - copied < AUTOCHECKPOINT_PAGES

    def _close(self) -> None:
        """On the checkpoint thread, after any checkpoint still running there."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def stop(self) -> None:
        """Blocking: interrupts a checkpoint in flight, then closes its connection.

        Not waited for: the run's end is recorded only after this, and until then nothing beats
        the heartbeat. Copying hundreds of MB of backlog takes seconds (more on a slow disk), and
        a run stopped meanwhile read as ``crashed``. An interrupted checkpoint loses nothing: the
        log stays, and the writer's own checkpoints (back on at the end) or its closing copy it.
        """
        executor, self._executor = self._executor, None
        if executor is None:
            return
        self._stopping = True
        pending = self._pending
        # An interrupt reaches only a statement already running (SQLite forgets one that comes
        # before), so it is repeated until the checkpoint has ended.
        while pending is not None and not pending.done():
            conn = self._conn
            if conn is not None:
                conn.interrupt()
            wait([pending], timeout=_INTERRUPT_EVERY_S)
        executor.submit(self._close)
        executor.shutdown(wait=True)


async def _database_file(conn: aiosqlite.Connection) -> Path | None:
    async with conn.execute("PRAGMA database_list") as cursor:
        for _, name, file in await cursor.fetchall():
            if name == "main" and file:
                return Path(file)
    return None  # an in-memory database: no log


@contextlib.asynccontextmanager
async def checkpoints_beside(conn: aiosqlite.Connection) -> AsyncIterator[Checkpoints | None]:
    """The :class:`Checkpoints` of ``conn``'s database for as long as the block runs (None for
    an in-memory one: it has no log); on the way out its thread is stopped and ``conn``
    checkpoints as SQLite does by default again."""
    path = await _database_file(conn)
    if path is None:
        yield None
        return
    checkpoints = Checkpoints(path)
    try:
        yield checkpoints
    finally:
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(checkpoints.stop)
            if checkpoints.backlog:
                with contextlib.suppress(sqlite3.Error, ValueError):  # a broken connection
                    await conn.execute(f"PRAGMA wal_autocheckpoint = {AUTOCHECKPOINT_PAGES}")
