"""A large recorded run (10M signal samples) for the query and export benchmarks, built fast.

Recording 10M samples through trajmon would take hours of wall time at 1 kHz, so the fixture is
*built*: the run, its poll groups, channel catalog and typed tables come from trajmon's own
``runstore.create_run``; the sample rows are then bulk-inserted with plain ``executemany`` into
those tables, the segments index is computed exactly as the writer computes it (per
``sample_idx // rotate_entries``: first/last index, first/last ``dt_s``, row count), spec
changes become action rows with their ±2.5 s windows, and ``runstore.finish_run`` closes the run.
The layout is the default configuration's: 2 float signals at 1 kHz, 5 float specs at 10 Hz.

Run as ``python -m benchmarks.fixture DB ROWS`` so the builder's memory never counts towards
the RSS of the benchmark that uses the fixture.
"""

from __future__ import annotations

import contextlib
import sqlite3
import subprocess
import sys
from pathlib import Path

import anyio
import numpy as np

from trajmon.channels import Channel, PollGroup
from trajmon.config import MonitorConfig
from trajmon.connection import open_connection
from trajmon.runstore import NewRun, create_run, finish_run
from trajmon.schema import insert_sql, migrate

__all__ = ["RUN", "SIGNALS", "SPECS", "ensure_fixture"]

RUN = "big"
ROTATE = 6000
SIGNAL_S, SPEC_S, WINDOW_S = 0.001, 0.1, 2.5
CHANGE_EVERY = 100  # spec samples between two changes (10 s)


def _chan(label: str, kind: str, group: str, unit: str) -> Channel:
    src = "stm." + label.lower().replace(" ", "_")
    return Channel(label, kind, src, "stm", group, unit, "float")  # type: ignore[arg-type]


SIGNALS = PollGroup(
    "signals",
    "signal",
    SIGNAL_S,
    (
        _chan("Z Position", "signal", "signals", "m"),
        _chan("Tunnel Current", "signal", "signals", "A"),
    ),
)
SPECS = PollGroup(
    "specs",
    "spec",
    SPEC_S,
    tuple(
        _chan(label, "spec", "specs", unit)
        for label, unit in (
            ("Bias", "V"),
            ("Z Setpoint", "A"),
            ("Z Controller I Gain", "m/s"),
            ("Scan Frame Width", "m"),
            ("Scan Frame Angle", "deg"),
        )
    ),
)

_SEGMENT = "INSERT INTO segments VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
_ACTION = "INSERT INTO actions VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"


def _insert_group(
    conn: sqlite3.Connection, run_id: int, gid: int, group: PollGroup, rows: int, seed: int
) -> np.ndarray:
    """Bulk-insert ``rows`` samples of ``group``; returns the spec values (for actions)."""
    rng = np.random.default_rng(seed)
    sql = insert_sql(f"{RUN}/{group.name}", group)
    width = len(group.channels)
    spec_values = np.empty((0, width))
    chunk = 200_000
    for first in range(0, rows, chunk):
        idx = np.arange(first, min(rows, first + chunk))
        dt = idx * group.interval_s + rng.uniform(0, 2e-4, idx.size)
        read = rng.uniform(5e-5, 2e-4, idx.size)
        if group.kind == "spec":
            level = (idx // CHANGE_EVERY).astype(float)
            values = np.stack([level * 0.01 + c for c in range(width)], axis=1)
            spec_values = np.vstack([spec_values, values])
        else:
            values = rng.normal(1e-9, 1e-10, (idx.size, width))
        cols = [
            idx.tolist(),
            dt.tolist(),
            read.tolist(),
            *(values[:, c].tolist() for c in range(width)),
        ]
        conn.execute("BEGIN")
        conn.executemany(sql, zip(*cols, strict=True))
        segs = []
        for seg in range(int(idx[0]) // ROTATE, int(idx[-1]) // ROTATE + 1):
            mask = (idx // ROTATE) == seg
            i, d = idx[mask], dt[mask]
            segs.append(
                (run_id, gid, seg, int(i[0]), int(i[-1]), float(d[0]), float(d[-1]), int(i.size))
            )
        # Chunks do not align with segments: merge like the writer's upsert does.
        conn.executemany(
            _SEGMENT + " ON CONFLICT (run_id, group_id, segment_id) DO UPDATE SET"
            " last_idx = excluded.last_idx, last_dt_s = excluded.last_dt_s,"
            " rows = rows + excluded.rows",
            segs,
        )
        conn.execute("COMMIT")
    return spec_values


def _actions(run_id: int, spec_values: np.ndarray) -> list[tuple[object, ...]]:
    out: list[tuple[object, ...]] = []
    for k in range(CHANGE_EVERY, spec_values.shape[0], CHANGE_EVERY):
        c = (k // CHANGE_EVERY) % spec_values.shape[1]
        old, new = float(spec_values[k - 1, c]), float(spec_values[k, c])
        dt = k * SPEC_S
        out.append(
            (
                run_id,
                len(out),
                dt,
                k,
                dt - SPEC_S,
                "2026-01-01T00:00:00+00:00",
                SPECS.channels[c].label,
                2 + c,
                old,
                new,
                new - old,
                dt - WINDOW_S,
                dt + WINDOW_S,
            )
        )
    return out


async def _build(db: Path, signal_rows: int) -> None:
    cfg = MonitorConfig(run_name=RUN, db=db, rotate_entries=ROTATE, channels=[])
    conn = await open_connection(db)
    try:
        target = await create_run(conn, NewRun(RUN, 1.7e9, 0.0, cfg, [SIGNALS, SPECS], None))
    finally:
        await conn.close()
    duration = signal_rows * SIGNAL_S
    spec_rows = int(duration / SPEC_S)
    with contextlib.closing(sqlite3.connect(db, isolation_level=None)) as bulk:
        bulk.execute("PRAGMA synchronous = NORMAL")
        _insert_group(bulk, target.run_id, 0, SIGNALS, signal_rows, seed=1)
        spec_values = _insert_group(bulk, target.run_id, 1, SPECS, spec_rows, seed=2)
        actions = _actions(target.run_id, spec_values)
        bulk.execute("BEGIN")
        bulk.executemany(_ACTION, actions)
        bulk.execute("COMMIT")
    for gid, rows in ((0, signal_rows), (1, spec_rows)):
        target.stats[gid].samples_read = target.stats[gid].samples_committed = rows
    target.actions = len(actions)
    conn = await open_connection(db)
    try:
        await finish_run(
            conn,
            target,
            status="completed",
            end_dt_s=duration,
            end_epoch=1.7e9 + duration,
            lost_samples=0,
            message=None,
        )
        await conn.execute(
            "UPDATE poll_groups SET first_dt_s = 0, last_dt_s = ? WHERE run_id = ?",
            (duration, target.run_id),
        )
    finally:
        await conn.close()


def build(db: Path, signal_rows: int) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    with contextlib.closing(sqlite3.connect(db)) as setup:
        migrate(setup)
    anyio.run(_build, db, signal_rows)


def ensure_fixture(workdir: Path, signal_rows: int) -> Path:
    """The fixture for ``signal_rows``, built once per harness invocation (in a subprocess)."""
    db = workdir / f"fixture_{signal_rows}.db"
    done = db.with_suffix(".ok")
    if not done.exists():
        subprocess.run(
            [sys.executable, "-m", "benchmarks.fixture", str(db), str(signal_rows)], check=True
        )
        done.touch()
    return db


if __name__ == "__main__":
    build(Path(sys.argv[1]), int(sys.argv[2]))
