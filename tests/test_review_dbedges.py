"""Databases a lab hands the read commands and ``run --db``: a file ``run`` created but could not
initialise (a full disk), an empty file, a FIFO, a symlink loop, a ``~`` the shell left as typed.

Found by a review: after a full disk before the first write, ``trajmon run`` left a 0-byte
``--db`` file that every query command then called "not a trajmon database" (read as a damaged
database); a FIFO as ``--db`` hung every command for good (SQLite waits in ``open`` for a
writer, deaf to Ctrl-C and SIGTERM); a symlink loop was "database not found" beside its name.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

import pytest
from test_operator_cli import invoke
from test_read_side_more import READERS, reader_args

from trajmon import MonitorConfig
from trajmon.cli.run_cmd import check_run_name_free
from trajmon.config import ConfigError
from trajmon.connection import StorageError
from trajmon.queries import QueryError, connect_readonly, list_runs
from trajmon.runstore import prepare_db
from trajmon.schema import migrate

FULL = "database or disk is full"


def _one_line(result: Any, code: int, message: str) -> None:
    assert result.exit_code == code, (result.stdout, result.stderr)
    assert message in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr


def _listing(directory: Path) -> dict[str, bytes]:
    """Every file in ``directory`` with its bytes: what a read command must leave as it was."""
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir()) if p.is_file()}


def _disk_full_after(step: Callable[[sqlite3.Connection], None]) -> Callable[..., int]:
    """A :func:`migrate` that does ``step`` and then fails as a full disk makes it fail."""

    def failing(conn: sqlite3.Connection, wait_s: float = 2.0) -> int:
        step(conn)
        raise sqlite3.OperationalError(FULL)

    return failing


def _nothing(conn: sqlite3.Connection) -> None:
    """No byte written: the file SQLite created stays 0 bytes long."""


def _wal_header(conn: sqlite3.Connection) -> None:
    """The switch to WAL done (the file's header written), the catalog not."""
    conn.execute("PRAGMA journal_mode = WAL")


@pytest.mark.parametrize("step", [_nothing, _wal_header])
def test_a_database_run_created_but_could_not_initialise_is_removed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, step: Callable[[sqlite3.Connection], None]
) -> None:
    db = tmp_path / "new.db"
    monkeypatch.setattr("trajmon.runstore.migrate", _disk_full_after(step))
    with pytest.raises(StorageError, match=FULL):
        prepare_db(MonitorConfig(run_name="r", db=db), resume=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == []
    _one_line(invoke("runs", "--db", str(db)), 2, f"database not found: {db}")


def test_a_database_created_through_a_dangling_link_is_removed_at_its_target(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SQLite creates the file the link names; the link, the operator's, stays."""
    link, target = tmp_path / "lab.db", tmp_path / "store" / "lab-2026.db"
    target.parent.mkdir()
    link.symlink_to(target)
    monkeypatch.setattr("trajmon.runstore.migrate", _disk_full_after(_nothing))
    with pytest.raises(StorageError, match=FULL):
        prepare_db(MonitorConfig(run_name="r", db=link), resume=False)
    assert link.is_symlink() and list(target.parent.iterdir()) == []


@pytest.mark.parametrize("content", [b"", None])
def test_a_database_that_existed_before_is_never_removed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, content: bytes | None
) -> None:
    """An empty file the operator made (``touch``), or a database with its runs: kept as it was
    whatever fails."""
    db = tmp_path / "lab.db"
    if content is None:
        with closing(sqlite3.connect(db)) as conn:
            migrate(conn)
        content = db.read_bytes()
    else:
        db.write_bytes(content)
    monkeypatch.setattr("trajmon.runstore.migrate", _disk_full_after(_nothing))
    with pytest.raises(StorageError, match=FULL):
        prepare_db(MonitorConfig(run_name="r", db=db), resume=False)
    assert db.read_bytes() == content


def test_a_catalog_another_recorder_committed_meanwhile_is_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The file was new when this recorder looked, but another one created the catalog in it
    before this one failed: that file is the other recorder's, and stays."""
    db = tmp_path / "lab.db"

    def other_recorder(conn: sqlite3.Connection) -> None:
        with closing(sqlite3.connect(db)) as other:
            migrate(other)

    monkeypatch.setattr("trajmon.runstore.migrate", _disk_full_after(other_recorder))
    with pytest.raises(StorageError, match=FULL):
        prepare_db(MonitorConfig(run_name="r", db=db), resume=False)
    with closing(connect_readonly(db)) as conn:
        assert list_runs(conn) == []
        (version,) = conn.execute("PRAGMA user_version").fetchone()
    assert version > 0


def _empty_file(db: Path) -> None:
    db.write_bytes(b"")


def _header_only(db: Path) -> None:
    """What a recorder killed inside the catalog's transaction leaves: WAL mode, no table."""
    with closing(sqlite3.connect(db)) as conn:
        conn.execute("PRAGMA journal_mode = WAL")


@pytest.mark.parametrize("make", [_empty_file, _header_only])
@pytest.mark.parametrize("args", READERS)
def test_an_empty_database_has_no_runs(
    tmp_path: Path, make: Callable[[Path], None], args: tuple[str, ...]
) -> None:
    """It is what ``trajmon run`` takes as a new database: ``runs`` lists none (exit 0, as for a
    catalog without runs) and the commands about one run say there is none yet — not "not a
    trajmon database", which reads as damage. The file is not changed, and nothing is written
    beside it but the ``-wal`` and ``-shm`` SQLite opens to read any WAL-mode database."""
    db = tmp_path / "lab.db"
    make(db)
    before = _listing(tmp_path)
    sqlite_own = {f"{db.name}-wal", f"{db.name}-shm"} if db.stat().st_size else set()
    result = invoke(*reader_args(args, tmp_path), "--db", str(db))
    if args == ("runs",):
        assert result.exit_code == 0, result.stderr
        assert f"runs in {db} (0)" in result.stdout
        listed = invoke("runs", "--db", str(db), "--json")
        assert json.loads(listed.stdout) == {"db": str(db.resolve()), "runs": []}
    elif args[0] == "export":
        _one_line(result, 2, f"unknown run {args[1]!r}")
    else:
        _one_line(result, 2, "the database has no runs yet")
    after = _listing(tmp_path)
    assert {name: after[name] for name in after if name not in sqlite_own} == before


def test_a_versioned_file_without_tables_is_still_refused(tmp_path: Path) -> None:
    """Another program's file with a schema version of its own is no empty trajmon database."""
    db = tmp_path / "other.db"
    with closing(sqlite3.connect(db)) as conn:
        conn.execute("PRAGMA user_version = 7")
    with pytest.raises(QueryError, match=r"is not a trajmon database \(no runs table\)"):
        connect_readonly(db)


@contextmanager
def _released(fifo: Path) -> Iterator[None]:
    """Should anything open ``fifo`` for reading (the fault under test), a writer end is opened
    and closed at once, so that the test fails instead of hanging for good."""
    done = threading.Event()

    def release() -> None:
        while not done.wait(0.02):
            try:
                fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
            except OSError:  # ENXIO: no reader is waiting
                continue
            os.close(fd)

    thread = threading.Thread(target=release, daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()


@pytest.mark.parametrize("args", READERS)
def test_a_fifo_as_database_is_refused_without_opening_it(
    tmp_path: Path, args: tuple[str, ...]
) -> None:
    db = tmp_path / "lab.db"
    os.mkfifo(db)
    with _released(db):
        result = invoke(*reader_args(args, tmp_path), "--db", str(db))
    _one_line(result, 2, f"{db} is a FIFO, not a database file")


def test_run_refuses_a_fifo_as_database_without_opening_it(tmp_path: Path) -> None:
    """The run's name check and the recorder's own preparation (the library's path) alike."""
    db = tmp_path / "lab.db"
    os.mkfifo(db)
    with _released(db):
        with pytest.raises(QueryError, match="is a FIFO, not a database file"):
            check_run_name_free(db, "r")
        with pytest.raises(ConfigError, match="it is a FIFO, not a database file"):
            prepare_db(MonitorConfig(run_name="r", db=db), resume=False)


@pytest.mark.parametrize("args", READERS)
def test_a_symlink_loop_is_named_as_such(tmp_path: Path, args: tuple[str, ...]) -> None:
    """It was "database not found" beside a name ``ls`` shows."""
    db = tmp_path / "lab.db"
    db.symlink_to(db)
    _one_line(invoke(*reader_args(args, tmp_path), "--db", str(db)), 2, f"{db} is a symlink loop")


def test_run_refuses_a_symlink_loop_as_database(tmp_path: Path) -> None:
    """It was "cannot open database …: unable to open database file", exit 1."""
    db = tmp_path / "lab.db"
    db.symlink_to(db)
    with pytest.raises(ConfigError, match="it is a symlink loop, not a database file"):
        prepare_db(MonitorConfig(run_name="r", db=db), resume=False)


@pytest.mark.parametrize("typed", ["~/lab.db", "$TRAJMON_DBEDGES/lab.db"])
def test_a_tilde_or_variable_the_shell_left_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, typed: str
) -> None:
    """``--db=~/lab.db`` (no shell expands a ``~`` there) was "database not found: ~/lab.db",
    the database sitting in the home directory."""
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("TRAJMON_DBEDGES", str(tmp_path))
    monkeypatch.chdir(tmp_path)  # no directory named "~" or "$TRAJMON_DBEDGES" here
    with closing(sqlite3.connect(tmp_path / "lab.db")) as conn:
        migrate(conn)
    result = invoke("runs", f"--db={typed}")
    _one_line(result, 2, f"database not found: {typed} (did you mean {tmp_path / 'lab.db'}?")
