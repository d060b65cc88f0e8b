"""The ``trajmon`` command's first steps, before anything heavy is imported.

Reading the command line needs typer, rich, NumPy and pydantic: most of half a second before
argv is even parsed. An operator who sees the wrong ``--db`` and presses Ctrl-C at once got a
30-line KeyboardInterrupt traceback from deep inside an import; a SIGTERM then killed the
process without a word. Here, a stop signal at any point of start-up — until a command takes
the signals over (``trajmon run`` does once it connects and records) — ends the command with
one line and the documented exit code: 130 for Ctrl-C, 128 + the signal for the others.

SIGTERM, SIGHUP and Ctrl-Break act as Ctrl-C does (:func:`_as_ctrl_c`), so a command that
handles Ctrl-C — an event loop that cancels its task, ``status --watch`` — handles them alike.
This module imports nothing but the standard library.
"""

from __future__ import annotations

import contextlib
import io
import os
import signal
import sys
from types import FrameType
from typing import Any

__all__ = ["interrupted", "main", "signal_exit_code"]

#: Ctrl-C's exit code (128 + SIGINT), as a shell reports a process that Ctrl-C ended.
_EXIT_SIGINT = 130

#: The stop signals other than SIGINT that :func:`_as_ctrl_c` handled, in order.
_forwarded: list[int] = []

#: Set once :func:`interrupted` has said the command was interrupted.
_said: list[int] = []

#: The handlers :func:`main` found for the stop signals it routes; None outside ``main`` (a
#: test's CliRunner shares its process, whose signals are not the command's to change).
_found: dict[int, Any] | None = None


def signal_exit_code(signum: int) -> int:
    """The exit code of a command a stop signal ended: 128 + the signal, as a shell reports a
    process that signal killed (130 for SIGINT, 143 for SIGTERM, 129 for SIGHUP); Ctrl-Break
    (Windows) counts as Ctrl-C. Here, with the standard library only, for every command."""
    if signum == getattr(signal, "SIGBREAK", None):
        return _EXIT_SIGINT
    return 128 + signum


def _as_ctrl_c(signum: int, frame: FrameType | None) -> None:
    """SIGTERM, SIGHUP or Ctrl-Break, handled as a Ctrl-C would be at this moment: Python's
    KeyboardInterrupt, or — under an event loop, which installs its own SIGINT handler — a
    cancellation of the loop's main task, which lets what is open close. Ctrl-C itself keeps
    Python's handler: the event loop only takes it over when it finds that one."""
    _forwarded.append(signum)
    handler = signal.getsignal(signal.SIGINT)
    if callable(handler) and handler is not _as_ctrl_c:
        handler(signal.SIGINT, frame)
        return
    raise KeyboardInterrupt  # Ctrl-C ignored (a script's background job): this still stops


def _stops_as_ctrl_c() -> dict[int, Any]:
    """Route the stop signals whose default would kill the process without a word to
    :func:`_as_ctrl_c`; an ignored one (``nohup``) stays ignored. Returns the handlers found."""
    wanted = [signal.SIGTERM]
    for name in ("SIGHUP", "SIGBREAK"):
        if hasattr(signal, name):
            wanted.append(getattr(signal, name))
    found: dict[int, Any] = {}
    for sig in wanted:
        with contextlib.suppress(ValueError, OSError):  # not the main thread; not supported
            if signal.getsignal(sig) == signal.SIG_DFL:
                found[sig] = signal.signal(sig, _as_ctrl_c)
    return found


def interrupted() -> int:
    """Say, in one line on stderr, that a stop signal ended the command; its exit code."""
    signum = _forwarded[0] if _forwarded else signal.SIGINT
    _said.append(signum)
    if _found is not None:
        _ignore_stops(_found)  # before the line: Ctrl-C held down cuts nothing short
    name = "" if signum == signal.SIGINT else f" ({signal.Signals(signum).name})"
    stream = sys.stderr
    if stream is not None:
        with contextlib.suppress(OSError, ValueError):  # stderr gone: the exit code remains
            stream.write(f"trajmon: interrupted{name}\n")
            stream.flush()
    return signal_exit_code(signum)


def _ignore_stops(found: dict[int, Any]) -> None:
    """On the way out after a stop signal: another one (Ctrl-C held down) must not turn the
    exit code into a traceback. SIG_IGN, which Python's shutdown leaves alone."""
    for sig in {signal.SIGINT, *found}:
        with contextlib.suppress(ValueError, OSError):
            signal.signal(sig, signal.SIG_IGN)


def _stdio_on_devnull() -> None:
    """Started with stdin, stdout or stderr closed (``<&- >&- 2>&-``, as a detached job may be),
    the next file opened would get that descriptor — and whatever is written to "stderr" (a
    signal handler's plain ``os.write(2, …)``, a C library's diagnostics) would land in it.
    Python then also has no ``sys.stdout``: a ``--json`` document written to it was a traceback
    and exit code 1. A closed one is pointed at ``os.devnull`` before anything is opened, and
    Python gets a stream on it: the output is lost, as the closed stream meant, and nothing else."""
    for fd, name, mode in ((0, "stdin", "r"), (1, "stdout", "w"), (2, "stderr", "w")):
        try:
            os.fstat(fd)
        except OSError:
            null = os.open(os.devnull, os.O_RDWR)
            if null != fd:
                os.dup2(null, fd)
                os.close(null)
        if getattr(sys, name) is None:
            setattr(sys, name, open(fd, mode, encoding="utf-8", closefd=False))  # noqa: SIM115


def main() -> None:
    """The ``trajmon`` command (its console script, and ``python -m trajmon``)."""
    global _found
    _forwarded.clear()  # what an earlier command of this process (a test's) was told
    _said.clear()
    _found = found = _stops_as_ctrl_c()
    code: Any = 0
    try:
        _stdio_on_devnull()
        # A run name or label that stdout's encoding cannot write ("测" on a Windows code page,
        # or PYTHONIOENCODING=ascii) made every table showing it a UnicodeEncodeError
        # traceback: such characters are escaped, as Python does on stderr (--json documents
        # escape them anyway).
        if isinstance(sys.stdout, io.TextIOWrapper):
            sys.stdout.reconfigure(errors="backslashreplace")
        from . import app  # the heavy part: typer, rich, the commands (``.commands``)

        app()
    except KeyboardInterrupt:
        code = interrupted()
    except SystemExit as exc:
        code = exc.code
        if _forwarded and not _said and code in (None, 0, _EXIT_SIGINT):
            # A command that ends quietly on Ctrl-C (`status --watch` with 130, `sim serve`
            # with 0) ended so on a SIGTERM too: the code says which signal it was.
            code = signal_exit_code(_forwarded[0])
    finally:
        _found = None  # outside main again: a CliRunner command must not change them
        if _said or _forwarded:
            _ignore_stops(found)
        else:  # SIG_DFL again for shutdown, unless a command has since chosen another handler
            for sig, old in found.items():
                with contextlib.suppress(ValueError, OSError, TypeError):
                    if signal.getsignal(sig) is _as_ctrl_c:
                        signal.signal(sig, old)
    raise SystemExit(code)
