"""Opening a database to read it: read-only, and refused in one line when it is not one.

Readers open the database read-only; with WAL they see the last committed state and never
block — nor are blocked by — a run that is recording. What cannot be read (a missing file, a
FIFO, another program's database, a newer trajmon's) is a :class:`QueryError` naming the file.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Iterable
from pathlib import Path

from .connection import not_a_file
from .files import wal_file
from .schema import CATALOG_TABLES, SchemaError, check_version, migrate

__all__ = ["QueryError", "connect_readonly", "listed", "open_readonly"]


class QueryError(LookupError):
    """Unknown run, unknown action, missing database: one line for the operator."""


def open_readonly(path: Path, *, immutable: bool = False) -> tuple[sqlite3.Connection, set[str]]:
    """A read-only connection that never writes (``query_only``) and the file's table names;
    raises ``sqlite3.Error``. :func:`connect_readonly` adds the operator-facing checks."""
    if (problem := not_a_file(path)) is not None:  # before SQLite blocks on a FIFO
        raise sqlite3.OperationalError(f"it is {problem}, not a database file")
    uri = f"{path.resolve().as_uri()}?mode=ro{'&immutable=1' if immutable else ''}"
    conn = sqlite3.connect(uri, uri=True, timeout=5.0)
    try:
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA query_only = ON")
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    except BaseException:
        conn.close()
        raise
    return conn, tables


def _archived(path: Path) -> bool:
    """A database in a place this process cannot write (a read-only share, an archive): WAL mode
    needs to create ``-shm`` beside it, so SQLite refuses to open it at all. With no write-ahead
    log left over, the file is the whole database and nothing can be writing it, so it can be
    read as immutable."""
    wal = wal_file(path)
    return not os.access(path.parent, os.W_OK) and (not wal.exists() or wal.stat().st_size == 0)


def listed(names: Iterable[str], most: int) -> str:
    """The first ``most`` of ``names``, comma-separated, "…" standing for any more."""
    shown = list(names)
    return ", ".join(shown[:most]) + (", …" if len(shown) > most else "")


def _others_beside(path: Path) -> str:
    """A hint naming the databases in the missing one's directory: ``trajmon runs`` right after
    ``make demo`` looks for trajmon.db, and the one file there is trajmon-demo.db. A ``~`` or
    ``$VAR`` the shell left as it was (quoted, or in ``--db=~/x.db``) is named as such."""
    expanded = Path(os.path.expandvars(os.path.expanduser(path)))
    if expanded != path and expanded.exists():
        return f" (did you mean {expanded}? quoted, or after --db=, ~ and $VAR stay as typed)"
    with contextlib.suppress(OSError):
        found = sorted(p.name for p in path.parent.glob("*.db") if p.is_file())
        if found:
            return f" (databases in {path.parent}: {listed(found, 5)})"
    return ""


def connect_readonly(db: Path | str) -> sqlite3.Connection:
    """A read-only connection to a trajmon database, or a one-line :class:`QueryError`: a
    missing file or a directory, a file SQLite cannot read, a database of another program, or
    one written by a newer trajmon (its tables may mean something else). An empty database (no
    tables, no version: ``touch``, a recorder killed creating it), which ``trajmon run`` takes
    as a new one, has no runs: the connection is to an empty catalog in memory (it does not see
    runs recorded into the file later)."""
    path = Path(db)
    if (problem := not_a_file(path)) is not None:
        raise QueryError(f"{path} is {problem}, not a database file")
    if not path.exists():
        raise QueryError(f"database not found: {path}{_others_beside(path)}")
    try:
        try:
            conn, tables = open_readonly(path, immutable=False)
        except sqlite3.OperationalError:
            if not _archived(path):
                raise
            conn, tables = open_readonly(path, immutable=True)
    except sqlite3.DatabaseError as exc:
        hint = ""
        if not os.access(path.parent, os.W_OK) and not _archived(path):
            hint = (
                f" (its directory is read-only and it has a write-ahead log: copy it with its"
                f" {path.name}-wal file to a writable directory)"
            )
        raise QueryError(f"cannot read {path}: {exc}{hint}") from exc
    try:
        if not tables and conn.execute("PRAGMA user_version").fetchone()[0] == 0:
            conn.close()
            return _no_runs()
        _check_catalog(conn, path, tables)
    except BaseException:
        conn.close()
        raise
    return conn


def _no_runs() -> sqlite3.Connection:
    """A read-only empty catalog in memory: an empty file, refused as "not a trajmon database",
    read as a damaged one to the operator."""
    conn = sqlite3.connect(":memory:")
    migrate(conn)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA query_only = ON")
    return conn


def _check_catalog(conn: sqlite3.Connection, path: Path, tables: set[str]) -> None:
    if "runs" not in tables:  # before the version: many programs set one ("upgrade trajmon"?)
        raise QueryError(f"{path} is not a trajmon database (no runs table)")
    (version,) = conn.execute("PRAGMA user_version").fetchone()
    try:
        check_version(version)
    except SchemaError as exc:
        raise QueryError(f"{path}: {exc}") from exc
    missing = [t for t in CATALOG_TABLES if t not in tables]
    if missing:
        raise QueryError(f"{path} is not a trajmon database (no {missing[0]} table)")
