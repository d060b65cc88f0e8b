"""The end of a run: its summary, its final status, and the library's lifecycle around it.

Found by a review:

- a group that read nothing (a run stopped before its first tick) showed ``nan ms`` as its
  mean read time, and ``--json`` gave ``"mean_read_s": "nan"``, a string where a number goes;
- ``Recorder(..., clock=object())`` was accepted, and failed only inside ``run()`` with an
  AttributeError about ``wall``;
- a run that failed at the moment ``run()`` was cancelled (its last commit refused, say) left
  ``failed`` in the database, but its :class:`RunFailedError` vanished behind the cancellation;
- the background checkpointer opened its database by path, creating the file: a database
  deleted or moved mid-run came back as an empty file where the operator looks for the run;
- a writer failing while an instrument thread was still reading cancelled the pollers: the read
  in flight was counted only after the run's end was recorded, so the summary's (and the live
  counters') reads, missed ticks and lost samples disagreed with the database's.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any

import anyio
import pytest
from qcodes.instrument_drivers.mock_instruments import DummyInstrument
from test_review_livehang import Sticky

from trajmon import (
    ChannelSpec,
    FakeClock,
    MonitorConfig,
    Recorder,
    RunFailedError,
    connect_readonly,
    list_runs,
)
from trajmon import recorder as recorder_module
from trajmon import writer as writer_module
from trajmon.checkpoint import Checkpoints
from trajmon.cli.run_cmd import print_summary, summary_dict


@pytest.fixture
def dac() -> Any:
    instrument = DummyInstrument("dac", gates=["ch1", "ch2"])
    yield instrument
    instrument.close()


def config(db: Path, name: str = "end", **changes: Any) -> MonitorConfig:
    options: dict[str, Any] = {"interval_s": 0.1, "source": "instruments"}
    options.update(changes)
    return MonitorConfig(
        run_name=name,
        db=db,
        channels=[
            ChannelSpec(label="Drain", source="dac.ch2", kind="signal"),
            ChannelSpec(label="Gate", source="dac.ch1", kind="spec"),
        ],
        **options,
    )


def reads(recorder: Recorder) -> list[int]:
    return [s.samples_read for s in recorder.stats]


# -- the summary of a group that read nothing ---------------------------------------------------


async def test_a_group_without_reads_has_no_mean_read_time_in_the_summary(
    tmp_path: Path, dac: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    recorder = Recorder(config(tmp_path / "r.db", duration_s=5.0), {"dac": dac}, clock=FakeClock())
    recorder.request_stop()  # before run(): the run starts and ends before its first tick
    summary = await recorder.run()
    assert [g.samples_read for g in summary.groups] == [0, 0]

    print_summary(summary)
    out = capsys.readouterr().out
    assert "nan" not in out.lower(), out
    assert out.count("no reads") == 2, out

    data = summary_dict(summary)
    text = json.dumps(data, allow_nan=False)  # strict JSON, as print_json writes it
    assert [g["mean_read_s"] for g in json.loads(text)["groups"]] == [None, None]


async def test_a_group_with_reads_keeps_its_mean_read_time(
    tmp_path: Path, dac: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    clock = FakeClock()
    recorder = Recorder(config(tmp_path / "r.db", duration_s=0.3), {"dac": dac}, clock=clock)
    async with anyio.create_task_group() as tg:
        tg.start_soon(recorder.run)
        with anyio.fail_after(10):
            for n in (1, 2, 3):
                await recorder.wait_until(lambda n=n: min(reads(recorder)) >= n)
                await clock.advance(0.1)  # the third advance reaches the end of the duration
            await recorder.ended.wait()
            assert recorder.summary is not None, "kept before ended is set"
    assert recorder.summary is not None
    data = summary_dict(recorder.summary)
    for group, g in zip(data["groups"], recorder.summary.groups, strict=True):
        assert g.samples_read == 3
        assert group["mean_read_s"] == g.mean_read_s >= 0  # FakeClock: reads take no time
    print_summary(recorder.summary)
    assert "0.00 ms" in capsys.readouterr().out


# -- the clock is checked when the Recorder is made ---------------------------------------------


@pytest.mark.parametrize("clock", [object(), 1.5, "system"])
def test_a_clock_that_is_not_a_clock_is_a_type_error_at_once(
    tmp_path: Path, dac: Any, clock: object
) -> None:
    db = tmp_path / "r.db"
    with pytest.raises(TypeError, match="clock must be a trajmon Clock") as info:
        Recorder(config(db), {"dac": dac}, clock=clock)  # type: ignore[arg-type]
    assert "\n" not in str(info.value)
    assert type(clock).__name__ in str(info.value)
    assert not db.exists(), "nothing is written before run()"


# -- a failure at the moment run() is cancelled -------------------------------------------------


async def test_a_failure_while_cancelled_is_kept_on_the_recorder_and_logged(
    tmp_path: Path, dac: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The cancellation goes on (it is the caller's); the failure the database records is on
    ``recorder.error`` and in the log, not lost."""
    real_finish = recorder_module.finish_run

    async def refused(conn: Any, target: Any, **kwargs: Any) -> None:
        await real_finish(conn, target, **{**kwargs, "status": "failed", "message": "disk I/O"})
        raise sqlite3.OperationalError("disk I/O error")  # as the last commit's fsync fails

    monkeypatch.setattr(recorder_module, "finish_run", refused)
    clock = FakeClock()
    recorder = Recorder(config(tmp_path / "r.db"), {"dac": dac}, clock=clock)
    with anyio.CancelScope() as scope:
        async with anyio.create_task_group() as tg:
            tg.start_soon(recorder.run)
            with anyio.fail_after(10):
                await recorder.wait_until(lambda: min(reads(recorder)) >= 1)
            scope.cancel()
    assert scope.cancelled_caught  # the cancellation went on, as it must
    assert isinstance(recorder.error, RunFailedError)
    assert "could not record the final status" in str(recorder.error)
    assert recorder.summary is not None and recorder.summary.status == "failed"
    assert any(
        r.levelno == logging.ERROR and "failed while run() was cancelled" in r.getMessage()
        for r in caplog.records
    ), caplog.text
    with closing(connect_readonly(tmp_path / "r.db")) as conn:
        (run,) = list_runs(conn)
    assert run["status"] == "failed"


async def test_a_cancelled_run_keeps_its_summary_on_the_recorder(tmp_path: Path, dac: Any) -> None:
    clock = FakeClock()
    recorder = Recorder(config(tmp_path / "r.db"), {"dac": dac}, clock=clock)
    assert recorder.summary is None and recorder.error is None
    with anyio.CancelScope() as scope:
        async with anyio.create_task_group() as tg:
            tg.start_soon(recorder.run)
            with anyio.fail_after(10):
                await recorder.wait_until(lambda: min(reads(recorder)) >= 1)
                await clock.advance(0.1)
                await recorder.wait_until(lambda: min(reads(recorder)) >= 2)
            scope.cancel()
    assert scope.cancelled_caught
    assert recorder.error is None
    assert recorder.summary is not None
    assert recorder.summary.status == "interrupted"
    with closing(connect_readonly(tmp_path / "r.db")) as conn:
        (run,) = list_runs(conn)
    assert run["status"] == "interrupted"
    assert run["signal_samples"] == recorder.summary.signal_samples == 2
    assert run["spec_samples"] == recorder.summary.spec_samples == 2


async def test_a_failed_run_not_cancelled_raises_and_keeps_it(
    tmp_path: Path, dac: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    async def refused(conn: Any, target: Any, **kwargs: Any) -> None:
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(recorder_module, "finish_run", refused)
    recorder = Recorder(config(tmp_path / "r.db", duration_s=0.0001), {"dac": dac})
    with pytest.raises(RunFailedError) as info:
        with anyio.fail_after(10):
            await recorder.run()
    assert recorder.error is info.value
    assert recorder.summary is info.value.summary
    assert "failed while run() was cancelled" not in caplog.text  # raised: nothing to log


# -- the checkpointer never creates the database ------------------------------------------------


def test_the_checkpointer_does_not_recreate_a_deleted_database(tmp_path: Path) -> None:
    db = tmp_path / "gone.db"
    with closing(sqlite3.connect(db)) as conn:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("CREATE TABLE t (x)")
    db.unlink()  # deleted (or moved) while the run records
    checkpoints = Checkpoints(db, backlog_bytes=0, wal_size=lambda: 1)
    try:
        assert checkpoints.after_commit(0.0) == 0  # a backlog: a background checkpoint starts
        checkpoints.settle()
    finally:
        checkpoints.stop()
    assert not db.exists(), "the checkpointer created an empty database in its place"
    assert checkpoints.failures == 1 and checkpoints.last_error is not None


# -- a writer failing while a read is in flight on the instrument's thread ----------------------


async def test_a_read_in_flight_when_the_writer_fails_is_counted_before_the_end(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Real clock: only then does a group's schedule run on the instrument's thread. The hung
    read is let go only once the run's end is recorded; whatever the timing, the counters the
    caller holds afterwards must be the ones the database holds."""
    inst = Sticky("hanging")  # its signal read blocks once armed, until released
    real_counters = writer_module.group_counters
    real_finish = recorder_module.finish_run

    def failing_once_hung(*args: Any, **kwargs: Any) -> tuple[Any, ...]:
        if inst.entered.is_set():
            raise OverflowError("the writer fails while the read hangs")
        return real_counters(*args, **kwargs)

    async def finish_then_release(conn: Any, target: Any, **kwargs: Any) -> None:
        await real_finish(conn, target, **kwargs)
        inst.release.set()  # the driver answers, late: after the end was recorded

    monkeypatch.setattr(writer_module, "group_counters", failing_once_hung)
    monkeypatch.setattr(recorder_module, "finish_run", finish_then_release)
    cfg = MonitorConfig(
        run_name="hung",
        db=tmp_path / "r.db",
        source="instruments",
        interval_s=0.05,
        # the writer's next beat (<= 0.1 s) fails long before the watchdog gives up on the read
        # (after 1.5 s): that read is in flight when the writer fails
        heartbeat_s=0.1,
        read_timeout_s=0.5,
        channels=[
            ChannelSpec(label="Sig", source="hanging.sig", kind="signal"),
            ChannelSpec(label="Knob", source="hanging.knob", kind="spec"),
        ],
    )
    recorder = Recorder(cfg, {"hanging": inst})
    try:
        with anyio.fail_after(30):
            async with anyio.create_task_group() as tg:

                async def run() -> None:
                    with pytest.raises(RunFailedError, match="OverflowError"):
                        await recorder.run()

                tg.start_soon(run)
                await recorder.wait_until(lambda: min(reads(recorder)) >= 1)
                inst.armed.set()
    finally:
        inst.release.set()
        inst.close()
    assert recorder.summary is not None
    with closing(sqlite3.connect(tmp_path / "r.db")) as conn:
        stored = conn.execute(
            "SELECT samples, samples_read, missed_ticks FROM poll_groups ORDER BY group_id"
        ).fetchall()
        (lost,) = conn.execute("SELECT lost_samples FROM runs").fetchone()
    live = [(s.samples_committed, s.samples_read, s.missed_ticks) for s in recorder.stats]
    summary = [(g.samples, g.samples_read, g.missed_ticks) for g in recorder.summary.groups]
    assert live == summary == [tuple(row) for row in stored]
    assert recorder.summary.lost_samples == lost == sum(r - c for c, r, _ in stored)
