"""Resuming a run: same timeline, continued indices, actions across the gap."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path

import anyio
import pytest

from simulators.qcodes_sim import SimulatedSTM
from trajmon import ConfigError, MonitorConfig, Recorder, RunFailedError
from trajmon.connection import on_connection_thread, open_connection
from trajmon.queries import connect_readonly, list_actions, list_runs, resolve_run
from trajmon.resolve import build_groups
from trajmon.resume import ResumeState, load_resume_config, resume_run


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


@pytest.mark.parametrize(
    ("ended_as", "lost_after"),
    [("failed", 5), ("interrupted", 5), ("running", 5 + 3)],  # "running", heartbeat old: crashed
)
async def test_resume_counts_lost_samples_once(
    db_path: Path, stm: SimulatedSTM, ended_as: str, lost_after: int
) -> None:
    """A run that recorded its end counted its lost samples then (5 here); a crashed one never
    did, so its read-but-uncommitted samples (3 here) are counted when it is resumed. The
    resumed session's summary reports the run's total, as its samples and actions are."""
    config = MonitorConfig(run_name="lossy", db=db_path, interval_s=0.02)
    await record_until(Recorder(config, {"stm": stm}), 5)
    with closing(sqlite3.connect(db_path)) as conn:
        # As finish_run leaves a run whose end was written, or a crash its last commit.
        conn.execute(
            "UPDATE runs SET status = ?, lost_samples = 5, heartbeat_epoch = 0", (ended_as,)
        )
        conn.execute("UPDATE poll_groups SET samples_read = samples + 3 WHERE group_id = 0")
        conn.commit()
    resumed = load_resume_config(db_path, "lossy").updated(duration_s=0.2)
    summary = await Recorder(resumed, {"stm": stm}, resume=True).run()
    with closing(connect_readonly(db_path)) as conn:
        (run,) = list_runs(conn)
    assert run["lost_samples"] == lost_after
    assert summary.lost_samples == lost_after


async def test_two_resumes_of_one_run_one_is_refused(db_path: Path, stm: SimulatedSTM) -> None:
    """The check and the claim are one write transaction: of two processes resuming the same
    run at once, the second finds it running and is refused, instead of both recording."""
    config = MonitorConfig(run_name="twice", db=db_path, interval_s=0.02)
    await record_until(Recorder(config, {"stm": stm}), 5)
    groups = build_groups(config, {"stm": stm})
    outcomes: list[str] = []

    async def resume() -> None:
        conn = await open_connection(db_path)
        try:
            now = time.time()
            await resume_run(conn, "twice", groups, now_mono=time.monotonic(), now_wall=now)
            outcomes.append("resumed")
        except ConfigError as exc:
            outcomes.append(str(exc))
        finally:
            await conn.close()

    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            tg.start_soon(resume)
            tg.start_soon(resume)
    assert sorted(outcomes)[1] == "resumed", outcomes
    assert "it is still recording" in sorted(outcomes)[0], outcomes
    with closing(sqlite3.connect(db_path)) as conn:
        sessions = conn.execute("SELECT status FROM sessions ORDER BY session_idx").fetchall()
    assert [s[0] for s in sessions] == ["interrupted", "running"]


async def test_a_run_resumed_elsewhere_stops_the_old_writer_and_keeps_its_record(
    db_path: Path, stm: SimulatedSTM
) -> None:
    """A recorder suspended past the stale limit, its run resumed by another process meanwhile:
    when it wakes, its next commit finds a newer session and it stops — no duplicate indices,
    no counters or end status written over the new owner's record."""
    config = MonitorConfig(run_name="taken", db=db_path, interval_s=0.02)
    recorder = Recorder(config, {"stm": stm})
    failure: list[RunFailedError] = []

    async def record() -> None:
        try:
            await recorder.run()
        except RunFailedError as exc:
            failure.append(exc)

    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            tg.start_soon(record)
            await recorder.wait_until(lambda: recorder.stats[1].samples_read >= 5)
            conn = await open_connection(db_path)
            try:  # an hour on, the run looks crashed: as after a suspend
                groups = build_groups(config, {"stm": stm})
                now = time.time() + 3600
                await resume_run(conn, "taken", groups, now_mono=time.monotonic(), now_wall=now)
            finally:
                await conn.close()
    (exc,) = failure
    assert exc.summary.status == "failed" and "another process resumed this run" in str(exc)
    with closing(sqlite3.connect(db_path)) as conn:
        run = conn.execute("SELECT status, sessions, message FROM runs").fetchone()
        sessions = conn.execute("SELECT status FROM sessions ORDER BY session_idx").fetchall()
    assert run == ("running", 2, None), "the record is the resuming process's"
    assert [s[0] for s in sessions] == ["crashed", "running"]


async def test_without_a_name_readers_pick_the_run_that_recorded_last(
    db_path: Path, stm: SimulatedSTM
) -> None:
    """After an older run is resumed, `status`, `actions` and `export` without --run mean the
    run being recorded now, not the newest one created."""
    for name in ("older", "newer"):
        config = MonitorConfig(run_name=name, db=db_path, interval_s=0.02)
        await record_until(Recorder(config, {"stm": stm}), 3)
    with closing(connect_readonly(db_path)) as conn:
        assert resolve_run(conn, None).run_name == "newer"
    resumed = load_resume_config(db_path, "older").updated(duration_s=0.1)
    await Recorder(resumed, {"stm": stm}, resume=True).run()
    with closing(connect_readonly(db_path)) as conn:
        assert resolve_run(conn, None).run_name == "older"
        assert [r["run_name"] for r in list_runs(conn)] == ["older", "newer"]  # by creation


async def resume_traced(
    db_path: Path, stm: SimulatedSTM, name: str, at_lock: Callable[[], None] | None = None
) -> tuple[list[str], ResumeState]:
    """``resume_run`` of ``name``, with every statement its connection ran, in order;
    ``at_lock`` runs as the write lock is asked for (from another connection)."""
    statements: list[str] = []

    def trace(sql: str) -> None:
        if sql == "BEGIN IMMEDIATE" and at_lock is not None and "BEGIN IMMEDIATE" not in statements:
            at_lock()
        statements.append(sql)

    groups = build_groups(load_resume_config(db_path, name), {"stm": stm})
    conn = await open_connection(db_path)
    try:
        await on_connection_thread(conn, lambda db: db.set_trace_callback(trace))
        state = await resume_run(conn, name, groups, now_mono=0.0, now_wall=time.time())
    finally:
        await conn.close()
    return statements, state


async def test_a_resume_scans_for_last_spec_values_before_taking_the_write_lock(
    db_path: Path, stm: SimulatedSTM
) -> None:
    """A spec that failed to read for days leaves millions of NULLs for the scan back to its
    last value: seconds, which under the write lock made another run recording into the same
    file fail with "database is locked" (busy_timeout 2 s). The scan runs before the lock."""
    await record_until(Recorder(MonitorConfig(run_name="nulls", db=db_path), {"stm": stm}), 6)
    with closing(sqlite3.connect(db_path)) as conn, conn:  # the Bias reads failed after row 2
        (bias,) = conn.execute('SELECT "Bias" FROM "nulls/specs" WHERE sample_idx = 2').fetchone()
        conn.execute('UPDATE "nulls/specs" SET "Bias" = NULL WHERE sample_idx > 2')

    statements, state = await resume_traced(db_path, stm, "nulls")

    lock = statements.index("BEGIN IMMEDIATE")
    scans = [i for i, sql in enumerate(statements) if "IS NOT NULL" in sql]
    assert scans and max(scans) < lock, statements
    assert state.last_spec_values["Bias"][1] == bias


async def test_a_spec_table_grown_before_the_lock_is_scanned_again_under_it(
    db_path: Path, stm: SimulatedSTM
) -> None:
    """The run was still stopping as the resume began: a row written between the snapshot's
    scan and the claim must be the detector's starting value, not the one scanned before."""
    await record_until(Recorder(MonitorConfig(run_name="late", db=db_path), {"stm": stm}), 6)
    with closing(sqlite3.connect(db_path)) as conn:
        top, dt_s = conn.execute('SELECT max(sample_idx), max(dt_s) FROM "late/specs"').fetchone()

    def late_commit() -> None:
        with closing(sqlite3.connect(db_path)) as other, other:
            other.execute(
                'INSERT INTO "late/specs" (sample_idx, dt_s, read_s, "Bias") VALUES (?, ?, 0, 7.5)',
                (top + 1, dt_s + 1.0),
            )

    statements, state = await resume_traced(db_path, stm, "late", at_lock=late_commit)

    assert state.last_spec_values["Bias"] == (dt_s + 1.0, 7.5)
    assert state.next_idx[1] == top + 2
    lock = statements.index("BEGIN IMMEDIATE")
    assert any("IS NOT NULL" in sql for sql in statements[lock:]), "scanned again under the lock"
