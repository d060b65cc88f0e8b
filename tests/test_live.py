"""The live terminal view: what it renders, and when ``record`` shows it instead of log lines."""

from __future__ import annotations

from collections.abc import Iterator
from io import StringIO
from pathlib import Path
from typing import Any

import anyio
import pytest
from rich.console import Console

from simulators.qcodes_sim import SimulatedSTM
from trajmon import MonitorConfig, Recorder
from trajmon.cli import runner as cli_runner
from trajmon.live import GroupView, LiveSnapshot, RateMeter, progress_mode, render_live, snapshot_of
from trajmon.records import ActionEvent


@pytest.fixture
def stm() -> Iterator[SimulatedSTM]:
    instrument = SimulatedSTM("stm", seed=2)
    yield instrument
    instrument.close()


def text_of(snap: LiveSnapshot) -> str:
    console = Console(file=StringIO(), width=140, record=True, color_system=None)
    console.print(render_live(snap))
    return console.export_text()


@pytest.mark.parametrize(
    ("quiet", "terminal", "mode"),
    [(False, True, "live"), (False, False, "lines"), (True, True, "none"), (True, False, "none")],
)
def test_progress_mode(quiet: bool, terminal: bool, mode: str) -> None:
    assert progress_mode(quiet=quiet, is_terminal=terminal) == mode


def group_view(latest: list[tuple[str, str, Any]], **fields: Any) -> GroupView:
    """A signal group's view at 100 Hz after 12.3 s, with ``latest`` and any other fields."""
    values: dict[str, Any] = {
        "name": "signals",
        "kind": "signal",
        "interval_s": 0.01,
        "achieved_hz": 99.5,
        "samples_read": 1234,
        "samples_committed": 1200,
        "missed_ticks": 3,
        "failed_reads": 1,
        "read_mean_s": 0.0021,
        "read_max_s": 0.0153,
        "last_dt_s": 12.3,
    }
    return GroupView(**{**values, **fields}, latest=latest)


def test_render_shows_rates_latency_queue_values_and_actions() -> None:
    group = group_view([("Tunnel Current", "A", 1.25e-10), ("Z Position", "m", None)])
    action = ActionEvent(7, 11.9, 119, 11.8, "t", "Bias", 2, 0.1, 0.25, 0.15, 9.4, 14.4)
    out = text_of(LiveSnapshot("my run", 12.4, 17, 20000, 8, [group], [action]))
    for expected in (
        "'my run'",
        "queue 17/20000",
        "signals (signal)",
        "100",  # target Hz
        "99.5",
        "2.10 / 15.30",  # read latency mean / max, ms
        "1200/1234",
        "Tunnel Current",
        "1.25e-10",
        "Bias",
        "0.1 → 0.25",
    ):
        assert expected in out, expected
    assert "—" in out, "a channel without a value yet"
    empty = text_of(LiveSnapshot("r", 0.0, 0, 10, 0, [], [], stopping=True))
    assert "no actions yet" in empty and "stopping" in empty


def test_rate_meter_uses_a_sliding_window() -> None:
    meter = RateMeter(window_s=2.0)
    assert meter.update("g", 0.0, 0) is None
    assert meter.update("g", 1.0, 10) == pytest.approx(10)
    for t in range(2, 10):
        rate = meter.update("g", float(t), 10 + (t - 1) * 2)  # slowed down to 2/s
    assert rate == pytest.approx(2, rel=0.01)


async def test_snapshot_of_a_recording(db_path: Path, stm: SimulatedSTM) -> None:
    config = MonitorConfig(run_name="view", db=db_path, interval_s=0.02)
    recorder = Recorder(config, {"stm": stm})
    async with anyio.create_task_group() as tg:
        tg.start_soon(recorder.run)
        with anyio.fail_after(30):
            await recorder.wait_until(lambda: recorder.stats[1].samples_read >= 3)
            await anyio.to_thread.run_sync(stm.bias.set, 0.4)
            await recorder.wait_until(lambda: recorder.detector_actions >= 1)
        snap = snapshot_of(recorder, RateMeter())
        recorder.request_stop()
    assert [g.name for g in snap.groups] == ["signals", "specs"]
    latest = {label: (unit, value) for g in snap.groups for label, unit, value in g.latest}
    assert latest["Tunnel Current"][0] == "A" and isinstance(latest["Tunnel Current"][1], float)
    assert latest["Bias"][0] == "V"
    assert snap.recent_actions and snap.recent_actions[-1].spec_label == "Bias"
    out = text_of(snap)
    assert "Tunnel Current" in out and "Bias" in out and "'view'" in out


@pytest.mark.parametrize("terminal", [True, False])
async def test_record_shows_the_view_only_on_a_terminal(
    db_path: Path, stm: SimulatedSTM, monkeypatch: pytest.MonkeyPatch, terminal: bool
) -> None:
    stdout, stderr = StringIO(), StringIO()
    monkeypatch.setattr(
        cli_runner, "console", Console(file=stdout, force_terminal=terminal, width=140)
    )
    monkeypatch.setattr(cli_runner, "err_console", Console(file=stderr, width=140))
    config = MonitorConfig(run_name="tty", db=db_path, interval_s=0.05, duration_s=0.6)
    outcome = await cli_runner.record(config, {"stm": stm}, progress_every_s=0.2)
    assert outcome.summary.status == "completed"
    if terminal:
        assert "achieved Hz" in stdout.getvalue() and "Tunnel Current" in stdout.getvalue()
        assert stderr.getvalue() == ""
    else:
        assert stdout.getvalue() == ""
        assert "signals" in stderr.getvalue() and "queue" in stderr.getvalue()


async def test_record_quiet_prints_nothing(
    db_path: Path, stm: SimulatedSTM, monkeypatch: pytest.MonkeyPatch
) -> None:
    stdout, stderr = StringIO(), StringIO()
    monkeypatch.setattr(cli_runner, "console", Console(file=stdout, force_terminal=True))
    monkeypatch.setattr(cli_runner, "err_console", Console(file=stderr))
    config = MonitorConfig(run_name="q", db=db_path, interval_s=0.05, duration_s=0.3)
    await cli_runner.record(config, {"stm": stm}, quiet=True, progress_every_s=0.05)
    assert stdout.getvalue() == "" and stderr.getvalue() == ""
