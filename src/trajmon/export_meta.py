"""What an exported run says about itself: ``run.json``, and the metadata of every data file.

A Parquet or netCDF file is often passed on alone, without ``run.json`` beside it, and its
``dt_s`` are seconds since the run's start: so each file names its run and says when that start
was and which trajmon recorded it. A file only carries what cannot change once the run exists.
Status, counters, heartbeat and session spans of a live or resumable run are stale as soon as
the file is copied on; they stay in ``run.json``, which every export rewrites.

``run.json`` is shared by the formats exported into one directory, and a CSV file carries no
metadata at all: so ``run.json`` says, per format, which range its files hold (:func:`exports`).
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .export_sinks import MetaValue
from .files import safe_filename
from .queries import QueryError, RunRef

__all__ = [
    "ExportError",
    "ExportResult",
    "exports",
    "run_directory",
    "run_document",
    "run_metadata",
]


class ExportError(QueryError):
    """The export cannot be written where asked: files of an earlier export (without
    ``overwrite``), an ``out`` that is not a directory, a path that leads outside it."""


@dataclass(slots=True)
class ExportResult:
    """What :func:`~trajmon.export.export_run` wrote: ``files`` (``run.json`` first) and the
    data rows of each (``rows``, by file name; ``run.json`` has none)."""

    run_name: str
    format: str
    directory: Path
    files: list[Path] = field(default_factory=list)
    rows: dict[str, int] = field(default_factory=dict)
    #: What the files do not hold as recorded (ints beyond int64 in Parquet or netCDF).
    warnings: list[str] = field(default_factory=list)
    #: The ``dt_s`` range exported (``None``: open on that side; both: the whole run).
    since: float | None = None
    until: float | None = None


def exports(directory: Path, result: ExportResult, extensions: Mapping[str, str]) -> dict[str, Any]:
    """``run.json``'s ``exports``: for each format whose files are in ``directory``, the range
    they hold and their data rows.

    Every export rewrites ``run.json``, and its ``export_range`` is that export's: a CSV slice
    followed by a whole-run Parquet export into the same directory left the CSV files with
    nothing saying they hold a slice. So the other formats' entries are carried over from the
    ``run.json`` being replaced, while their catalog file is there; a format whose files are
    there without an entry (a ``run.json`` of an older trajmon, or an unreadable one) is
    ``None``: what they hold is not known, which is said rather than guessed.
    """
    earlier: Any = None
    with contextlib.suppress(OSError, ValueError):
        earlier = json.loads((directory / "run.json").read_text(encoding="utf-8"))
    known = earlier.get("exports") if isinstance(earlier, dict) else None
    known = known if isinstance(known, dict) else {}
    out: dict[str, Any] = {}
    for fmt, ext in extensions.items():
        if fmt == result.format:
            out[fmt] = {"since_s": result.since, "until_s": result.until, "rows": dict(result.rows)}
        elif (directory / f"channels.{ext}").is_file():
            entry = known.get(fmt)
            out[fmt] = entry if isinstance(entry, dict) else None
    return out


def run_directory(out: Path, run_name: str) -> Path:
    """``out/<safe run name>``, checked: a file in the way was an ``OSError`` only once the
    mkdir failed (for a notebook, ``NotADirectoryError`` from deep in the export)."""
    out_resolved = out.resolve()
    target = out_resolved / safe_filename(run_name)
    if target.resolve().parent != out_resolved:  # e.g. a planted symlink
        raise ExportError(f"refusing to export outside {out}: {target} resolves elsewhere")
    for path in (out, target):
        if path.exists() and not path.is_dir():
            raise ExportError(f"{path} is not a directory")
    return target


def run_metadata(conn: sqlite3.Connection, ref: RunRef) -> dict[str, MetaValue]:
    """The keys every exported data file carries (a group's file adds its own).

    The start is the runs table's text, the same as in ``run.json``: a second spelling of the
    one origin (an epoch float, say) could only disagree with it. The version is the one that
    created the run; a resume does not change it.
    """
    row = conn.execute(
        "SELECT run_start_utc, trajmon_version FROM runs WHERE run_id = ?", (ref.run_id,)
    ).fetchone()
    return {
        "trajmon_run": ref.run_name,
        "trajmon_run_start_utc": str(row["run_start_utc"]),
        "trajmon_version": str(row["trajmon_version"]),
    }


def run_document(conn: sqlite3.Connection, ref: RunRef) -> dict[str, Any]:
    """``run.json``: the status document as of the export, with what explains the files."""
    from .status import run_status

    row = conn.execute(
        "SELECT config_json, trajmon_version, window_before_s, window_after_s, rotate_entries,"
        " heartbeat_dt_s FROM runs WHERE run_id = ?",
        (ref.run_id,),
    ).fetchone()
    doc = run_status(conn, ref)
    # Where each recording session starts and ends on the run's timeline, and how it ended: the
    # stretches between them are outages (a resumed run), not missed ticks.
    spans = conn.execute(
        "SELECT session_idx, started_utc, start_dt_s, end_dt_s, status FROM sessions"
        " WHERE run_id = ? ORDER BY session_idx",
        (ref.run_id,),
    )
    sessions = [dict(s) for s in spans]
    if sessions and sessions[-1]["status"] == "running" and doc["status"] == "crashed":
        sessions[-1].update(status="crashed", end_dt_s=row["heartbeat_dt_s"])  # as on resume
    doc.update(
        session_spans=sessions,
        config=json.loads(row["config_json"]),
        trajmon_version=row["trajmon_version"],
        window_before_s=row["window_before_s"],
        window_after_s=row["window_after_s"],
        rotate_entries=row["rotate_entries"],
    )
    return doc
