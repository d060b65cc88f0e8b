"""Findings of a ten-minute soak run (1 kHz against the TCP simulator, a 15 s outage, and every
query command and an export of the live run every 30 s from another process).

An export of the live run wrote a ``run.json`` saying it had ``crashed`` and had lost samples:
the status document was worked out after the data files, from the heartbeat of the snapshot the
export began with but against the wall clock at its end. An export of a long run takes longer
than the heartbeat's threshold (5 s), so every export of a live run of some length said so.
"""

from __future__ import annotations

import json
import sqlite3
import types
from contextlib import closing
from pathlib import Path

import anyio
import pytest
from test_explore_api import Bench, bench, config, first_samples, ticks

from trajmon import Recorder
from trajmon.clock import FakeClock
from trajmon.export import export_run
from trajmon.export_sinks import Format
from trajmon.queries import connect_readonly, resolve_run

__all__ = ["bench"]  # test_explore_api's instrument, used as a fixture here


def _committed(db: Path) -> int:
    """Samples of the run committed so far, as a reader sees them."""
    with closing(sqlite3.connect(db)) as conn:
        (n,) = conn.execute("SELECT coalesce(sum(samples), 0) FROM poll_groups").fetchone()
    return int(n)


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
async def test_export_of_a_live_run_says_it_is_running_however_long_it_takes(
    db_path: Path, bench: Bench, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fmt: Format
) -> None:
    clock = FakeClock()
    # The status document's wall clock is the recorder's: the export's minute passes on it.
    monkeypatch.setattr("trajmon.status.time", types.SimpleNamespace(time=clock.wall))
    recorder = Recorder(config(db_path, commit_interval_s=0.05), {"bench": bench}, clock=clock)
    async with anyio.create_task_group() as tg:
        tg.start_soon(recorder.run)
        await first_samples(recorder)
        with anyio.fail_after(10):
            while _committed(db_path) < 4:
                await ticks(recorder, clock, 1)

        def slow_export(rows: int) -> None:
            clock.jump(60.0)  # a long run's export: a minute of writing files

        with closing(connect_readonly(db_path)) as conn:
            export_run(conn, resolve_run(conn, "run"), fmt, tmp_path / "out", progress=slow_export)
        recorder.request_stop()
    doc = json.loads((tmp_path / "out" / "run" / "run.json").read_text(encoding="utf-8"))
    assert doc["status"] == "running", doc["status"]
    assert doc["lost_samples"] == 0
    assert doc["session_spans"][-1]["status"] == "running"
