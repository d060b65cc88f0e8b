"""`trajmon run` as the operator sees it: the live view on a real terminal, its size, the stop
notes beside it, and the progress lines of a resumed run."""

from __future__ import annotations

import fcntl
import os
import re
import select
import signal
import struct
import subprocess
import termios
import time
from io import StringIO
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import anyio
import pytest
from procs import ENV, TRAJMON
from rich.console import Console, RenderableType

from trajmon.cli import runner as cli_runner
from trajmon.clock import SystemClock
from trajmon.live import run_live_view
from trajmon.records import ActionEvent, GroupStats

_CSI = re.compile(rb"\x1b\[(\??)([0-9;]*)([A-Za-z])")


def screen_of(raw: bytes, rows: int) -> list[str]:
    """What a terminal shows after ``raw``, for the controls rich's live display uses
    (CR, LF, cursor up, erase line, colours): enough to see a line left behind."""
    lines: list[str] = [""]
    row = col = 0
    text = raw
    i = 0
    while i < len(text):
        m = _CSI.match(text, i)
        if m:
            private, arg, op = m.groups()
            if not private and op == b"A":
                row = max(row - int(arg or b"1"), 0)
            elif not private and op == b"K" and arg == b"2":
                lines[row] = ""
            i = m.end()
            continue
        ch = text[i : i + 1]
        if ch == b"\r":
            col = 0
        elif ch == b"\n":
            row += 1
            if row == len(lines):
                lines.append("")
        elif ch != b"\x1b":
            j = i
            while j < len(text) and text[j : j + 1] not in (b"\r", b"\n", b"\x1b"):
                j += 1
            chunk = text[i:j].decode("utf-8", "replace")
            line = lines[row].ljust(col)
            lines[row] = line[:col] + chunk + line[col + len(chunk) :]
            col += len(chunk)
            i = j
            continue
        i += 1
    return lines[-rows:]


def test_a_stop_on_the_live_view_keeps_its_note_and_leaves_no_stale_line(tmp_path: Path) -> None:
    """Ctrl-C on the live view: the note "stopping: draining…" was written to stderr beside
    the view, which then erased it at its next redraw and, one line lower than it knew, left
    its own first line ("recording (Ctrl-C to stop)") above the summary for good."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 100, 0, 0))
    env = {**ENV, "TERM": "xterm-256color"}
    env.pop("COLUMNS", None)
    db = tmp_path / "live.db"
    proc = subprocess.Popen(
        [*TRAJMON, "run", "--sim", "--run-name", "live", "--db", str(db)],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        env=env,
        start_new_session=True,
    )
    os.close(slave)
    raw = bytearray()
    sent = False
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.1)
            if ready:
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # EIO: the process closed the terminal
                    break
                if not chunk:
                    break
                raw += chunk
            if not sent and b"Tunnel Current" in raw and b"Bias" in raw:
                proc.send_signal(signal.SIGINT)
                sent = True
        code = proc.wait(timeout=max(deadline - time.monotonic(), 1))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
    assert sent and code == 130, bytes(raw[-2000:])
    screen = "\n".join(screen_of(bytes(raw), 30))
    assert "trajmon: stopping: draining the queue and committing" in screen, screen
    assert "recording (Ctrl-C to stop)" not in screen, screen
    assert "run 'live': interrupted" in screen


def _stub_recorder(channels: int, actions: int) -> Any:
    signals = [SimpleNamespace(label=f"Gate voltage {i:02d}", unit="V") for i in range(channels)]
    specs = [SimpleNamespace(label="Bias", unit="V")]
    stats = [
        GroupStats(0, "signals", 0.1, samples_read=12345, samples_committed=12340),
        GroupStats(1, "specs", 0.1, samples_read=12345, samples_committed=12340),
    ]
    stats[0].last_values = [0.125] * channels
    stats[1].last_values = [0.5]
    started = anyio.Event()
    started.set()
    recent = [
        ActionEvent(i, 1.0 + i, 10 + i, 0.9 + i, "t", "Bias", 70, 0.1, 0.2, 0.1, 0.0, 3.0)
        for i in range(actions)
    ]
    return SimpleNamespace(
        started=started,
        t0_mono=time.monotonic() - 1234.5,
        stats=stats,
        groups=[
            SimpleNamespace(kind="signal", channels=signals),
            SimpleNamespace(kind="spec", channels=specs),
        ],
        recent_actions=recent,
        config=SimpleNamespace(run_name="many", queue_size=20000),
        queue_depth=3,
        detector_actions=actions,
        stop_requested=False,
        clock=SystemClock(),  # the run's clock, which t0_mono is on
    )


@pytest.mark.parametrize(("cols", "rows"), [(80, 24), (60, 14), (40, 10)])
async def test_the_live_view_fits_its_terminal_and_counts_the_channels_it_hides(
    cols: int, rows: int
) -> None:
    """70 channels at 80x24 (a standard terminal): rate rows and the header wrap there, the
    view was taller than the terminal, and rich cut its bottom with a bare "..." — the line
    that says how many channels are not shown went with it. At 40 columns numbers were cut
    ("queue 3/2" for 3/20000, "12340/…")."""
    recorder = _stub_recorder(channels=70, actions=5)
    console = Console(
        file=StringIO(), force_terminal=True, width=cols, height=rows, color_system=None
    )
    frames: list[RenderableType] = []
    shown = anyio.Event()

    def render(snap: Any) -> RenderableType:
        from trajmon.live import render_live

        frame = render_live(snap)
        frames.append(frame)
        shown.set()
        return frame

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(lambda: run_live_view(recorder, console, render=render))
            await shown.wait()
            tg.cancel_scope.cancel()
    measure = Console(file=StringIO(), width=cols, color_system=None)
    lines = [
        "".join(seg.text for seg in line)
        for line in measure.render_lines(frames[0], measure.options, pad=False)
    ]
    text = "\n".join(lines)
    assert len(lines) <= rows, text
    assert re.search(r"… \d+ (more channels|channels not shown)", lines[-1]), text
    for figure in ("3/20000", "12340/12345"):
        assert figure in text.replace("\n", " "), text
    assert "…" not in "".join(line for line in lines if "Hz" in line), text


async def test_the_first_progress_line_of_a_resumed_run_rates_this_sessions_reads(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A resumed run's counters hold its earlier sessions: the first progress line counted
    them as read in its first 5 s (21.4/s at 10 Hz after a 6 s first session)."""
    written = anyio.Event()

    class Stderr(StringIO):
        def write(self, text: str) -> int:
            written.set()
            return super().write(text)

    stderr = Stderr()
    monkeypatch.setattr(cli_runner, "err_console", Console(file=stderr, width=200))
    recorder = _stub_recorder(channels=2, actions=0)  # 12345 samples read before, none now
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(cli_runner._progress, recorder, 0.01)
            await written.wait()
            tg.cancel_scope.cancel()
    first = stderr.getvalue().splitlines()[0]
    assert "signals 12345 (0.0/s" in first and "specs 12345 (0.0/s" in first, first


def test_the_live_view_measures_names_as_the_terminal_shows_them() -> None:
    """The view is shown on the CLI's console, which prints "sweep:up:1" as it is; the console
    that measured its lines read ":up:" as an emoji code, one cell wide where it takes four."""
    from trajmon.live import _measurer

    (line,) = _measurer(80).render_lines("sweep:up:1", pad=False)
    assert "".join(segment.text for segment in line) == "sweep:up:1"
