"""Running a recorder from the command line: signals, progress, and instrument lifetimes.

SIGINT, SIGTERM and SIGHUP (and Ctrl-Break on Windows) only *request* a stop: the recorder
finishes the reads in flight, drains the queue and records the final status. Handlers are
installed with ``signal.signal`` — available on every platform — rather than the event loop's
POSIX-only ``add_signal_handler``.

Output is for the operator and never decides the run's fate: a closed terminal or a log pipe
whose reader is gone (writes fail with ``EIO``/``EPIPE``) silences the progress, the stop notes
and the summary, while the recording goes on, stops on a signal and records its end as usual.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import anyio
import anyio.lowlevel
from rich.live import Live

from ..config import MonitorConfig
from ..live import progress_mode, run_live_view
from ..recorder import Recorder
from ..records import GroupStats
from ..stalls import Stall, running_stall, skipped_in_flight
from ..summary import RunSummary
from .common import console, err_console
from .entry import signal_exit_code

__all__ = [
    "RunOutcome",
    "group_progress",
    "received_signals",
    "record",
    "say",
    "signal_exit_code",
    "signals_restored",
    "stop_signal_numbers",
    "stop_signals",
    "unless_output_gone",
]


@dataclass(slots=True)
class RunOutcome:
    summary: RunSummary
    signal: int | None


def stop_signal_numbers() -> list[int]:
    """The signals that stop a command gracefully rather than kill it."""
    wanted: list[int] = [signal.SIGINT, signal.SIGTERM]
    if hasattr(signal, "SIGBREAK"):  # Windows console Ctrl-Break
        wanted.append(signal.SIGBREAK)
    # The terminal (or the ssh session) the run was started from has gone. Its default action
    # would kill the process like SIGKILL — the run left `running`, the samples of the last
    # commit interval lost. Under ``nohup`` it is ignored, and stays so.
    if hasattr(signal, "SIGHUP") and signal.getsignal(signal.SIGHUP) != signal.SIG_IGN:
        wanted.append(signal.SIGHUP)
    return wanted


@contextmanager
def unless_output_gone() -> Iterator[None]:
    """Around writes to stdout or stderr whose failure must not change what happens next:
    a stream whose reader is gone (a closed terminal: ``EIO``; a log pipe whose reader died:
    ``EPIPE``) ends the block quietly. rich answers a broken pipe by pointing stdout at
    ``os.devnull`` and raising ``SystemExit(1)``; that is taken back here too, and a plain
    write's broken pipe gets the same ``os.devnull``, so that the interpreter's last flush of
    stdout cannot fail either and turn the exit code into 120. Without a ``sys.stdout``
    (started with stdout closed) there is nothing to point there: the broken stderr used to
    raise AttributeError from here, and that ended the run."""
    try:
        yield
    except SystemExit as exc:
        if exc.code != 1:
            raise
    except OSError:
        if sys.stdout is None:
            return
        with contextlib.suppress(OSError, ValueError):  # ValueError: no file descriptor
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            os.close(devnull)


def say(text: str, live: list[Live] | None = None) -> None:
    """A note on stderr that may fail: nobody may be reading any more. While the live view is
    on that terminal, through the view (printed above it, as rich does with ``sys.stderr``):
    a line written beside it was erased by its next redraw, and the view, one line lower than
    it knew, left its old first line on the screen for good."""
    with unless_output_gone():
        if live and live[0].is_started and err_console.is_terminal:
            live[0].console.print(text, markup=False)
        else:
            err_console.print(text, markup=False)


#: Every stop signal this process received (the handlers below append to it).
received_signals: list[int] = []


def _note_late_signal(signum: int, _frame: object) -> None:
    received_signals.append(signum)
    # Plain write: this may interrupt any Python code, a rich print included — which must not
    # get an exception from here when stderr is gone.
    with contextlib.suppress(OSError):
        os.write(2, b"trajmon: already stopping; finishing up\n")


@contextmanager
def stop_signals(on_stop: Callable[[int], None]) -> Iterator[None]:
    """Route SIGINT/SIGTERM/SIGBREAK to ``on_stop`` on the event loop for the block's duration.

    After it, until :func:`signals_restored` ends, they are only noted: the run has ended and
    what is left — closing the instrument, printing the summary, the exit code — must happen
    rather than give way to a KeyboardInterrupt (an impatient second Ctrl-C used to lose the
    ``--json`` summary and the exit code).
    """
    loop = asyncio.get_running_loop()

    def handler(signum: int, _frame: object) -> None:
        received_signals.append(signum)
        loop.call_soon_threadsafe(on_stop, signum)

    installed: list[int] = []
    for sig in stop_signal_numbers():
        # ValueError/OSError: not the main thread, or not supported on this platform.
        with contextlib.suppress(ValueError, OSError):
            signal.signal(sig, handler)
            installed.append(sig)
    try:
        yield
    finally:
        for sig in installed:
            signal.signal(sig, _note_late_signal)


@contextmanager
def signals_restored() -> Iterator[None]:
    """Around a whole recording command: the signal handlers it found are put back when it
    ends (see :func:`stop_signals`) — unless a signal stopped it. The process is then on its
    way out, and a further Ctrl-C must not turn exit code 130 into death by SIGINT: they are
    ignored (``SIG_IGN``, which Python's shutdown leaves alone, unlike a Python handler)."""
    saved: dict[int, Any] = {}
    for sig in stop_signal_numbers():
        with contextlib.suppress(ValueError, OSError):
            saved[sig] = signal.getsignal(sig)
    before = len(received_signals)
    try:
        yield
    finally:
        stopped = len(received_signals) > before
        for sig, old in saved.items():
            with contextlib.suppress(ValueError, OSError, TypeError):  # None: not from Python
                signal.signal(sig, signal.SIG_IGN if stopped else old)


async def _progress(recorder: Recorder, every_s: float) -> None:
    """One concise line every few seconds: for logs and terminals alike."""
    await recorder.started.wait()
    # From the counts at the start: a resumed run's counters hold its earlier sessions, and
    # its first line reported them as read in these 5 s (21.4/s at 10 Hz).
    last = {st.name: st.samples_read for st in recorder.stats}
    last_t = time.monotonic()
    while True:
        await anyio.sleep(every_s)
        now = time.monotonic()
        parts = [f"t={now - (recorder.t0_mono or now):7.1f}s"]
        t0, at, stopping = recorder.t0_mono, recorder.clock.monotonic(), recorder.stop_requested
        for st in recorder.stats:
            rate = (st.samples_read - last.get(st.name, 0)) / max(now - last_t, 1e-9)
            last[st.name] = st.samples_read
            stall = None if t0 is None else running_stall(st, t0, at, stopping)
            skipped = 0 if t0 is None else skipped_in_flight(st, t0)
            parts.append(group_progress(st, rate, stall, skipped))
        parts.append(f"queue {recorder.queue_depth}")
        parts.append(f"actions {recorder.detector_actions}")
        last_t = now
        err_console.print("  ".join(parts), markup=False)


def group_progress(
    st: GroupStats, rate: float, stall: Stall | None = None, skipped: int = 0
) -> str:
    """A group's part of the progress line. Failed reads are named once there are any: a
    failed read is still a sample, so in a log (no live view) an outage kept the rate and
    showed nothing. A hung read is named too, its overdue ticks counted missed already: in a
    log it showed as `missed 0` for as long as it hung; so are the ticks the read in flight
    skipped (``skipped``, :func:`~trajmon.stalls.skipped_in_flight`)."""
    missed = st.missed_ticks + skipped + (0 if stall is None else stall.overdue)
    failed = f", failed {st.failed_reads}" if st.failed_reads else ""
    hung = "" if stall is None else f", {stall.describe()}"
    return f"{st.name} {st.samples_read} ({rate:.1f}/s, missed {missed}{failed}{hung})"


async def _shown(show: Callable[[], Awaitable[None]]) -> None:
    """Run a progress display until it is cancelled — or until its stream is gone (a closed
    terminal, a log pipe whose reader died): then it stops, and the recording goes on."""
    with unless_output_gone():
        await show()


async def record(
    config: MonitorConfig,
    instruments: dict[str, Any],
    *,
    snapshot: dict[str, Any] | None = None,
    quiet: bool = False,
    progress_every_s: float = 5.0,
    on_started: Callable[[Recorder], None] | None = None,
    resume: bool = False,
) -> RunOutcome:
    recorder = Recorder(config, instruments, snapshot=snapshot, resume=resume)
    received: list[int] = []
    live: list[Live] = []  # the live view's display, once it shows

    def on_stop(signum: int) -> None:
        first = not received
        received.append(signum)
        recorder.request_stop()  # before any output: writing the note may fail
        if first:
            say("trajmon: stopping: draining the queue and committing", live)
        else:
            say("trajmon: already stopping; finishing the last commit", live)

    with stop_signals(on_stop), _single_errors():
        # A stop signal that came before its handler was in place left a cancellation pending:
        # taken here, nothing is written; taken inside run(), a run row was created and ended.
        await anyio.lowlevel.checkpoint()
        async with anyio.create_task_group() as tg:
            # A dumb terminal (TERM=dumb: an editor's shell, a serial console) cannot redraw:
            # rich's Live would show nothing at all there until the run ends.
            redraws = console.is_terminal and not console.is_dumb_terminal
            mode = progress_mode(quiet=quiet, is_terminal=redraws)
            if mode == "live":
                tg.start_soon(
                    _shown, lambda: run_live_view(recorder, console, on_screen=live.append)
                )
            elif mode == "lines":
                tg.start_soon(_shown, lambda: _progress(recorder, progress_every_s))
            if on_started is not None:

                async def notify() -> None:
                    await recorder.started.wait()
                    on_started(recorder)

                tg.start_soon(notify)
            try:
                summary = await recorder.run()
            finally:
                tg.cancel_scope.cancel()
    return RunOutcome(summary, received[0] if received else None)


@contextlib.contextmanager
def _single_errors() -> Iterator[None]:
    """The task group around the recorder wraps its one failure in an ExceptionGroup; callers
    (and their ``except StorageError``) want the failure itself."""
    try:
        yield
    except BaseExceptionGroup as group:
        if len(group.exceptions) == 1:
            raise group.exceptions[0] from None
        raise


def exit_code_for(outcome: RunOutcome) -> int:
    from .common import EXIT_FAILED

    if outcome.summary.status == "failed":
        return EXIT_FAILED
    if outcome.signal is None or outcome.summary.status == "completed":
        # A signal that came once the duration was over (while the last commit was written or
        # the instrument closed) stopped nothing: the code says what the run's record says.
        return 0
    return signal_exit_code(outcome.signal)
