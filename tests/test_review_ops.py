"""An operator's long unattended run (docs/operations.md): what the live view, the progress
line and ``trajmon status`` show while things go wrong, and that it agrees with what is then
recorded. Time passes on a simulated clock; reads hang on events the test releases."""

from __future__ import annotations

import shlex
import sqlite3
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, closing
from pathlib import Path
from typing import Any

import anyio
import pytest
from qcodes.instrument import Instrument
from qcodes.validators import Numbers

from trajmon import ChannelSpec, FakeClock, MonitorConfig, Recorder, connect_readonly, list_runs
from trajmon.cli.runner import group_progress
from trajmon.live import RateMeter, snapshot_of
from trajmon.stalls import running_stall


class Gated(Instrument):
    """A signal whose next read, once a gate is armed, blocks until that gate is opened: a
    driver that hangs read after read (each one given up by its own timeout, say)."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self._lock = threading.Lock()
        self._armed: list[threading.Event] = []
        self.entered = threading.Semaphore(0)

        def signal() -> float:
            with self._lock:
                gate = self._armed.pop(0) if self._armed else None
            if gate is not None:
                self.entered.release()
                gate.wait(30)
            return 1.0

        self.add_parameter("sig", get_cmd=signal, set_cmd=False, vals=Numbers())
        self.add_parameter("knob", get_cmd=lambda: 0.5, set_cmd=False, vals=Numbers())
        self.gates: list[threading.Event] = []

    def arm(self) -> threading.Event:
        gate = threading.Event()
        with self._lock:
            self._armed.append(gate)
        self.gates.append(gate)
        return gate


@pytest.fixture
def gated() -> Iterator[Gated]:
    instrument = Gated("gated")
    yield instrument
    for gate in instrument.gates:
        gate.set()
    instrument.close()


def config(db: Path, **changes: Any) -> MonitorConfig:
    channels = [
        ChannelSpec(label="Sig", source="gated.sig", kind="signal"),
        ChannelSpec(label="Knob", source="gated.knob", kind="spec"),
    ]
    options: dict[str, Any] = {"interval_s": 0.1, "source": "instruments", "read_timeout_s": 60}
    options.update(changes)
    return MonitorConfig(run_name="ops", db=db, channels=channels, **options)


@asynccontextmanager
async def opened_at_the_end(gated: Gated) -> AsyncIterator[None]:
    """Every gate opens when the block ends, also on a failed assertion: a read left hanging
    would hold the recorder's end (and the test) for the gate's whole timeout."""
    try:
        yield
    finally:
        for gate in gated.gates:
            gate.set()


async def entered(gated: Gated) -> None:
    with anyio.fail_after(10):
        await anyio.to_thread.run_sync(gated.entered.acquire, True, 10)


def shown_in_view(recorder: Recorder, clock: FakeClock) -> int:
    """The signal group's missed ticks as the live view shows them."""
    g = snapshot_of(recorder, RateMeter(), clock.monotonic(), width=200).groups[0]
    return g.missed_ticks + (0 if g.stall is None else g.stall.overdue)


def progress_part(recorder: Recorder, clock: FakeClock) -> str:
    """The signal group's part of the progress line (``trajmon run`` in a log)."""
    # Imported here, so that the live view's checks run (and fail) without the fix too.
    from trajmon.stalls import skipped_in_flight

    st, t0 = recorder.stats[0], recorder.t0_mono
    assert t0 is not None
    stall = running_stall(st, t0, clock.monotonic(), False)
    return group_progress(st, 0.0, stall, skipped_in_flight(st, t0))


async def test_a_hang_right_after_a_hang_keeps_the_missed_ticks_it_showed(
    db_path: Path, gated: Gated
) -> None:
    """The first hung read's ticks are shown missed while it hangs; once it returns they are
    skipped by the next read, and counted only when that one returns. When that read hung too,
    the live view and the progress line fell back to the counted figure (0 here): the missed
    column of an outage went 29, 0, then up again — a counter running backwards."""
    clock = FakeClock()
    recorder = Recorder(config(db_path), {"gated": gated}, clock=clock)
    async with anyio.create_task_group() as tg, opened_at_the_end(gated):
        tg.start_soon(recorder.run)
        with anyio.fail_after(10):
            await recorder.wait_until(lambda: recorder.stats[0].samples_read >= 1)
        first = gated.arm()
        await clock.advance(0.1)  # tick 1's read hangs
        await entered(gated)
        await clock.advance(3.0)  # ticks 2 … 30 pass in it
        assert shown_in_view(recorder, clock) == 29
        second = gated.arm()
        first.set()  # it returns; the next read (tick 31, due long ago) begins and hangs too
        await entered(gated)
        # ticks 2 … 30 are missed for certain: the read in flight skipped them
        assert shown_in_view(recorder, clock) == 29
        assert "missed 29" in progress_part(recorder, clock)
        await clock.advance(2.0)  # ticks 32 … 50 pass in the second hang, now shown as one
        assert shown_in_view(recorder, clock) == 48
        assert "missed 48" in progress_part(recorder, clock)
        read = recorder.stats[0].samples_read
        second.set()
        with anyio.fail_after(10):
            await recorder.wait_until(lambda: recorder.stats[0].samples_read >= read + 2)
        assert recorder.stats[0].missed_ticks == 48, "what was shown is what is then counted"
        recorder.request_stop()


def documented_copy_sql(copy: Path) -> str:
    """The SQL of the command docs/operations.md gives for copying a live database, aimed at
    ``copy``."""
    text = (Path(__file__).parents[1] / "docs" / "operations.md").read_text(encoding="utf-8")
    section = text.split("## Copying a database while a run records", 1)[1].split("\n## ", 1)[0]
    (command,) = [
        line for line in section.splitlines() if line.startswith("sqlite3 -readonly trajmon.db")
    ]
    (sql,) = shlex.split(command.split("#", 1)[0])[3:]
    return sql.replace("'copy.db'", "'" + str(copy).replace("'", "''") + "'")


async def test_the_documented_copy_of_a_live_database_holds_its_last_commit(
    tmp_path: Path, gated: Gated
) -> None:
    """The docs named only the ``sqlite3`` shell's ``.backup`` (trajectory_model.md), which
    restarts at every commit of another connection: on a live database of a few hundred MB it
    never finished. The recipe in operations.md is one read transaction: here it is run while
    the recording is between two commits, and the copy holds exactly what was committed."""
    db, copy = tmp_path / "live.db", tmp_path / "copy.db"
    clock = FakeClock()
    recorder = Recorder(config(db), {"gated": gated}, clock=clock)
    async with anyio.create_task_group() as tg:
        tg.start_soon(recorder.run)
        with anyio.fail_after(10):
            await recorder.wait_until(lambda: recorder.stats[0].samples_read >= 1)
        for n in range(2, 12):  # every tick read, then a commit
            await clock.advance(0.1)
            with anyio.fail_after(10):
                await recorder.wait_until(lambda n=n: recorder.stats[0].samples_read >= n)
        with anyio.fail_after(10):
            while recorder.stats[0].samples_committed < 10:
                await clock.advance(0.01)
                # Both pollers and the writer asleep on the clock before it moves on: moved
                # while a commit ran on aiosqlite's thread (a loaded machine), time passed
                # ticks whose samples the writer committed next — during the copy below.
                await clock.wait_for_sleepers(3)
        sql = documented_copy_sql(copy)
        with closing(sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True)) as conn:
            conn.execute(sql)
        with closing(connect_readonly(db)) as live, closing(connect_readonly(copy)) as copied:
            assert copied.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
            at = clock.wall()  # the recording's own clock: its heartbeats are fresh by it
            (was,), (now,) = list_runs(copied, at), list_runs(live, at)
            assert was["status"] == "running" and was == now
        recorder.request_stop()
