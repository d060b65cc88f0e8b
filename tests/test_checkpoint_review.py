"""Background checkpoints (src/trajmon/checkpoint.py) against another checkpointer and a stop.

Found by a review:

- a PASSIVE checkpoint that finds another connection checkpointing (a second recorder on the
  same file in the same backlog, a ``sqlite3`` shell) answers busy with -1 for both page
  counts; read as "0 pages left", it ended the backlog, and the writer's next commit copied the
  whole backlog itself, the stall the background checkpoints exist to avoid;
- at the run's end the writer waited for a checkpoint in flight before the end was recorded,
  with nothing beating the heartbeat: hundreds of MB after a long reader let go take seconds
  (1.5 s for 310 MB here, more on a slow disk), and past ``stale_after_s`` the run read as
  ``crashed``.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path

import pytest

from trajmon.checkpoint import AUTOCHECKPOINT_PAGES, Checkpoints

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX file locks")

#: The byte of the ``-shm`` file SQLite's unix VFS locks for the checkpointer
#: (``UNIX_SHM_BASE`` 120 + ``WAL_CKPT_LOCK`` 1).
CKPT_LOCK_BYTE = 121

_HOLDER = """
import fcntl, os, struct, sys
fd = os.open(sys.argv[1], os.O_RDWR)
fcntl.fcntl(fd, fcntl.F_SETLK, struct.pack("hhqqi", fcntl.F_WRLCK, 0, int(sys.argv[2]), 1, 0))
print("held", flush=True)
sys.stdin.read()
"""


def logged(db: Path, pages: int) -> sqlite3.Connection:
    """A WAL database with about ``pages`` pages in its log, none checkpointed; the returned
    connection keeps the file open (the log would be checkpointed away when the last one
    closes)."""
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA wal_autocheckpoint = 0")
    conn.execute("CREATE TABLE t (x)")
    conn.execute("BEGIN")
    conn.executemany("INSERT INTO t VALUES (randomblob(3000))", ([] for _ in range(pages)))
    conn.execute("COMMIT")
    return conn


@contextmanager
def checkpoint_lock_held(db: Path) -> Iterator[None]:
    """Another process holds the checkpoint lock, as one does while it checkpoints."""
    with subprocess.Popen(
        [sys.executable, "-c", _HOLDER, f"{db}-shm", str(CKPT_LOCK_BYTE)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    ) as holder:
        assert holder.stdin is not None and holder.stdout is not None
        try:
            assert holder.stdout.readline() == "held\n"
            yield
        finally:
            holder.stdin.close()  # the holder exits, and its lock goes with it
            holder.wait(timeout=10)


def growing(start: int = 40 << 20) -> Iterator[int]:
    size = start
    while True:
        yield size
        size += 1 << 20


def test_a_checkpoint_that_finds_another_checkpointing_does_not_end_the_backlog(
    tmp_path: Path,
) -> None:
    db = tmp_path / "log.db"
    with closing(logged(db, 2 * AUTOCHECKPOINT_PAGES)):
        sizes = growing()
        checkpoints = Checkpoints(db, backlog_bytes=32 << 20, wal_size=lambda: next(sizes))
        try:
            with checkpoint_lock_held(db):
                assert checkpoints.after_commit(0.0) == 0, "a backlog"
                checkpoints.settle()
                assert checkpoints.after_commit(1.0) is None, "nothing copied: still a backlog"
                assert checkpoints.backlog
                checkpoints.settle()
            assert checkpoints.after_commit(2.0) is None, "the lock is free: copy"
            checkpoints.settle()
            assert checkpoints.after_commit(3.0) == AUTOCHECKPOINT_PAGES, "caught up"
            assert checkpoints.failures == 0
        finally:
            checkpoints.stop()


def test_stop_interrupts_a_checkpoint_in_flight_rather_than_wait_for_it(tmp_path: Path) -> None:
    db = tmp_path / "log.db"
    with closing(logged(db, 40_000)) as writer:  # ~120 MB of log: copying it takes a while
        sizes = growing()
        checkpoints = Checkpoints(db, backlog_bytes=32 << 20, wal_size=lambda: next(sizes))
        assert checkpoints.after_commit(0.0) == 0, "a backlog: a checkpoint is handed over"
        checkpoints.stop()
        checkpoints.stop()  # a second stop is nothing
        assert (checkpoints.runs, checkpoints.failures) == (0, 0), "interrupted, not failed"
        _, log_pages, copied = writer.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        assert log_pages == copied > 40_000, "nothing lost: the log is all there to copy"


def test_the_lock_byte_is_sqlites_checkpoint_lock(tmp_path: Path) -> None:
    """What the tests above rely on: holding that byte is what makes a checkpoint busy."""
    db = tmp_path / "log.db"
    with closing(logged(db, 10)) as conn:
        with checkpoint_lock_held(db):
            assert conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone() == (1, -1, -1)
        busy, _, _ = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        assert busy == 0
