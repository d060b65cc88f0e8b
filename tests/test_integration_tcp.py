"""End to end: ~5 s of a scripted operator on the TCP simulator, through the real driver."""

from __future__ import annotations

import dataclasses
import itertools
import math
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, closing
from pathlib import Path
from typing import Any

import anyio
import pytest

from simulators.operator import Scenario, load_scenario, quick_scenario_path
from simulators.serve import RunningSimulator, run_simulator
from trajmon import MonitorConfig, Recorder, RunSummary
from trajmon.drivers.nanonis import NanonisSTM
from trajmon.queries import connect_readonly, list_actions, resolve_run
from trajmon.scoring import score_recording

ROTATE = 7  # small, so the run spans many segments
#: The quick scenario played twice as fast: its 12 changes 0.35 s apart instead of 0.7 s (still
#: more than three spec ticks), the last at 4.35 s, so the recording takes 5 s instead of 10.
#: Every check here is per change or per sample; none needs a longer run.
SPEEDUP = 2.0
DURATION_S = 5.0


def scenario() -> Scenario:
    """The bundled quick scenario, :data:`SPEEDUP` times faster."""
    quick = load_scenario(quick_scenario_path())
    changes = tuple(dataclasses.replace(c, at_s=c.at_s / SPEEDUP) for c in quick.changes)
    return dataclasses.replace(quick, changes=changes)


@asynccontextmanager
async def simulated_stm() -> AsyncIterator[tuple[RunningSimulator, NanonisSTM]]:
    async with run_simulator(port=0, scenario=scenario(), start_operator=False) as sim:
        stm = await anyio.to_thread.run_sync(
            lambda: NanonisSTM("stm", address=sim.host, port=sim.port, timeout=2.0)
        )
        try:
            yield sim, stm
        finally:
            await anyio.to_thread.run_sync(stm.close)


async def record_scenario(db: Path) -> tuple[RunSummary, Recorder, RunningSimulator, list[Any]]:
    config = MonitorConfig(run_name="it", db=db, duration_s=DURATION_S, rotate_entries=ROTATE)
    async with simulated_stm() as (sim, stm):
        recorder = Recorder(config, {"stm": stm})
        async with anyio.create_task_group() as tg:

            async def start_operator() -> None:
                await recorder.started.wait()
                sim.start_operator()

            tg.start_soon(start_operator)
            summary = await recorder.run()
        assert sim.operator is not None and sim.operator_task is not None
        truth = await sim.operator_task
        assert not sim.operator.errors
        return summary, recorder, sim, truth


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    db = tmp_path_factory.mktemp("it") / "it.db"
    summary, recorder, sim, truth = anyio.run(record_scenario, db)
    return {
        "db": db,
        "summary": summary,
        "recorder": recorder,
        "truth": truth,
        "requests": dict(sim.server.request_counts),
    }


def test_run_completed_without_loss(recorded: dict[str, Any]) -> None:
    summary = recorded["summary"]
    assert summary.status == "completed"
    assert summary.lost_samples == 0
    with closing(sqlite3.connect(recorded["db"])) as conn:
        for name, samples, read, table in conn.execute(
            "SELECT name, samples, samples_read, table_name FROM poll_groups"
        ):
            rows = conn.execute(f'SELECT count(*) FROM "{table}"').fetchone()[0]
            assert rows == samples == read, name
    # Each signal sample is exactly one Signals.ValsGet; nothing read was dropped.
    assert recorded["requests"]["Signals.ValsGet"] == summary.signal_samples
    # DURATION_S at the default 0.1 s interval: every tick is a sample or counted as missed.
    assert summary.signal_samples + summary.groups[0].missed_ticks == 50


def test_every_scenario_change_detected_once(recorded: dict[str, Any]) -> None:
    assert len(scenario().changes) >= 10
    with closing(connect_readonly(recorded["db"])) as conn:
        actions = list_actions(conn, resolve_run(conn, "it"))
    score, required = score_recording(recorded["recorder"], recorded["truth"], actions)
    assert len(required) >= 10
    assert score.unmatched_truth == [] and score.unmatched_detected == []
    assert score.precision == 1.0 and score.recall == 1.0


def test_detection_latency_within_one_interval_plus_read(recorded: dict[str, Any]) -> None:
    """Each change is detected by the first spec tick after it: within one interval of it, plus
    the read, plus however late that tick started (lateness is the scheduler's figure, measured
    on its own; a GC pause of a busy test process can delay a tick by tens of ms)."""
    (interval,) = {g.interval_s for g in recorded["recorder"].groups if g.kind == "spec"}
    with closing(sqlite3.connect(recorded["db"])) as conn:
        read_s = dict(conn.execute('SELECT dt_s, read_s FROM "it/specs"').fetchall())
        actions = conn.execute("SELECT spec_label, dt_s FROM actions").fetchall()
    t0 = recorded["recorder"].t0_mono
    truth = {(e.label, e.new): e.t_sent_mono - t0 for e in recorded["truth"]}
    with closing(connect_readonly(recorded["db"])) as conn:
        detailed = list_actions(conn, resolve_run(conn, "it"))
    for (label, dt_s), act in zip(actions, detailed, strict=True):
        true_t = truth[(label, act["new_value"])]
        lateness = dt_s - math.floor(dt_s / interval + 1e-9) * interval  # ticks: k * interval
        assert abs(dt_s - true_t) <= interval + lateness + read_s[dt_s], (label, dt_s, true_t)


def test_window_bounds_and_segments(recorded: dict[str, Any]) -> None:
    with closing(sqlite3.connect(recorded["db"])) as conn:
        for dt_s, start, end in conn.execute(
            "SELECT dt_s, window_start_s, window_end_s FROM actions"
        ):
            assert start == pytest.approx(dt_s - 2.5, abs=1e-12)
            assert end == pytest.approx(dt_s + 2.5, abs=1e-12)
        for table in ("it/signals", "it/specs"):
            rows = conn.execute(
                f'SELECT sample_idx, segment_id, dt_s FROM "{table}" ORDER BY sample_idx'
            ).fetchall()
            assert [r[0] for r in rows] == list(range(len(rows)))
            assert all(seg == idx // ROTATE for idx, seg, _ in rows)
            assert all(b[2] > a[2] for a, b in itertools.pairwise(rows)), "dt_s strictly increases"
        segs = conn.execute(
            "SELECT sum(rows), count(*) FROM segments s JOIN poll_groups g"
            " USING (run_id, group_id) WHERE g.name = 'signals'"
        ).fetchone()
        total = conn.execute('SELECT count(*) FROM "it/signals"').fetchone()[0]
    assert segs[0] == total and segs[1] == -(-total // ROTATE)
