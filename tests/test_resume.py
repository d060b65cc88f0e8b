"""Resuming a run: same timeline, continued indices, actions across the gap."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import anyio
import pytest

from simulators.qcodes_sim import SimulatedSTM
from trajmon import ConfigError, MonitorConfig, Recorder
from trajmon.queries import connect_readonly, list_actions, list_runs, resolve_run
from trajmon.resume import load_resume_config


@pytest.fixture
def stm() -> Iterator[SimulatedSTM]:
    instrument = SimulatedSTM("stm", seed=2)
    yield instrument
    instrument.close()


async def record_until(recorder: Recorder, samples: int) -> None:
    async with anyio.create_task_group() as tg:
        tg.start_soon(recorder.run)
        with anyio.fail_after(30):
            await recorder.wait_until(lambda: recorder.stats[1].samples_read >= samples)
        recorder.request_stop()


async def test_resume_continues_indices_timeline_and_detection(
    db_path: Path, stm: SimulatedSTM
) -> None:
    config = MonitorConfig(run_name="long", db=db_path, interval_s=0.02)
    await record_until(Recorder(config, {"stm": stm}), 10)
    await anyio.to_thread.run_sync(stm.bias.set, 1.25)  # turned while trajmon was down

    resumed = load_resume_config(db_path, "long").updated(duration_s=0.3)
    assert resumed.interval_s == 0.02
    summary = await Recorder(resumed, {"stm": stm}, resume=True).run()
    assert summary.status == "completed"

    with closing(sqlite3.connect(db_path)) as conn:
        for table in ("long/signals", "long/specs"):
            rows = conn.execute(
                f'SELECT sample_idx, dt_s FROM "{table}" ORDER BY sample_idx'
            ).fetchall()
            assert [r[0] for r in rows] == list(range(len(rows))), "sample_idx continues"
            dts = [r[1] for r in rows]
            assert dts == sorted(dts) and len(set(dts)) == len(dts)
        sessions = conn.execute(
            "SELECT session_idx, start_dt_s, end_dt_s, status FROM sessions ORDER BY session_idx"
        ).fetchall()
        counts = conn.execute("SELECT samples, samples_read FROM poll_groups").fetchall()
    assert [s[3] for s in sessions] == ["interrupted", "completed"]
    assert sessions[1][1] > sessions[0][2], "the outage is a gap on the run's own timeline"
    assert all(samples == read for samples, read in counts)
    with closing(connect_readonly(db_path)) as conn:
        actions = list_actions(conn, resolve_run(conn, "long"), spec="Bias")
        (run,) = list_runs(conn)
    assert len(actions) == 1
    assert actions[0]["new_value"] == pytest.approx(1.25)
    assert actions[0]["dt_s"] >= sessions[1][1]
    assert actions[0]["prev_dt_s"] <= sessions[0][2]
    assert run["status"] == "completed"


async def test_resume_refuses_completed_unknown_and_live_runs(
    db_path: Path, stm: SimulatedSTM
) -> None:
    config = MonitorConfig(run_name="done", db=db_path, interval_s=0.05, duration_s=0.2)
    await Recorder(config, {"stm": stm}).run()
    with pytest.raises(ConfigError, match="it is completed"):
        load_resume_config(db_path, "done")
    with pytest.raises(ConfigError, match="unknown run 'nope'"):
        load_resume_config(db_path, "nope")
    with pytest.raises(ConfigError, match="database not found"):
        load_resume_config(db_path.with_name("none.db"), "done")
    with closing(sqlite3.connect(db_path)) as conn, conn:
        conn.execute("UPDATE runs SET status = 'running', heartbeat_epoch = ?", (2e9,))
    with pytest.raises(ConfigError, match="still recording"):
        load_resume_config(db_path, "done", now=2e9 + 1)
    # A running run whose heartbeat is stale has crashed: it may be resumed.
    assert load_resume_config(db_path, "done", now=2e9 + 60).run_name == "done"
