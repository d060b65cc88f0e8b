"""Part of a run for an export: the rows with ``since <= dt_s <= until``, read cheaply.

A ten-minute slice of a ten-hour run at 1 kHz is 600 000 of 10M rows: the slice must not read
the rest. The ``segments`` index gives, per ``rotate_entries`` rows of a group, its
``sample_idx`` span and the least and greatest ``dt_s`` in it, so the segments whose ``dt_s``
span overlaps the range bound the ``sample_idx`` span that can hold it: the query reads that
span (the primary key's range) and keeps the rows whose own ``dt_s`` is in the range. That is
the range's rows plus at most a segment at each end, and it stays exact where ``dt_s`` does not
rise with ``sample_idx`` (a resumed run: the same reasoning as :mod:`.windows`), since every row
lies inside its segment's span whatever the order.
"""

from __future__ import annotations

import math
import sqlite3
from dataclasses import dataclass
from typing import Any

from .detection import shown_apart
from .export_sinks import MetaValue
from .queries import RunRef
from .schema import quote_ident

__all__ = [
    "DtRange",
    "count_rows",
    "dt_range",
    "group_rows",
    "recorded_span",
    "sample_filter",
    "sample_span",
    "streak_overlaps",
]

#: A segment that overlaps the range, and one that lies wholly inside it (``?1``/``?2`` the
#: range's ends, ``?3``/``?4`` run and group).
_OVERLAPS = "last_dt_s >= ?1 AND first_dt_s <= ?2"
_INSIDE = "first_dt_s >= ?1 AND last_dt_s <= ?2"


@dataclass(frozen=True, slots=True)
class DtRange:
    """The ``dt_s`` range of an export: a bound that is ``None`` leaves that side open."""

    since: float | None = None
    until: float | None = None

    @property
    def whole(self) -> bool:
        return self.since is None and self.until is None

    @property
    def ends(self) -> tuple[float, float]:
        """Both ends as numbers SQLite compares (an open side: an infinity)."""
        lo = -math.inf if self.since is None else self.since
        return lo, math.inf if self.until is None else self.until

    def as_json(self) -> dict[str, float | None]:
        """``run.json``'s ``export_range`` and ``--json``'s ``range``: null is an open side."""
        return {"since_s": self.since, "until_s": self.until}

    def metadata(self) -> dict[str, MetaValue]:
        """The data files' keys: one per bound given, so a file holding a slice says so, and
        one with neither is the whole run."""
        keys = {"trajmon_since_s": self.since, "trajmon_until_s": self.until}
        return {k: float(v) for k, v in keys.items() if v is not None}

    def text(self) -> str:
        """The range as a reader of the summary line takes it in."""
        lo, hi = ("" if b is None else f"{b:g}" for b in (self.since, self.until))
        return f"dt_s {lo or '…'} .. {hi or '…'} s"


def dt_range(since: float | None, until: float | None, dashes: str = "") -> DtRange:
    """``since``/``until`` checked as ``actions list`` checks them (``dashes`` spells them as
    options in the message). NaN matches no row in SQLite, and a ``since`` after the
    ``until``, a ``since`` of +inf or an ``until`` of -inf holds no time: each is a
    ``ValueError``, not an export of empty tables that reads as "nothing was recorded then".
    Any other number is taken as given; ``since=-inf``/``until=inf`` leave their side open."""
    for name, bound in (("since", since), ("until", until)):
        if bound is None:
            continue
        if isinstance(bound, bool) or not isinstance(bound, int | float):
            raise TypeError(f"{name} must be a number of seconds, not {bound!r}")
        if math.isnan(bound):
            raise ValueError(f"{dashes}{name} must be a number of seconds, got {bound}")
    if since == math.inf or until == -math.inf:
        name, bound = ("since", since) if since == math.inf else ("until", until)
        raise ValueError(f"{dashes}{name} {bound} leaves no time to export")
    if since is not None and until is not None and since > until:
        first, then = shown_apart(since, until, lambda s: f"{s:g}")
        raise ValueError(
            f"{dashes}since {first} is after {dashes}until {then}: no time lies between them"
        )
    return DtRange(
        None if since is None or since == -math.inf else float(since),
        None if until is None or until == math.inf else float(until),
    )


def sample_span(
    conn: sqlite3.Connection, ref: RunRef, gid: int, rng: DtRange
) -> tuple[int, int] | None:
    """The ``sample_idx`` span that holds every row of the group in ``rng`` (and at most a
    segment more at each end of it); ``None`` when no segment reaches into the range."""
    lo, hi = conn.execute(
        f"SELECT min(first_idx), max(last_idx) FROM segments WHERE run_id = ?3"
        f" AND group_id = ?4 AND {_OVERLAPS}",
        (*rng.ends, ref.run_id, gid),
    ).fetchone()
    return None if lo is None else (int(lo), int(hi))


def sample_filter(
    conn: sqlite3.Connection, ref: RunRef, gid: int, rng: DtRange
) -> tuple[str, tuple[Any, ...]]:
    """The ``WHERE`` clause (and its arguments) of a group's rows in ``rng``: the span of the
    primary key that holds them (:func:`sample_span`), and the rows of it in the range. None
    for the whole run: its rows are read as they are."""
    if rng.whole:
        return "", ()
    span = sample_span(conn, ref, gid, rng) or (1, 0)  # no segment in the range: no row
    return " WHERE sample_idx BETWEEN ? AND ? AND dt_s BETWEEN ? AND ?", (*span, *rng.ends)


def group_rows(conn: sqlite3.Connection, ref: RunRef, gid: int, table: str, rng: DtRange) -> int:
    """The group's rows in ``rng``, exactly: the counts of the segments wholly inside it, and
    a count only over the segments it cuts (at most the two at its ends, unless ``dt_s`` falls
    back across a resumed session)."""
    args = (*rng.ends, ref.run_id, gid)
    where = "run_id = ?3 AND group_id = ?4"
    (inside,) = conn.execute(
        f"SELECT coalesce(sum(rows), 0) FROM segments WHERE {where} AND {_INSIDE}", args
    ).fetchone()
    cut = conn.execute(
        f"SELECT first_idx, last_idx FROM segments WHERE {where} AND {_OVERLAPS}"
        f" AND NOT ({_INSIDE})",
        args,
    ).fetchall()
    n = int(inside)
    for first, last in cut:
        (more,) = conn.execute(
            f"SELECT count(*) FROM {quote_ident(table)}"
            " WHERE sample_idx BETWEEN ? AND ? AND dt_s BETWEEN ? AND ?",
            (first, last, *rng.ends),
        ).fetchone()
        n += int(more)
    return n


def count_rows(conn: sqlite3.Connection, ref: RunRef, rng: DtRange | None = None) -> int:
    """Sample rows the export will write: of the whole run from the segments index alone (no
    table scan), of a range also counting only inside the segments it cuts."""
    if rng is None or rng.whole:
        (n,) = conn.execute(
            "SELECT coalesce(sum(rows), 0) FROM segments WHERE run_id = ?", (ref.run_id,)
        ).fetchone()
        return int(n)
    groups = conn.execute(
        "SELECT group_id, table_name FROM poll_groups WHERE run_id = ?", (ref.run_id,)
    ).fetchall()
    return sum(group_rows(conn, ref, int(g[0]), str(g[1]), rng) for g in groups)


def recorded_span(conn: sqlite3.Connection, ref: RunRef) -> tuple[Any, Any]:
    """The least and greatest ``dt_s`` of the run's samples (``None``s: none recorded)."""
    first, last = conn.execute(
        "SELECT min(first_dt_s), max(last_dt_s) FROM segments WHERE run_id = ?", (ref.run_id,)
    ).fetchone()
    return first, last


def streak_overlaps(conn: sqlite3.Connection) -> str:
    """SQL true for an error streak (``monitor_errors``) that overlaps the range ``?2``..``?3``:
    it spans ``dt_s`` .. ``last_dt_s``. A file from schema version 1 has no ``last_dt_s``
    (a row per failed read), and a row without one is a streak of one read."""
    (version,) = conn.execute("PRAGMA user_version").fetchone()
    last = "coalesce(last_dt_s, dt_s)" if version >= 2 else "dt_s"
    return f"dt_s <= ?3 AND {last} >= ?2"
