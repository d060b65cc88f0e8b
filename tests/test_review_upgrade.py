"""Schema version 1 -> 2 on a file another recorder is still writing (src/trajmon/streaks.py).

Found by a review: a version-1 file keeps one ``monitor_errors`` row per failed read, millions
after a night's outage. The upgrade rewrote all of them in one transaction (3.7 M rows: 12.7 s
of write lock). An older trajmon still recording that file (``pip install -U`` while a run went
on, then a second ``trajmon run`` on the same database) waited its 2 s for the lock, failed
"database is locked" and could not even record its end. Rows it wrote after the upgrade also
had no ``last_dt_s``, so ``status`` ranked them last and never showed them as the last error.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from contextlib import closing
from pathlib import Path

from test_error_streaks import version_1

from trajmon.queries import connect_readonly, resolve_run
from trajmon.schema import SCHEMA_VERSION, migrate
from trajmon.status import run_status
from trajmon.streaks import ERROR_COLUMNS

#: The wait a recorder allows for the write lock (connection.open_connection: busy_timeout).
WRITER_WAIT_S = 2.0
#: How often that recorder commits (0.25 s by default; more often here, to meet the lock).
COMMIT_EVERY_S = 0.05
#: The longest the test lets that recorder wait for the lock: a quarter of what it allows,
#: so a slower machine still passes while anything near the real limit fails.
LONGEST_WAIT_S = WRITER_WAIT_S / 4
#: Version-1 rows (an hour and a half of a 12-channel outage at 10 Hz): rewritten in one
#: transaction they held the lock for ~1.4 s on the machine this was written on.
V1_ROWS = 600_000
#: A Nanonis driver's message while the controller is away (as long as the real ones).
AWAY = "not connected to Nanonis TCP interface at 127.0.0.1:6501; next attempt in 5.0 s"
#: A version-1 recorder's error insert (schema version 1's ERROR_INSERT).
V1_INSERT = (
    "INSERT INTO monitor_errors (run_id, error_idx, dt_s, channel, instrument, error_type,"
    " message) VALUES (1, ?, ?, 'Bias', 'stm', 'ConnectionError', ?)"
)


def test_an_upgrade_never_locks_out_a_recorder_still_writing_the_file(tmp_path: Path) -> None:
    db = tmp_path / "v1.db"
    version_1(db, ((i, i * 0.01, AWAY) for i in range(V1_ROWS)))
    # The older recorder: a short write transaction every COMMIT_EVERY_S, each waiting at
    # most WRITER_WAIT_S for the lock, as its commits do.
    old = sqlite3.connect(db, isolation_level=None, timeout=WRITER_WAIT_S)
    old.execute("PRAGMA journal_mode = WAL")
    upgraded = threading.Event()
    failures: list[str] = []
    waits: list[float] = []
    upgrade_failed: list[BaseException] = []
    commits = 0

    def upgrade() -> None:
        try:
            with closing(sqlite3.connect(db, timeout=WRITER_WAIT_S)) as conn:
                migrate(conn)
        except BaseException as exc:  # reported by the test below
            upgrade_failed.append(exc)
        finally:
            upgraded.set()

    thread = threading.Thread(target=upgrade)
    thread.start()
    try:
        idx = V1_ROWS
        while not upgraded.wait(COMMIT_EVERY_S):
            try:
                asked = time.monotonic()
                old.execute("BEGIN IMMEDIATE")
                waits.append(time.monotonic() - asked)
                old.execute(V1_INSERT, (idx, idx * 0.01, f"commit {idx}"))
                old.execute("UPDATE runs SET heartbeat_epoch = heartbeat_epoch + 0.25")
                old.execute("COMMIT")
                commits += 1
                idx += 1
            except sqlite3.OperationalError as exc:
                failures.append(str(exc))
                break
    finally:
        thread.join()
        old.close()
    assert upgrade_failed == []
    assert failures == [], f"the older recorder's commit failed after {commits} commits"
    longest = max(waits, default=0.0)  # none: the upgrade was over before the first commit
    assert longest < LONGEST_WAIT_S, f"it waited {longest:.2f} s for the write lock"
    with closing(sqlite3.connect(db)) as conn:
        (version,) = conn.execute("PRAGMA user_version").fetchone()
        raw = conn.execute(
            "SELECT reads, last_dt_s, last_message FROM monitor_errors WHERE error_idx = 0"
        ).fetchone()
        (one_read,) = conn.execute(
            "SELECT count(*) FROM monitor_errors WHERE reads = 1 AND last_dt_s IS NULL"
        ).fetchone()
    assert version == SCHEMA_VERSION
    # Not rewritten (that is what held the lock): NULL is a streak of one, as readers take it.
    assert raw == (1, None, None)
    assert one_read == V1_ROWS + commits
    with closing(connect_readonly(db)) as conn:
        (read,) = conn.execute(
            f"SELECT {ERROR_COLUMNS} FROM monitor_errors WHERE error_idx = 0"
        ).fetchall()
    assert tuple(read) == (1, 0.0, AWAY), "a streak of one read"


def test_rows_an_older_recorder_writes_after_the_upgrade_read_as_one_read_streaks(
    tmp_path: Path,
) -> None:
    db = tmp_path / "v1.db"
    version_1(db, ((i, i * 0.01, AWAY) for i in range(3)))
    with closing(sqlite3.connect(db)) as conn:
        migrate(conn)
    with closing(sqlite3.connect(db, isolation_level=None)) as old:  # still on version 1
        old.execute(V1_INSERT, (3, 5.0, "the older recorder's latest"))
    with closing(connect_readonly(db)) as conn:
        last = run_status(conn, resolve_run(conn, "old"))["last_error"]
    assert last is not None
    assert (last["dt_s"], last["reads"], last["last_dt_s"], last["last_message"]) == (
        5.0,
        1,
        5.0,
        "the older recorder's latest",
    ), "the error with the latest failed read, a streak of one"
