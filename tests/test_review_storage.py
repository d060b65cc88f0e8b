"""Review of the storage side under faults: a database file deleted or moved while recording,
another program's SQLite file given as the database."""

from __future__ import annotations

import os
import sqlite3
from contextlib import closing
from pathlib import Path

import anyio
import pytest
from test_writer import committed, count, sample, started_writer

from simulators.qcodes_sim import SimulatedSTM
from trajmon import MonitorConfig, Recorder
from trajmon.clock import FakeClock
from trajmon.connection import StorageError
from trajmon.queries import QueryError, connect_readonly
from trajmon.schema import SchemaError, migrate


def _rescued(db: Path) -> Path:
    """The one copy the writer saved beside ``db``, which is gone."""
    assert not db.exists()
    (copy,) = db.parent.glob(f"{db.stem}.rescued-*{db.suffix}")
    return copy


async def test_a_database_deleted_while_recording_fails_the_run_and_keeps_a_copy(
    db_path: Path,
) -> None:
    """SQLite goes on committing to a deleted file: the run ended ``completed``, exit 0, and
    every row was gone once the connection closed."""
    clock = FakeClock()
    with pytest.raises(ExceptionGroup) as info:
        async with started_writer(db_path, clock) as (writer, sink, _, _):
            for i in range(5):
                await sink.send(sample(0, i, float(i), 0.5))
            await clock.advance(0.25)
            await committed(writer, 2)
            os.unlink(db_path)
            with anyio.fail_after(30):
                await clock.advance(1.0)  # the next heartbeat's commit looks at the file
                await anyio.sleep_forever()  # the writer's failure cancels this
    assert info.group_contains(StorageError, match="deleted or replaced while recording")
    copy = _rescued(db_path)
    assert str(copy) in str(info.value.exceptions[0])
    assert count(copy, "w/signals") == 5
    with closing(sqlite3.connect(copy)) as conn:
        assert conn.execute("SELECT run_name FROM runs").fetchall() == [("w",)]
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]


async def test_a_database_moved_away_in_the_last_second_is_noticed_at_the_end(
    db_path: Path,
) -> None:
    """Renamed, the file kept what was checkpointed only: the commits were in a log that was
    no longer the renamed file's. The last commit (the queue drained) always looks."""
    clock = FakeClock()
    moved = db_path.with_name("elsewhere.db")
    with pytest.raises(ExceptionGroup) as info:
        async with started_writer(db_path, clock) as (_, sink, _, _):
            for i in range(7):
                await sink.send(sample(0, i, float(i), 0.5))
            os.rename(db_path, moved)
    assert info.group_contains(StorageError, match="deleted or replaced while recording")
    assert count(_rescued(db_path), "w/signals") == 7


async def test_a_database_still_in_place_is_not_copied(db_path: Path) -> None:
    clock = FakeClock()
    async with started_writer(db_path, clock) as (writer, sink, _, _):
        await sink.send(sample(0, 0, 1.0, 0.5))
        for _ in range(8):
            await clock.advance(0.25)
        await committed(writer, 3)
    assert count(db_path, "w/signals") == 1
    assert not list(db_path.parent.glob("*.rescued-*"))


def _foreign(db: Path) -> None:
    """Another program's database, with a table that happens to be called ``runs``."""
    with closing(sqlite3.connect(db)) as conn:
        conn.execute("CREATE TABLE runs (id INTEGER PRIMARY KEY, name TEXT)")
        conn.execute("INSERT INTO runs VALUES (1, 'exp 1')")
        conn.commit()


def test_another_programs_database_with_a_runs_table_is_refused_untouched(
    db_path: Path,
) -> None:
    """It was switched to WAL, given trajmon's six tables and stamped version 2 before the
    first insert failed on it."""
    _foreign(db_path)
    with (
        closing(sqlite3.connect(db_path)) as conn,
        pytest.raises(SchemaError, match="not a trajmon database"),
    ):
        migrate(conn)
    with closing(sqlite3.connect(db_path)) as conn:
        assert conn.execute("PRAGMA user_version").fetchone() == (0,)
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("delete",)
        tables = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
    assert tables == [("runs",)]


async def test_a_recorder_on_another_programs_database_names_the_file(db_path: Path) -> None:
    _foreign(db_path)
    stm = SimulatedSTM("stm", seed=1)
    try:
        config = MonitorConfig(run_name="x", db=db_path, duration_s=0.5)
        with pytest.raises(SchemaError, match="not a trajmon database") as info:
            await Recorder(config, {"stm": stm}).run()
    finally:
        stm.close()
    assert str(db_path) in str(info.value)
    with closing(sqlite3.connect(db_path)) as conn:
        assert conn.execute("PRAGMA user_version").fetchone() == (0,)


def test_a_database_created_meanwhile_by_another_recorder_is_taken(db_path: Path) -> None:
    """The catalog and its version are committed together: tables found with version 0 read
    before the version is read again is the other creator's commit landing in between."""
    with closing(sqlite3.connect(db_path)) as first:
        migrate(first)

    class Late(sqlite3.Connection):
        """Reports version 0 at the first look, as before the other recorder committed."""

        looks = 0

        def execute(self, sql: str, *args: object) -> sqlite3.Cursor:  # type: ignore[override]
            if sql == "PRAGMA user_version" and Late.looks == 0:
                Late.looks += 1
                return super().execute("SELECT 0")
            return super().execute(sql, *args)

    with closing(sqlite3.connect(db_path, factory=Late)) as conn:
        migrate(conn)  # not refused as another program's
        assert Late.looks == 1
        assert conn.execute("PRAGMA user_version").fetchone() == (2,)


@pytest.mark.parametrize("version", [1, 2, 7])
def test_another_programs_database_with_a_schema_version_is_not_a_trajmon_one(
    db_path: Path, version: int
) -> None:
    """Many programs set ``user_version``: such a file was "newer than this trajmon; upgrade
    trajmon" (7), or a storage failure "no such table: monitor_errors" (1) or "runs" (2)."""
    with closing(sqlite3.connect(db_path)) as conn:
        conn.execute("CREATE TABLE items (x)")
        conn.execute(f"PRAGMA user_version = {version}")
        conn.commit()
    with (
        closing(sqlite3.connect(db_path)) as conn,
        pytest.raises(SchemaError, match=r"not a trajmon database \(schema version"),
    ):
        migrate(conn)


@pytest.mark.parametrize("version", [1, 2, 7])
def test_readers_call_another_programs_versioned_database_not_a_trajmon_one(
    db_path: Path, version: int
) -> None:
    """``trajmon runs`` on another program's file with ``user_version`` 7 said "newer than this
    trajmon; upgrade trajmon"."""
    with closing(sqlite3.connect(db_path)) as conn:
        conn.execute("CREATE TABLE items (x)")
        conn.execute(f"PRAGMA user_version = {version}")
        conn.commit()
    with pytest.raises(QueryError, match=r"is not a trajmon database \(no runs table\)"):
        connect_readonly(db_path)
