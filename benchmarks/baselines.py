"""The four baselines trajmon is measured against, written from their descriptions.

- bare-sqlite: ``executemany`` of pre-built rows into trajmon's own sample table, one transaction
  per batch, with the writer's pragmas (WAL, synchronous=NORMAL): the storage limit.
- bare-get: a plain loop of ``parameter.get()`` over the same parameters: the driver limit.
- qcodes-datasaver: QCoDeS's Measurement/DataSaver with default settings, 12 numeric
  parameters per row, in a temporary QCoDeS database.
- sequential-poller: the seed design's monitor: synchronous, every channel read one after
  another, one ``dt_s`` per tick, one JSON object per row, one commit per row (sqlite3 defaults:
  rollback journal, synchronous=FULL).
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from trajmon.channels import PollGroup
from trajmon.schema import group_table_ddl, insert_sql, quote_ident

__all__ = [
    "SequentialPoller",
    "bare_get_rate",
    "bare_sqlite_read",
    "bare_sqlite_write",
    "qcodes_datasaver",
]


def bare_sqlite_write(
    db: Path, group: PollGroup, pool: list[list[float]], rows: int, batch: int = 5000
) -> float:
    """Seconds spent inside executemany + commit for ``rows`` rows (row building excluded)."""
    table = "bare/signals"
    sql = insert_sql(table, group)
    conn = sqlite3.connect(db, isolation_level=None)
    with contextlib.closing(conn):
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute(group_table_ddl(table, group.channels, 6000))
        spent = 0.0
        n = len(pool)
        for first in range(0, rows, batch):
            built = [
                (i, i * 1e-3, 1e-5, *pool[i % n]) for i in range(first, min(rows, first + batch))
            ]
            start = time.perf_counter()
            conn.execute("BEGIN")
            conn.executemany(sql, built)
            conn.execute("COMMIT")
            spent += time.perf_counter() - start
    return spent


def bare_sqlite_read(db: Path, table: str, columns: Sequence[str]) -> tuple[float, int, int]:
    """Read ``columns`` of every row of ``table`` with plain sqlite3, in primary-key order:
    (seconds, rows, values per row)."""
    conn = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True)
    names = ", ".join(quote_ident(c) for c in columns)
    with contextlib.closing(conn):
        cursor = conn.execute(f"SELECT {names} FROM {quote_ident(table)} ORDER BY sample_idx")
        width = len(cursor.description)
        start = time.perf_counter()
        rows = 0
        while chunk := cursor.fetchmany(10000):
            rows += len(chunk)
        return time.perf_counter() - start, rows, width


def bare_get_rate(params: Sequence[Any], seconds: float) -> tuple[float, int]:
    """Rows/s of a plain loop reading every parameter once per row."""
    rows = 0
    start = time.perf_counter()
    deadline = start + seconds
    while True:
        for p in params:
            p.get()
        rows += 1
        if rows % 16 == 0 and time.perf_counter() >= deadline:
            break
    return rows / (time.perf_counter() - start), rows


def qcodes_datasaver(workdir: Path, pool: list[list[float]], rows: int) -> float:
    """Seconds for QCoDeS (defaults) to save ``rows`` rows of 12 numeric parameters, including
    the final flush when the measurement context exits."""
    from qcodes.dataset import (
        Measurement,
        initialise_or_create_database_at,
        load_or_create_experiment,
    )
    from qcodes.parameters import ManualParameter

    db = workdir / "qcodes.db"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    initialise_or_create_database_at(db)
    exp = load_or_create_experiment("trajmon-bench", sample_name="bench")
    params = [ManualParameter(f"ch{i:02d}", unit="V") for i in range(len(pool[0]))]
    meas = Measurement(exp=exp)
    for p in params:
        meas.register_parameter(p)
    n = len(pool)
    prebuilt = [list(zip(params, values, strict=True)) for values in pool]
    start = time.perf_counter()
    with meas.run() as saver:
        for i in range(rows):
            saver.add_result(*prebuilt[i % n])
    elapsed = time.perf_counter() - start
    with contextlib.closing(sqlite3.connect(db)) as conn:
        (table,) = conn.execute(
            "SELECT result_table_name FROM runs ORDER BY run_id DESC LIMIT 1"
        ).fetchone()
        (saved,) = conn.execute(f'SELECT count(*) FROM "{table}"').fetchone()
    if saved < rows:
        raise RuntimeError(f"qcodes saved {saved} of {rows} rows")
    return elapsed


class SequentialPoller:
    """The seed design: read all channels one after another, then insert and commit one row.

    ``interval_s`` is slept after each tick (a relative schedule, as the seed had); 0 runs flat
    out, which is how its maximum rate is measured.
    """

    def __init__(self, db: Path, channels: Sequence[tuple[str, Any]], rotate: int = 6000) -> None:
        self.db = db
        self.channels = list(channels)
        self.rotate = rotate

    def run(self, seconds: float, interval_s: float = 0.0) -> tuple[float, int]:
        """Returns (rows/s, rows) over ``seconds`` of polling."""
        conn = sqlite3.connect(self.db)
        with contextlib.closing(conn):
            conn.execute(
                "CREATE TABLE IF NOT EXISTS samples (sample_idx INTEGER PRIMARY KEY,"
                " segment_id INTEGER NOT NULL, dt_s REAL NOT NULL, data TEXT NOT NULL)"
            )
            conn.commit()
            t0 = time.monotonic()
            idx = 0
            while True:
                dt_s = time.monotonic() - t0
                if dt_s >= seconds:
                    break
                row: dict[str, Any] = {}
                for label, param in self.channels:
                    try:
                        row[label] = param.get()
                    except Exception as exc:  # the seed stored the error text in place
                        row[label] = f"error: {exc}"
                conn.execute(
                    "INSERT INTO samples VALUES (?, ?, ?, ?)",
                    (idx, idx // self.rotate, dt_s, json.dumps(row)),
                )
                conn.commit()
                idx += 1
                if interval_s > 0:
                    time.sleep(interval_s)
            elapsed = time.monotonic() - t0
        return idx / elapsed, idx
