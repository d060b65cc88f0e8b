"""The recorder on the in-process simulated STM: lifecycle, catalog, actions, bounded memory."""

from __future__ import annotations

import gc
import json
import math
import sqlite3
import tracemalloc
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import anyio
import pytest

from simulators.qcodes_sim import SimulatedSTM
from trajmon import MonitorConfig, Recorder, RunExistsError, RunFailedError
from trajmon import writer as writer_module
from trajmon.queries import connect_readonly, list_actions, list_runs, resolve_run
from trajmon.schema import SCHEMA_VERSION
from trajmon.sink import QueueSink


@pytest.fixture
def stm() -> Iterator[SimulatedSTM]:
    instrument = SimulatedSTM("stm", seed=1)
    yield instrument
    instrument.close()


async def test_short_run_commits_every_sample_and_the_catalog(
    db_path: Path, stm: SimulatedSTM
) -> None:
    config = MonitorConfig(run_name="short", db=db_path, duration_s=1.0, interval_s=0.02)
    summary = await Recorder(config, {"stm": stm}, snapshot={"stm": stm.snapshot()}).run()
    assert summary.status == "completed"
    assert summary.duration_s == pytest.approx(1.0, abs=0.05)
    for group in summary.groups:
        assert group.samples == group.samples_read
        assert group.samples + group.missed_ticks == 50
    with closing(sqlite3.connect(db_path)) as conn:
        assert conn.execute('SELECT count(*) FROM "short/signals"').fetchone()[0] == (
            summary.signal_samples
        )
        catalog = conn.execute(
            "SELECT label, kind, unit, value_type, source FROM channels ORDER BY channel_id"
        ).fetchall()
        snapshot = json.loads(conn.execute("SELECT snapshot_json FROM runs").fetchone()[0])
        (version,) = conn.execute("PRAGMA user_version").fetchone()
        (mode,) = conn.execute("PRAGMA journal_mode").fetchone()
    assert ("Tunnel Current", "signal", "A", "float", "stm.current") in catalog
    assert ("Z Controller Enabled", "spec", "", "bool", "stm.z_controller_enabled") in catalog
    assert ("Scan Status Code", "spec", "", "int", "stm.scan_status") in catalog
    assert len(catalog) == 12
    assert "stm" in snapshot
    assert version == SCHEMA_VERSION and mode == "wal"


async def test_spec_set_from_another_thread_becomes_an_action(
    db_path: Path, stm: SimulatedSTM
) -> None:
    config = MonitorConfig(run_name="knob", db=db_path, interval_s=0.02)
    recorder = Recorder(config, {"stm": stm})
    async with anyio.create_task_group() as tg:
        result = {}

        async def run() -> None:
            result["summary"] = await recorder.run()

        tg.start_soon(run)
        await recorder.started.wait()
        await recorder.wait_until(lambda: recorder.stats[1].samples_read >= 3)
        await anyio.to_thread.run_sync(stm.bias.set, 0.75)
        await anyio.to_thread.run_sync(stm.z_controller_enabled.set, False)
        with anyio.fail_after(20):
            await recorder.wait_until(lambda: recorder.detector_actions >= 2)
        recorder.request_stop()
        recorder.request_stop()  # a second Ctrl-C changes nothing
    assert result["summary"].status == "interrupted"
    with closing(connect_readonly(db_path)) as conn:
        actions = list_actions(conn, resolve_run(conn, "knob"))
        runs = list_runs(conn)
    by_label = {a["spec_label"]: a for a in actions}
    assert by_label["Bias"]["new_value"] == pytest.approx(0.75)
    assert by_label["Z Controller Enabled"]["old_value"] is True
    assert by_label["Z Controller Enabled"]["new_value"] is False
    assert by_label["Z Controller Enabled"]["delta"] is None
    assert runs[0]["status"] == "interrupted"


async def test_a_run_relaxes_the_young_collector_while_it_records(
    db_path: Path, stm: SimulatedSTM
) -> None:
    from trajmon.gcpause import RECORDING_YOUNG_THRESHOLD

    before = gc.get_threshold()
    config = MonitorConfig(run_name="gc", db=db_path, interval_s=0.02)
    recorder = Recorder(config, {"stm": stm})
    async with anyio.create_task_group() as tg:
        tg.start_soon(recorder.run)
        await recorder.started.wait()
        await recorder.wait_until(lambda: recorder.stats[0].samples_read >= 2)
        during = gc.get_threshold()
        recorder.request_stop()
    assert during[0] == max(before[0], RECORDING_YOUNG_THRESHOLD)
    assert gc.get_threshold() == before


async def test_duplicate_run_name_is_refused_before_writing(
    db_path: Path, stm: SimulatedSTM
) -> None:
    config = MonitorConfig(run_name="once", db=db_path, duration_s=0.1, interval_s=0.05)
    await Recorder(config, {"stm": stm}).run()
    before = await anyio.Path(db_path).read_bytes()
    with pytest.raises(RunExistsError, match="already used"):
        await Recorder(config.updated(run_name="ONCE"), {"stm": stm}).run()
    assert await anyio.Path(db_path).read_bytes() == before


def test_under_trio_it_says_so_before_anything_is_written(db_path: Path, stm: SimulatedSTM) -> None:
    """library.md's "same event loop" is asyncio's: under trio the first await inside
    aiosqlite failed with trio's "unrecognized yield message", the database file already made."""
    config = MonitorConfig(run_name="trio", db=db_path, duration_s=0.1, interval_s=0.05)
    with pytest.raises(RuntimeError, match="records on asyncio"):
        anyio.run(Recorder(config, {"stm": stm}).run, backend="trio")
    assert not db_path.exists()


async def test_memory_does_not_grow_with_samples(db_path: Path, stm: SimulatedSTM) -> None:
    """Python heap after 1500 and after 6000 samples per group: no per-sample growth.

    Samples read but not yet committed are in memory by design (bounded by the queue), and how
    many there are at either instant depends on how busy the machine is: each one more at the
    second instant is allowed 1 kB (a 12-value sample in flight takes ~0.7 kB). Garbage waiting
    for the collector is not retention: a recording raises the young threshold to 20 000
    (``gcpause``), so cycles from commits and cancelled waits pile up between collections and
    moved the heap by −250 to +470 kB between two instants; each is measured right after a
    collection."""
    config = MonitorConfig(run_name="mem", db=db_path, interval_s=0.001, commit_interval_s=0.05)
    recorder = Recorder(config, {"stm": stm})

    def in_flight() -> int:
        return sum(s.samples_read - s.samples_committed for s in recorder.stats)

    tracemalloc.start()
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(recorder.run)
            await recorder.started.wait()
            with anyio.fail_after(90):
                await recorder.wait_until(lambda: recorder.stats[0].samples_read >= 1500)
                gc.collect()
                early, early_in_flight = tracemalloc.get_traced_memory()[0], in_flight()
                await recorder.wait_until(lambda: recorder.stats[0].samples_read >= 6000)
            gc.collect()
            late, late_in_flight = tracemalloc.get_traced_memory()[0], in_flight()
            recorder.request_stop()
    finally:
        tracemalloc.stop()
    # 4500 more samples of 12 channels: per-sample retention of even 100 B would show as 450 kB.
    allowed = 300_000 + 1_000 * max(0, late_in_flight - early_in_flight)
    assert late - early < allowed, (
        f"heap grew by {late - early} bytes ({early_in_flight} -> {late_in_flight} in flight)"
    )


async def test_an_unexpected_error_still_records_the_run_as_failed(
    db_path: Path, stm: SimulatedSTM, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug in the write path (here: the counters of the third commit cannot be built) ends
    the run, but as a run: its end is recorded as failed with the error, not left 'running' to
    be taken for a crash later."""
    real = writer_module.group_counters
    calls = 0

    def flaky(*args: Any, **kwargs: Any) -> tuple[Any, ...]:
        nonlocal calls
        calls += 1
        if calls > 2 * 2:  # two groups: the first two commits go through
            raise OverflowError("Python int too large to convert to SQLite INTEGER")
        return real(*args, **kwargs)

    monkeypatch.setattr(writer_module, "group_counters", flaky)
    config = MonitorConfig(run_name="bug", db=db_path, interval_s=0.02, duration_s=5.0)
    with pytest.raises(RunFailedError) as info:
        await Recorder(config, {"stm": stm}).run()
    assert info.value.summary.status == "failed"
    assert "unexpected error: OverflowError" in str(info.value)
    with closing(connect_readonly(db_path)) as conn:
        (run,) = list_runs(conn)
        (message,) = conn.execute("SELECT message FROM runs").fetchone()
    assert run["status"] == "failed" and "OverflowError" in message
    assert run["signal_samples"] > 0, "what was committed before the error stays"


async def test_snapshot_with_nan_and_infinity_is_strict_json(
    db_path: Path, stm: SimulatedSTM
) -> None:
    snapshot = {"instruments": {"ls": {"parameters": {"T": {"value": math.nan}}}}, "r": [math.inf]}
    config = MonitorConfig(run_name="snap", db=db_path, interval_s=0.05, duration_s=0.2)
    await Recorder(config, {"stm": stm}, snapshot=snapshot).run()
    with closing(sqlite3.connect(db_path)) as conn:
        value, first = conn.execute(
            "SELECT json_extract(snapshot_json, '$.instruments.ls.parameters.T.value'),"
            " json_extract(snapshot_json, '$.r[0]') FROM runs"
        ).fetchone()
    assert (value, first) == ("NaN", "Infinity")


async def test_a_commit_never_takes_a_spec_sample_without_its_action(
    db_path: Path, stm: SimulatedSTM, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The sample whose value changed and the action it gave rise to land in one transaction.
    Were the action committed later, a kill in between would keep the new value and lose the
    action for good: resume primes detection from the last stored values. One sample per
    commit (``commit_rows=1``) is where a split would show."""
    real = writer_module.write_transaction
    commits: list[tuple[set[int], list[int]]] = []  # (spec sample_idx, action sample_idx)

    def spy(db: sqlite3.Connection, owner: Any, inserts: Any, actions: Any, *rest: Any) -> None:
        real(db, owner, inserts, actions, *rest)
        specs = {row[0] for sql, rows, _ in inserts if '/specs"' in sql for row in rows}
        commits.append((specs, [a[3] for a in actions]))

    monkeypatch.setattr(writer_module, "write_transaction", spy)
    config = MonitorConfig(run_name="atomic", db=db_path, interval_s=0.02, commit_rows=1)
    recorder = Recorder(config, {"stm": stm})
    async with anyio.create_task_group() as tg:
        tg.start_soon(recorder.run)
        await recorder.started.wait()
        await recorder.wait_until(lambda: recorder.stats[1].samples_read >= 3)
        for n, bias in enumerate((0.5, 0.75, 1.0)):
            await anyio.to_thread.run_sync(stm.bias.set, bias)
            with anyio.fail_after(20):
                await recorder.wait_until(lambda n=n: recorder.detector_actions > n)
        recorder.request_stop()
    action_samples = [idx for _, actions in commits for idx in actions]
    assert len(action_samples) == 3
    for specs, actions in commits:
        assert set(actions) <= specs, f"actions {actions} committed without their samples"


async def test_a_stop_after_the_duration_has_ended_leaves_the_run_completed(
    db_path: Path, stm: SimulatedSTM, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Ctrl-C (or SIGTERM) that arrives while a run that has reached its duration drains its
    queue stops nothing: every tick was taken, so the run is completed, not interrupted."""
    config = MonitorConfig(run_name="ended", db=db_path, interval_s=0.02, duration_s=0.2)
    recorder = Recorder(config, {"stm": stm})
    real_close = QueueSink.close

    def close_after_a_stop(sink: QueueSink) -> None:
        recorder.request_stop()  # the duration is over: the recorder closes the queue now
        real_close(sink)

    monkeypatch.setattr(QueueSink, "close", close_after_a_stop)
    summary = await recorder.run()
    assert summary.status == "completed"
    with closing(connect_readonly(db_path)) as conn:
        (run,) = list_runs(conn)
    assert run["status"] == "completed"
