"""Faults found exploring poll groups, segments, the live view and option validation."""

from __future__ import annotations

import re
from io import StringIO
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import anyio
import pytest
from rich.console import Console

from simulators.qcodes_sim import SimulatedSTM
from trajmon import MonitorConfig
from trajmon.cli import runner as cli_runner
from trajmon.live import LiveSnapshot, render_live, run_live_view
from trajmon.records import ActionEvent, GroupStats


def _action(idx: int, label: str) -> ActionEvent:
    return ActionEvent(idx, 1.0 + idx, 10 + idx, 0.9 + idx, "t", label, 2, 0.1, 0.2, 0.1, 0, 3)


def _recorder_with_channels(n: int) -> Any:
    """What the live view reads of a recorder: ``n`` channels in two groups, three actions."""
    groups, stats = [], []
    for gid, kind in enumerate(("signal", "spec")):
        channels = [
            SimpleNamespace(label=f"{kind} channel {i} with a long label", unit="V")
            for i in range(n // 2)
        ]
        groups.append(SimpleNamespace(kind=kind, channels=channels))
        stats.append(GroupStats(gid, f"{kind}s", 0.1, samples_read=5, last_values=[1.5] * (n // 2)))
    started = anyio.Event()
    started.set()
    return SimpleNamespace(
        started=started,
        t0_mono=0.0,
        stats=stats,
        groups=groups,
        recent_actions=[_action(i, f"Knob {i}") for i in range(3)],
        config=SimpleNamespace(run_name="many", queue_size=100),
        queue_depth=0,
        detector_actions=3,
        stop_requested=False,
    )


async def test_live_view_with_many_channels_keeps_the_last_actions_on_screen() -> None:
    """60 channels in a 24-line terminal: the view used to render every channel row and then
    let rich crop the bottom — which was the last actions, the part an operator watches for."""
    out = StringIO()
    console = Console(file=out, width=100, height=24, force_terminal=True, color_system=None)
    frames: list[LiveSnapshot] = []
    shown: list[str] = []  # what the terminal had when the second frame was rendered
    drawn = anyio.Event()

    def render(snap: LiveSnapshot) -> Any:
        frames.append(snap)
        if len(frames) == 2:  # the first frame has been written (not yet the final one)
            shown.append(out.getvalue())
            drawn.set()
        return render_live(snap)

    recorder = _recorder_with_channels(60)
    async with anyio.create_task_group() as tg:
        tg.start_soon(lambda: run_live_view(recorder, console, refresh_s=0.0, render=render))
        with anyio.fail_after(10):
            await drawn.wait()
        tg.cancel_scope.cancel()
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", shown[0])
    assert "last actions" in text and "Knob 2" in text
    assert "signal channel 0 with a long label" in text
    assert "more channels" in text


async def test_dumb_terminal_gets_progress_lines_not_a_blank_live_view(
    monkeypatch: pytest.MonkeyPatch, db_path: Path
) -> None:
    """On a TTY with TERM=dumb rich's Live draws nothing until it stops (and the view is
    transient): a whole run went by without a single line of progress."""
    chosen: list[str] = []

    async def fake_lines(recorder: Any, every_s: float) -> None:
        chosen.append("lines")
        recorder.request_stop()

    async def fake_live(recorder: Any, console: Console) -> None:
        chosen.append("live")
        recorder.request_stop()

    monkeypatch.setattr(cli_runner, "_progress", fake_lines)
    monkeypatch.setattr(cli_runner, "run_live_view", fake_live)
    dumb = Console(file=StringIO(), force_terminal=True, _environ={"TERM": "dumb"})
    monkeypatch.setattr(cli_runner, "console", dumb)
    monkeypatch.setattr(cli_runner, "err_console", Console(file=StringIO()))
    stm = SimulatedSTM("stm", seed=3)
    try:
        config = MonitorConfig(run_name="dumb", db=db_path)
        outcome = await cli_runner.record(config, {"stm": stm})
    finally:
        stm.close()
    assert outcome.summary.status == "interrupted"
    assert chosen == ["lines"]


class _StallingSink:
    """A queue that is full from the third sample on until ``release`` is set."""

    def __init__(self) -> None:
        self.items: list[Any] = []
        self.release = anyio.Event()

    async def send(self, item: Any) -> None:
        if len(self.items) >= 2:
            await self.release.wait()
        self.items.append(item)


async def test_ticks_lost_to_a_full_queue_before_the_end_are_counted_as_missed() -> None:
    """A slow disk fills the queue; the poller waits in ``send`` past the run's end. The ticks
    due meanwhile were not taken, so they must show as missed: read + missed = ticks due."""
    from trajmon.clock import FakeClock
    from trajmon.scheduling import Poller, Schedule

    t0 = 1000.0
    clock, sink = FakeClock(start=t0), _StallingSink()

    class Reader:
        async def read(self) -> tuple[list[Any], list[Any]]:
            return [1.0], []

    stats = GroupStats(group_id=0, name="signals", interval_s=0.1)
    poller = Poller(stats, Reader(), sink, clock=clock, schedule=Schedule(t0, 0.1), end_at=t0 + 1.0)
    async with anyio.create_task_group() as tg:
        tg.start_soon(poller.run)
        await clock.advance(0.25)  # ticks 0, 1, 2 read; the third waits for room
        await clock.advance(1.0)  # the run's end passes while it waits
        sink.release.set()
        await clock.advance(0.0)
    assert stats.samples_read == 3
    assert stats.samples_read + stats.missed_ticks == 10  # ticks due in [t0, t0 + 1 s)
