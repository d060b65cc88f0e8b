"""What the live view and ``trajmon status`` show while an instrument read hangs.

A read hung in its driver counts nothing until it returns: the ticks passing meanwhile are
counted missed only when the next read begins. Both views used to show a healthy group (0
missed) for the whole hang. Hangs here block on an event the test releases; the live view is
driven by a simulated clock, and ``status`` reads the database of a real run.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import anyio
import pytest
from qcodes.instrument import Instrument
from qcodes.validators import Numbers
from test_live import text_of
from test_operator_cli import invoke

from trajmon import ChannelSpec, FakeClock, MonitorConfig, Recorder
from trajmon.live import RateMeter, snapshot_of


class Sticky(Instrument):
    """A signal whose read blocks, once armed, until released; and a spec that never does."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.armed = threading.Event()
        self.entered = threading.Event()
        self.release = threading.Event()
        self.knob_reads = 0  # reads the instrument's thread has run: frozen while it hangs

        def knob() -> float:
            self.knob_reads += 1
            return 0.5

        def signal() -> float:
            if self.armed.is_set():
                self.armed.clear()
                self.entered.set()
                self.release.wait(30)
            return 1.0

        self.add_parameter("sig", get_cmd=signal, set_cmd=False, vals=Numbers())
        self.add_parameter("knob", get_cmd=knob, set_cmd=False, vals=Numbers())


@pytest.fixture
def sticky() -> Iterator[Sticky]:
    instrument = Sticky("sticky")
    yield instrument
    instrument.release.set()
    instrument.close()


def config(db: Path, name: str = "hang", **changes: Any) -> MonitorConfig:
    channels = [
        ChannelSpec(label="Sig", source="sticky.sig", kind="signal"),
        ChannelSpec(label="Knob", source="sticky.knob", kind="spec"),
    ]
    # A read timeout far beyond the hang: the watchdog does not step in, as with a slow
    # instrument whose operator raised it.
    options: dict[str, Any] = {"interval_s": 0.1, "source": "instruments", "read_timeout_s": 60}
    options.update(changes)
    return MonitorConfig(run_name=name, db=db, channels=channels, **options)


def row_of(text: str, group: str) -> list[str]:
    (line,) = [line for line in text.splitlines() if line.startswith(f"{group} (")]
    return line.split()


async def hang_for_3_s(recorder: Recorder, clock: FakeClock, sticky: Sticky) -> None:
    """After the first sample, the signal group's next read hangs, and 3 s pass in it: the
    spec group's reads queue behind it on the instrument's thread.

    The spec group may still have a read the thread answered before the hang whose answer the
    loop has not taken yet: the 3 s must not pass before it does, or the group's next read
    begins at their end (in flight for 0 s). Once every read the thread ran is taken, the group
    either waits on the clock or has a read queued behind the hang, and the clock can move."""
    with anyio.fail_after(10):
        await recorder.wait_until(lambda: recorder.stats[0].samples_read >= 1)
        sticky.armed.set()
        await clock.advance(0.1)
        await anyio.to_thread.run_sync(sticky.entered.wait, 10)
        await recorder.wait_until(lambda: recorder.stats[1].samples_read == sticky.knob_reads)
    await clock.advance(3.0)


async def test_live_view_shows_a_hung_read_and_its_missed_ticks_as_they_pass(
    db_path: Path, sticky: Sticky
) -> None:
    clock = FakeClock()
    recorder = Recorder(config(db_path), {"sticky": sticky}, clock=clock)
    async with anyio.create_task_group() as tg:
        tg.start_soon(recorder.run)
        await hang_for_3_s(
            recorder, clock, sticky
        )  # the hang, 3 s of it: the spec's reads queue behind it
        snap = snapshot_of(recorder, RateMeter(), clock.monotonic(), width=200)
        text = text_of(snap)
        assert "signals: read in flight for 3.0 s" in text, text
        shown = int(row_of(text, "signals")[4])  # group (kind) target achieved missed
        assert shown >= 28, text
        assert "specs: read in flight" in text, "its read waits for the instrument's thread"
        read = recorder.stats[0].samples_read
        sticky.release.set()  # the read returns; the next read counts the ticks it missed
        with anyio.fail_after(10):
            await recorder.wait_until(lambda: recorder.stats[0].samples_read >= read + 2)
        assert recorder.stats[0].missed_ticks == shown, "the view showed what is then counted"
        assert snapshot_of(recorder, RateMeter(), clock.monotonic()).groups[0].stall is None
        recorder.request_stop()


async def hang_on_its_thread(recorder: Recorder, sticky: Sticky) -> None:
    """On the real clock: after two samples, the signal group's next read hangs in the driver
    on the instrument's thread; returns once it has begun."""
    await recorder.wait_until(lambda: recorder.stats[0].samples_read >= 2)
    sticky.armed.set()
    await anyio.to_thread.run_sync(sticky.entered.wait, 10)


async def test_live_view_shows_a_hung_read_on_the_instruments_own_thread(
    db_path: Path, sticky: Sticky
) -> None:
    """On the real clock the group's schedule runs on the instrument's thread
    (trajmon.threaded): the read in flight is known there too. The view is drawn for an
    instant 5 s into the hang, so nothing waits for it."""
    recorder = Recorder(config(db_path), {"sticky": sticky})
    async with anyio.create_task_group() as tg:
        tg.start_soon(recorder.run)
        with anyio.fail_after(10):
            await hang_on_its_thread(recorder, sticky)
        since = recorder.stats[0].reading_since
        assert since is not None
        text = text_of(snapshot_of(recorder, RateMeter(), since + 5.0, width=200))
        assert "signals: read in flight for 5.0 s" in text, text
        assert 48 <= int(row_of(text, "signals")[4]) <= 50, text
        sticky.release.set()
        with anyio.fail_after(10):
            await recorder.wait_until(lambda: recorder.stats[0].reading_since is None)
        recorder.request_stop()


def stalled_at_last_commit(db: Path) -> bool:
    """The run's last commit was more than 2 s after its signal group's last sample began."""
    with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        row = conn.execute(
            "SELECT r.heartbeat_dt_s - g.last_dt_s FROM runs r JOIN poll_groups g"
            " ON g.run_id = r.run_id AND g.group_id = 0"
        ).fetchone()
    return row is not None and row[0] is not None and row[0] > 2.0


async def test_status_shows_a_group_stalled_by_a_hung_read(db_path: Path, sticky: Sticky) -> None:
    from trajmon.cli.runs_cmd import watch_line  # status --watch's line in a log

    recorder = Recorder(config(db_path), {"sticky": sticky})
    async with anyio.create_task_group() as tg:
        tg.start_soon(recorder.run)
        with anyio.fail_after(10):
            await hang_on_its_thread(recorder, sticky)
            while not await anyio.to_thread.run_sync(stalled_at_last_commit, db_path):
                await anyio.to_thread.run_sync(time.sleep, 0.05)  # another thread's commits
        human = await anyio.to_thread.run_sync(invoke, "status", "--db", str(db_path))
        doc = json.loads(
            (
                await anyio.to_thread.run_sync(invoke, "status", "--db", str(db_path), "--json")
            ).stdout
        )
        sticky.release.set()
        recorder.request_stop()
    assert human.exit_code == 0
    assert "signals: no new sample for" in human.stdout, human.stdout
    assert "a read may be hung" in human.stdout
    signals = doc["groups"][0]
    assert signals["stalled_for_s"] > 2.0 and signals["overdue_ticks"] >= 19, signals
    assert signals["missed_ticks"] == 0, "the stored counter: not counted until the read ends"
    assert f"stalled signals {signals['stalled_for_s']:.1f} s" in watch_line(doc), "a log's line"
    done = json.loads(invoke("status", "--db", str(db_path), "--json").stdout)
    assert [g["stalled_for_s"] for g in done["groups"]] == [None, None], "an ended run"
    assert done["groups"][0]["missed_ticks"] >= signals["overdue_ticks"]


async def test_the_progress_line_names_a_hung_read_and_counts_its_ticks(
    db_path: Path, sticky: Sticky, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In a log (nohup, a service) the progress line showed ``signals 6 (1.2/s, missed 0)``
    for as long as a read hung; it now says so, its overdue ticks counted missed already."""
    from io import StringIO

    from rich.console import Console

    from trajmon.cli import runner as cli_runner

    stderr = StringIO()
    monkeypatch.setattr(cli_runner, "err_console", Console(file=stderr, width=300))
    clock = FakeClock()
    recorder = Recorder(config(db_path), {"sticky": sticky}, clock=clock)
    async with anyio.create_task_group() as tg:
        tg.start_soon(recorder.run)
        await hang_for_3_s(recorder, clock, sticky)
        with anyio.fail_after(10):
            async with anyio.create_task_group() as progress:
                progress.start_soon(cli_runner._progress, recorder, 0.001)
                while "signals" not in stderr.getvalue():
                    await anyio.lowlevel.checkpoint()
                progress.cancel_scope.cancel()
        line = stderr.getvalue().splitlines()[0]
        shown = int(
            row_of(text_of(snapshot_of(recorder, RateMeter(), clock.monotonic())), "signals")[4]
        )
        assert shown >= 28
        assert f"signals 1 (0.0/s, missed {shown}, read in flight for 3.0 s" in line, line
        sticky.release.set()
        recorder.request_stop()
