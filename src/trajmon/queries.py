"""Reading recorded runs: runs, status and actions, on a connection from
:func:`~trajmon.readonly.connect_readonly` (re-exported here). An action's signal window is
read by :mod:`trajmon.windows`.
"""

from __future__ import annotations

import math
import sqlite3
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from .channels import decode_value
from .config import label_key
from .readonly import QueryError, connect_readonly, listed, open_readonly

__all__ = [
    "QueryError",
    "RunRef",
    "connect_readonly",
    "effective_status",
    "get_action",
    "iter_actions",
    "list_actions",
    "list_runs",
    "open_readonly",
    "resolve_run",
]


def effective_status(row: sqlite3.Row | dict[str, Any], now: float | None = None) -> str:
    """A ``running`` run whose heartbeat is older than its threshold has crashed."""
    status = str(row["status"])
    if status != "running":
        return status
    beat = row["heartbeat_epoch"]
    now = time.time() if now is None else now
    if beat is None or now - float(beat) > float(row["stale_after_s"]):
        return "crashed"
    return status


@dataclass(frozen=True, slots=True)
class RunRef:
    run_id: int
    run_name: str


def resolve_run(conn: sqlite3.Connection, name: str | None) -> RunRef:
    """A named run, or without a name the run that started or resumed recording last: after
    ``--resume`` of an older run, that run (the one recording now), not the newest created."""
    if name is None:
        # sessions rows are only ever inserted, one per start or resume: the latest is last
        row = conn.execute(
            "SELECT run_id, run_name FROM runs r ORDER BY"
            " coalesce((SELECT max(s.rowid) FROM sessions s WHERE s.run_id = r.run_id), 0) DESC,"
            " run_id DESC LIMIT 1"
        ).fetchone()
        if row is None:
            raise QueryError("the database has no runs yet")
    else:
        # Stripped as a new run's name is (config.py), so a name is found as it was given.
        row = conn.execute(
            "SELECT run_id, run_name FROM runs WHERE run_name = ?", (name.strip(),)
        ).fetchone()
        if row is None:
            return _run_written_otherwise(conn, name)
    return RunRef(int(row["run_id"]), str(row["run_name"]))


def _run_written_otherwise(conn: sqlite3.Connection, name: str) -> RunRef:
    """The one run whose name is ``name`` up to Unicode form and case, as labels are compared
    (:func:`~trajmon.config.label_key`): ``é`` typed as one character or as ``e`` + accent (a
    name pasted from a macOS file name) looks the same, and "unknown run 'Café'" beside a run
    named Café left the operator nothing to act on. Run names are unique only up to ASCII case,
    so two runs can match: that is refused, not guessed. Only after the exact lookup failed, so
    the scan of the names costs nothing on the usual path; names that merely begin with
    ``name`` are named in the error, never taken (a script asking for a run not created yet
    must not be given an older one)."""
    key = label_key(name.strip())
    runs = [
        (int(run_id), str(run_name), label_key(str(run_name)))
        for run_id, run_name in conn.execute("SELECT run_id, run_name FROM runs ORDER BY run_id")
    ]
    same = [(run_id, run_name) for run_id, run_name, k in runs if k == key]
    if len(same) == 1:
        return RunRef(*same[0])
    if same:
        shown = ", ".join(ascii(run_name) for _, run_name in same)
        raise QueryError(f"run name {name!r} is ambiguous: it matches {shown}; give one of them")
    begun = [run_name for _, run_name, k in runs if k.startswith(key)]
    hint = ""
    if key and begun:
        hint = f" (runs whose names begin so: {listed(map(repr, begun), 5)})"
    raise QueryError(f"unknown run {name!r}{hint}")


def list_runs(conn: sqlite3.Connection, now: float | None = None) -> list[dict[str, Any]]:
    rows = conn.execute(
        "SELECT r.*,"
        " (SELECT coalesce(sum(samples), 0) FROM poll_groups g"
        "   WHERE g.run_id = r.run_id AND g.kind = 'signal') AS signal_samples,"
        " (SELECT coalesce(sum(samples), 0) FROM poll_groups g"
        "   WHERE g.run_id = r.run_id AND g.kind = 'spec') AS spec_samples,"
        " (SELECT coalesce(sum(missed_ticks), 0) FROM poll_groups g"
        "   WHERE g.run_id = r.run_id) AS missed_ticks,"
        " (SELECT coalesce(sum(max(samples_read - samples, 0)), 0) FROM poll_groups g"
        "   WHERE g.run_id = r.run_id) AS pending"
        " FROM runs r ORDER BY r.run_id"
    ).fetchall()
    out = []
    for row in rows:
        duration = row["end_dt_s"] if row["end_dt_s"] is not None else row["heartbeat_dt_s"]
        status = effective_status(row, now)
        lost = int(row["lost_samples"])
        if status == "crashed":  # read but never committed: nobody will commit them now
            lost += int(row["pending"])  # as `status` counts them, and a resume will
        out.append(
            {
                "run_id": row["run_id"],
                "run_name": row["run_name"],
                "status": status,
                "run_start_utc": row["run_start_utc"],
                "duration_s": duration,
                "signal_samples": row["signal_samples"],
                "spec_samples": row["spec_samples"],
                "missed_ticks": row["missed_ticks"],
                "actions": row["actions"],
                "errors": row["errors"],
                "lost_samples": lost,
            }
        )
    return out


def _channel_types(conn: sqlite3.Connection, run_id: int) -> dict[int, str]:
    rows = conn.execute("SELECT channel_id, value_type FROM channels WHERE run_id = ?", (run_id,))
    return {int(r[0]): str(r[1]) for r in rows}


def _action_dict(row: sqlite3.Row, types: dict[int, str]) -> dict[str, Any]:
    vtype = types.get(int(row["channel_id"]), "any")
    return {
        "action_idx": row["action_idx"],
        "dt_s": row["dt_s"],
        "sample_idx": row["sample_idx"],
        "prev_dt_s": row["prev_dt_s"],
        "detected_at_utc": row["detected_at_utc"],
        "spec_label": row["spec_label"],
        "old_value": decode_value(vtype, row["old_value"]),
        "new_value": decode_value(vtype, row["new_value"]),
        "delta": row["delta"],
        "window_start_s": row["window_start_s"],
        "window_end_s": row["window_end_s"],
    }


def _spec_label(conn: sqlite3.Connection, run: RunRef, spec: str) -> str:
    """The run's spec label ``spec`` names, compared as labels are kept unique (up to case and
    Unicode form, :func:`~trajmon.config.label_key`: "no spec 'Température'; its specs:
    Température" was the answer to an ``é`` typed as ``e`` + accent); a name that is no spec of
    the run is an error, not an empty list."""
    row = conn.execute(
        "SELECT label FROM channels WHERE run_id = ? AND kind = 'spec' AND label = ?"
        " COLLATE NOCASE",
        (run.run_id, spec),
    ).fetchone()
    if row is not None:
        return str(row[0])
    specs = [
        str(r[0])
        for r in conn.execute(
            "SELECT label FROM channels WHERE run_id = ? AND kind = 'spec' ORDER BY channel_id",
            (run.run_id,),
        )
    ]
    key = label_key(spec)
    same = [label for label in specs if label_key(label) == key]
    if len(same) == 1:  # a run recorded before labels were unique so (two): named exactly
        return same[0]
    known = listed(specs, 12) if specs else "none"
    raise QueryError(f"run {run.run_name!r} has no spec {spec!r}; its specs: {known}")


def list_actions(
    conn: sqlite3.Connection,
    run: RunRef,
    *,
    spec: str | None = None,
    since: float | None = None,
    until: float | None = None,
    limit: int | None = None,
    last: int | None = None,
) -> list[dict[str, Any]]:
    """The run's actions in order, filtered; ``limit`` keeps the first N, ``last`` the latest N
    (after a night's run those are the ones an operator asks about)."""
    return list(
        iter_actions(conn, run, spec=spec, since=since, until=until, limit=limit, last=last)
    )


#: Actions read per query by :func:`iter_actions`.
ACTION_CHUNK = 2000


def iter_actions(
    conn: sqlite3.Connection,
    run: RunRef,
    *,
    spec: str | None = None,
    since: float | None = None,
    until: float | None = None,
    limit: int | None = None,
    last: int | None = None,
) -> Iterable[dict[str, Any]]:
    """:func:`list_actions` one action at a time, read :data:`ACTION_CHUNK` at a time: memory
    does not grow with the run. The arguments are checked, and which actions are listed is
    fixed (the range of their ``action_idx``), when this is called; the chunks are read as
    they are iterated, and again at each new iteration. Actions are only ever appended, with
    a growing ``action_idx``, so a chunk read in a later transaction gives the rows the first
    snapshot held: the caller may end its read transaction after this call, and not hold the
    database's log at its snapshot while a slow reader (``| less``) takes the output."""
    if not isinstance(run, RunRef):  # a run's name: an easy slip, an AttributeError deep down
        raise TypeError(f"run must be a RunRef (resolve_run(conn, name)), not {run!r}")
    for name, count in (("limit", limit), ("last", last)):
        if count is not None and (isinstance(count, bool) or not isinstance(count, int)):
            raise TypeError(f"{name} must be a whole number, not {count!r}")  # 2.5: SQLite's
    if limit is not None and last is not None:  # "datatype mismatch" said nothing of the cause
        raise ValueError("limit and last cannot be combined")
    # SQLite reads a negative LIMIT as no limit and a NaN bound as NULL (no row matches): both
    # would quietly answer another question than the one asked, as `actions list` refuses them.
    for name, count in (("limit", limit), ("last", last)):
        if count is not None and count < 0:
            raise ValueError(f"{name} must be 0 or more, got {count}")
    for name, bound in (("since", since), ("until", until)):
        if bound is not None and math.isnan(bound):
            raise ValueError(f"{name} must be a number of seconds, got {bound}")
    where, args = "run_id = ?", list[Any]([run.run_id])
    if spec is not None:
        where += " AND spec_label = ?"
        args.append(_spec_label(conn, run, spec))
    # In the chunks' query "+dt_s" keeps SQLite from reading the whole --since/--until range
    # by time, and sorting it, for each chunk: they walk the primary key.
    when = [(op, bound) for op, bound in ((">=", since), ("<=", until)) if bound is not None]
    chunk_where = where + "".join(f" AND +dt_s {op} ?" for op, _ in when)
    where += "".join(f" AND dt_s {op} ?" for op, _ in when)
    args += [bound for _, bound in when]
    chosen = f"SELECT action_idx FROM actions WHERE {where}"
    if last is not None:
        chosen += f" ORDER BY action_idx DESC LIMIT {int(last)}"
    first, most = conn.execute(
        f"SELECT min(action_idx), max(action_idx) FROM ({chosen})", args
    ).fetchone()
    if first is None or limit == 0:
        return ()
    chunk_sql = (
        f"SELECT * FROM actions WHERE {chunk_where}"
        " AND action_idx >= ? AND action_idx <= ? ORDER BY action_idx LIMIT ?"
    )
    types = _channel_types(conn, run.run_id)
    return _Chunks(conn, chunk_sql, args, (int(first), int(most)), limit, types)


@dataclass(frozen=True, slots=True)
class _Chunks:
    """The actions ``sql`` selects in ``span`` (first and last ``action_idx``), in order; each
    iteration reads them again (a table measures its columns, then draws them)."""

    conn: sqlite3.Connection
    sql: str
    args: list[Any]
    span: tuple[int, int]
    limit: int | None
    types: dict[int, str]

    def __iter__(self) -> Iterator[dict[str, Any]]:
        start, most = self.span
        left = self.limit
        while True:
            n = ACTION_CHUNK if left is None else min(ACTION_CHUNK, left)
            rows = self.conn.execute(self.sql, [*self.args, start, most, n]).fetchall()
            for row in rows:
                yield _action_dict(row, self.types)
            if len(rows) < n:
                return
            if left is not None:
                left -= n
                if left == 0:
                    return
            start = int(rows[-1]["action_idx"]) + 1


def get_action(conn: sqlite3.Connection, run: RunRef, action_idx: int) -> dict[str, Any]:
    row = conn.execute(
        "SELECT * FROM actions WHERE run_id = ? AND action_idx = ?", (run.run_id, action_idx)
    ).fetchone()
    if row is None:
        raise QueryError(f"run {run.run_name!r} has no action {action_idx}")
    return _action_dict(row, _channel_types(conn, run.run_id))
