"""Values as an export writes them: text for what a format has no column type for, the fill
value of a netCDF int variable, and chunks joined into blocks worth a Parquet row group.

:mod:`.export_sinks` writes what these decide.
"""

from __future__ import annotations

import json
import math
import sqlite3
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np

from .channels import INT64_MAX, INT64_MIN, decode_value

__all__ = [
    "FILL_AS_FLOAT",
    "beyond_int64",
    "block_rows",
    "columns_of",
    "decode_column",
    "fetch_chunks",
    "fits_int64",
    "free_fill",
    "joined",
    "netcdf_fills",
    "text_value",
]

#: Parquet keeps every row group's metadata (a few kB with a dozen columns) in memory until
#: the file closes, and netCDF pays one HDF5 call per variable per write: ``--chunk-rows 10``
#: held 2 GB for 2M rows (a row group per chunk), and one row per chunk wrote 150 rows a second.
#: So a file gets at most about MAX_BLOCKS writes: small chunks are joined, up to
#: MIN_BLOCK_ROWS rows (a few MB) at most.
MAX_BLOCKS, MIN_BLOCK_ROWS = 200, 10_000


def block_rows(chunk_rows: int, total: int) -> int:
    """Rows per write (a Parquet row group) for a file of ``total`` rows read in chunks of
    ``chunk_rows``: the chunk, unless that makes more than :data:`MAX_BLOCKS` writes."""
    return max(chunk_rows, min(MIN_BLOCK_ROWS, -(-total // MAX_BLOCKS)))


def fetch_chunks(
    conn: sqlite3.Connection, sql: str, args: tuple[Any, ...], chunk_rows: int
) -> Iterator[list[tuple[Any, ...]]]:
    """The rows of ``sql``, ``chunk_rows`` at a time."""
    cur = conn.cursor()
    cur.row_factory = None  # plain tuples: cheaper than sqlite3.Row per sample
    cur.execute(sql, args)
    while rows := cur.fetchmany(chunk_rows):
        yield rows
    cur.close()


def columns_of(rows: list[tuple[Any, ...]], width: int) -> list[list[Any]]:
    """A chunk of rows as ``width`` columns."""
    # Columns stay the tuples zip() builds in C; sinks only iterate them.
    columns: list[Any] = list(zip(*rows, strict=True)) if rows else [[] for _ in range(width)]
    return columns


def text_value(value: Any) -> str | None:
    """Values without a natural column type (arrays, mixed ``any`` channels) as text: JSON for
    arrays (shape kept as nested lists; a MultiParameter's arrays of different shapes as a list
    of them), ``repr``-exact numbers, hex for raw bytes."""
    if value is None:
        return None
    if isinstance(value, np.ndarray):
        return _json_text(value.tolist())
    if isinstance(value, tuple) and value and all(isinstance(v, np.ndarray) for v in value):
        return _json_text([v.tolist() for v in value])
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, float):
        return repr(value)
    return str(value)


def _json_text(nested: Any) -> str:
    """Strict JSON, which every JSON reader takes: bare ``NaN`` and ``Infinity`` are not JSON
    (polars, DuckDB, SQLite's json functions, JavaScript refuse the whole value), so they are
    written as the strings "NaN", "Infinity", "-Infinity", as in a run's ``snapshot_json``;
    ``numpy.array(json.loads(text), dtype=float)`` reads them back as numbers."""
    try:
        try:
            return json.dumps(nested, allow_nan=False)
        except ValueError:  # a NaN or an infinity: rare, so only then is the list rebuilt
            return json.dumps(_finite(nested), allow_nan=False)
    except TypeError:  # complex elements: no JSON for them
        return str(nested)


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def fits_int64(value: Any) -> bool:
    return isinstance(value, int) and INT64_MIN <= value <= INT64_MAX


def decode_column(vtype: str, values: list[Any]) -> list[Any]:
    """:func:`decode_value` over a column; typed columns only hold a blob for the rare value
    their SQLite type cannot represent (NaN, -0.0, huge ints), so only those are decoded, and
    a column without one is returned as it is (the same object)."""
    if vtype in ("float", "int", "str"):
        if bytes not in map(type, values):  # the common case, checked at C speed
            return values
        return [decode_value(vtype, v) if type(v) is bytes else v for v in values]
    return [decode_value(vtype, v) for v in values]


def beyond_int64(values: Iterable[Any]) -> int:
    """How many of a decoded ``int`` column's values no int64 holds: Parquet and netCDF int
    columns write them as a null or the fill value, which reads back as a failed read."""
    return sum(1 for v in values if v is not None and not fits_int64(v))


def free_fill(
    conn: sqlite3.Connection, table: str, column: str, where: str = "", args: tuple[Any, ...] = ()
) -> int:
    """The fill value of a netCDF int variable with gaps, for ``column`` (quoted) of ``table``
    (quoted): the smallest int64 that no recorded value equals, also once both are rounded to
    float64.

    A reader masks every value equal to the fill, so a recorded ``-2**63`` under the usual fill
    ``-2**63`` read back as a failed read; and xarray turns the variable into float64 before it
    compares, so ``-2**63 + 1`` would too (both round to ``-2.0**63``). One sorted pass, only
    for a column holding such a value. ``where`` (a ``WHERE`` clause taking ``args``, or
    empty) limits it to the rows exported: a slice of the run.
    """
    fill = float(INT64_MIN)
    test = f"typeof({column}) = 'integer'"
    cur = conn.execute(
        f"SELECT DISTINCT CAST({column} AS REAL) FROM {table}"
        f"{where + ' AND ' if where else ' WHERE '}{test} ORDER BY 1",
        args,
    )
    try:
        for (value,) in cur:
            if value > fill:
                break
            fill = math.nextafter(fill, math.inf)
    finally:
        cur.close()
    if fill > INT64_MAX:  # every float64 in the int64 range recorded: not in one SQLite file
        raise ValueError(f"no free fill value for {column}")
    return int(fill)


#: Recorded ints that round to this float64 need a fill other than ``INT64_MIN``.
FILL_AS_FLOAT = repr(float(INT64_MIN))


def netcdf_fills(
    conn: sqlite3.Connection,
    table: str,
    columns: list[str],
    types: list[str],
    where: str = "",
    args: tuple[Any, ...] = (),
) -> tuple[list[bool], list[int]]:
    """Which of ``columns`` (quoted) of ``table`` (quoted) need a netCDF fill value, and the
    int columns' fill, in one scan. An int beyond int64 (stored as a blob) is written as the
    fill value too; and the fill must be a value no sample has, or a reader takes that sample
    for a gap (:func:`free_fill`).

    Only int and bool columns are scanned: a float variable marks a gap as NaN and a string one
    as empty, fill value or not, so they are answered "may have gaps" unread. A group of float
    signals was scanned whole before its first row was written (2.3 s for 10M rows, the
    progress bar at 0, a Ctrl-C waiting for it to end) for an answer the file never used.
    ``where`` (taking ``args``) scans only the rows exported (:func:`free_fill`)."""
    nulls, fills = [True] * len(columns), [INT64_MIN] * len(columns)
    scanned = [i for i, value_type in enumerate(types) if value_type in ("int", "bool")]
    if not scanned:
        return nulls, fills
    tests = []
    for i in scanned:
        q, is_int = columns[i], types[i] == "int"
        tests.append(f"{q} IS NULL OR typeof({q}) = 'blob'" if is_int else f"{q} IS NULL")
        tests.append(
            f"typeof({q}) = 'integer' AND CAST({q} AS REAL) = {FILL_AS_FLOAT}" if is_int else "0"
        )
    counts = conn.execute(
        f"SELECT {', '.join(f'coalesce(sum({t}), 0)' for t in tests)} FROM {table}{where}", args
    ).fetchone()
    for i, n, taken in zip(scanned, counts[0::2], counts[1::2], strict=True):
        nulls[i] = bool(n)
        fills[i] = free_fill(conn, table, columns[i], where, args) if n and taken else INT64_MIN
    return nulls, fills


def joined(chunks: Iterable[list[Any]], min_rows: int) -> Iterator[list[Any]]:
    """Consecutive column chunks, joined until each holds at least ``min_rows`` rows (the last
    may hold fewer); a chunk that is large enough passes as it is."""
    pending: list[list[Any]] | None = None
    for chunk in chunks:
        if pending is None:
            if not chunk or len(chunk[0]) >= min_rows:
                yield chunk
                continue
            pending = [list(column) for column in chunk]
        else:
            for column, more in zip(pending, chunk, strict=True):
                column.extend(more)
        if len(pending[0]) >= min_rows:
            yield pending
            pending = None
    if pending is not None:
        yield pending
