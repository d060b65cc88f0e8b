"""An action's signal (or spec) window: the samples around it, read at query time.

Windows are not stored with the actions: they are resolved from the dense sample tables, and
the segments index narrows the scan to the few pages that can hold the window.
"""

from __future__ import annotations

import sqlite3
from typing import Any

import numpy as np

from .channels import decode_value
from .gcpause import gc_paused
from .queries import RunRef
from .schema import quote_ident

__all__ = ["rows_of", "window_columns", "window_rows"]


def _decoding_changes_nothing(value_type: str, stored: list[Any]) -> bool:
    """Whether ``decode_value`` would return every one of these stored values unchanged: true
    unless there are blobs (NaN, -0.0, big ints, arrays, tagged values), bools, or non-floats in a
    float column. A REAL column normally yields only floats and NULLs, so it is used as read."""
    types = set(map(type, stored))
    if value_type == "float":
        return types <= {float, type(None)}
    if value_type == "bool":
        return types <= {type(None)}
    return bytes not in types


def _fetch_window(
    conn: sqlite3.Connection,
    table: str,
    chans: list[tuple[str, str]],
    idx_range: tuple[int, int],
    dt_range: tuple[float, float],
) -> tuple[list[Any], list[Any], list[list[Any]]]:
    """``sample_idx``, ``dt_s`` and the decoded value columns of the rows of ``table`` (channels
    as (label, value_type)) in both ranges, ordered by ``sample_idx``: plain tuples, transposed
    in C, and decoded only in the columns where decoding changes anything.

    A window is almost always one unbroken run of ``sample_idx``: its first and last index come
    from two ``LIMIT 1`` probes, the rows between them are fetched without ``sample_idx``
    (building ~5 000 int objects was an eighth of the query), and when as many rows came back as
    the run is long, ``sample_idx`` is that ``range``. Anything else (a gap, or ``dt_s`` not
    increasing across a resumed session) falls back to fetching ``sample_idx`` with the rows.
    """
    cursor = conn.cursor()
    cursor.row_factory = None  # plain tuples: a sqlite3.Row per row costs more than SQL
    cols = "".join(f", {quote_ident(label)}" for label, _ in chans)
    where = f"FROM {quote_ident(table)} WHERE sample_idx BETWEEN ? AND ? AND dt_s BETWEEN ? AND ?"
    args = (*idx_range, *dt_range)
    first = cursor.execute(f"SELECT sample_idx {where} ORDER BY sample_idx LIMIT 1", args)
    row = first.fetchone()
    if row is None:
        return [], [], [[] for _ in chans]
    last = cursor.execute(f"SELECT sample_idx {where} ORDER BY sample_idx DESC LIMIT 1", args)
    lo, hi = row[0], last.fetchone()[0]
    found = cursor.execute(
        f"SELECT dt_s{cols} {where} ORDER BY sample_idx", (lo, hi, *dt_range)
    ).fetchall()
    if len(found) == hi - lo + 1:
        sample_idx: list[Any] = list(range(lo, hi + 1))
        dts, *values = (list(col) for col in zip(*found, strict=True))
    else:
        found = cursor.execute(
            f"SELECT sample_idx, dt_s{cols} {where} ORDER BY sample_idx", args
        ).fetchall()
        sample_idx, dts, *values = (list(col) for col in zip(*found, strict=True))
    for pos, (_, vtype) in enumerate(chans):
        if not _decoding_changes_nothing(vtype, values[pos]):
            values[pos] = [decode_value(vtype, v) for v in values[pos]]
    return sample_idx, dts, values


def _coverage(
    dts: list[Any], start_s: float, end_s: float, limit: float
) -> tuple[list[tuple[float, float]], bool]:
    """The gaps (consecutive samples further apart than ``limit``) and whether the samples
    reach to within ``limit`` of both edges of the window — the group's recorded span can cover
    a window that still has no samples at one end (a resumed run's outage, rows missing there).
    One array for both, vectorised, as a window has thousands of samples."""
    if not dts:
        return [], end_s - start_s <= limit
    t = np.asarray(dts, dtype=np.float64)
    edges = bool(t.min() - start_s <= limit and end_s - t.max() <= limit)
    where = np.flatnonzero(np.diff(t) > limit)
    return [(dts[i], dts[i + 1]) for i in where.tolist()], edges


def window_columns(
    conn: sqlite3.Connection, run: RunRef, kind: str, start_s: float, end_s: float
) -> list[dict[str, Any]]:
    """Samples of every ``kind`` group with ``start_s <= dt_s <= end_s``, column-wise, plus
    coverage.

    Each group carries ``sample_idx`` and ``dt_s`` lists and ``columns`` (label → list of
    decoded values, in channel order), all of equal length. Columns rather than one dict per
    row because building ~5 000 row dicts per window cost as much as the SQL itself; the table,
    the plot and the benchmark read columns, and :func:`window_rows` builds rows from these
    only where the row shape is the contract (``actions show --json``)."""
    with gc_paused():  # thousands of row tuples, none of them in a cycle (see gcpause)
        return _window_columns(conn, run, kind, start_s, end_s)


def _window_columns(
    conn: sqlite3.Connection, run: RunRef, kind: str, start_s: float, end_s: float
) -> list[dict[str, Any]]:
    groups = conn.execute(
        "SELECT group_id, name, interval_s, table_name FROM poll_groups"
        " WHERE run_id = ? AND kind = ? ORDER BY group_id",
        (run.run_id, kind),
    ).fetchall()
    out = []
    for g in groups:
        gid, interval = int(g["group_id"]), float(g["interval_s"])
        chans = conn.execute(
            "SELECT label, unit, value_type FROM channels WHERE run_id = ? AND group_id = ?"
            " ORDER BY position",
            (run.run_id, gid),
        ).fetchall()
        # One pass over the group's segments: what was recorded at all, and which sample_idx
        # range can hold the window.
        first, last, idx_lo, idx_hi = conn.execute(
            "SELECT min(first_dt_s), max(last_dt_s),"
            " min(first_idx) FILTER (WHERE last_dt_s >= ?3 AND first_dt_s <= ?4),"
            " max(last_idx) FILTER (WHERE last_dt_s >= ?3 AND first_dt_s <= ?4)"
            " FROM segments WHERE run_id = ?1 AND group_id = ?2",
            (run.run_id, gid, start_s, end_s),
        ).fetchone()
        labels = [str(c["label"]) for c in chans]
        sample_idx: list[Any] = []
        dts: list[Any] = []
        values: list[list[Any]] = [[] for _ in labels]
        if idx_lo is not None:
            sample_idx, dts, values = _fetch_window(
                conn,
                str(g["table_name"]),
                [(str(c["label"]), str(c["value_type"])) for c in chans],
                (idx_lo, idx_hi),
                (start_s, end_s),
            )
        gaps, edges_covered = _coverage(dts, start_s, end_s, 2 * interval)
        complete = (
            first is not None
            and first <= start_s + interval
            and last >= end_s - interval
            and edges_covered
            and not gaps
        )
        out.append(
            {
                "group": g["name"],
                "interval_s": interval,
                "channels": [{"label": c["label"], "unit": c["unit"]} for c in chans],
                "recorded_from_s": first,
                "recorded_to_s": last,
                "complete": bool(complete),
                "gaps": [{"from_s": a, "to_s": b} for a, b in gaps],
                "sample_idx": sample_idx,
                "dt_s": dts,
                "columns": dict(zip(labels, values, strict=True)),
            }
        )
    return out


def rows_of(group: dict[str, Any]) -> list[dict[str, Any]]:
    """A :func:`window_columns` group as rows ``{"sample_idx", "dt_s", "values": {label: v}}``:
    the shape ``actions show --json`` documents."""
    labels = list(group["columns"])
    values = zip(*group["columns"].values(), strict=True) if labels else ((),) * len(group["dt_s"])
    return [
        {"sample_idx": i, "dt_s": t, "values": dict(zip(labels, vals, strict=True))}
        for i, t, vals in zip(group["sample_idx"], group["dt_s"], values, strict=True)
    ]


def window_rows(
    conn: sqlite3.Connection, run: RunRef, kind: str, start_s: float, end_s: float
) -> list[dict[str, Any]]:
    """:func:`window_columns` in the row shape: each group has ``rows`` instead of
    ``sample_idx``/``dt_s``/``columns`` (the documented ``actions show --json`` output)."""
    out = []
    for g in window_columns(conn, run, kind, start_s, end_s):
        rows = rows_of(g)
        for key in ("sample_idx", "dt_s", "columns"):
            del g[key]
        g["rows"] = rows
        out.append(g)
    return out
