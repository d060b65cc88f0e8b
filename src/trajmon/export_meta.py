"""What an exported run says about itself: ``run.json``, and the metadata of every data file.

A Parquet or netCDF file is often passed on alone, without ``run.json`` beside it, and its
``dt_s`` are seconds since the run's start: so each file names its run and says when that start
was and which trajmon recorded it. A file only carries what cannot change once the run exists.
Status, counters, heartbeat and session spans of a live or resumable run are stale as soon as
the file is copied on; they stay in ``run.json``, which every export rewrites.
"""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from .export_sinks import MetaValue
from .queries import RunRef

__all__ = ["run_document", "run_metadata"]


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
