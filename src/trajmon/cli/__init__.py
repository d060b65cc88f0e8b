"""The ``trajmon`` command line."""

from __future__ import annotations

import io
import os
import sys

import typer

from .actions_cmd import actions_app
from .channels_cmd import channels_app, list_signals, list_specs
from .config_cmd import config_app
from .demo_cmd import demo
from .export_cmd import export
from .run_cmd import run
from .runs_cmd import runs, status
from .sim_cmd import sim_app

__all__ = ["app", "main"]

app = typer.Typer(
    name="trajmon",
    help="Record signal and spec trajectories and operator actions from live instruments.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.command("run")(run)
app.command("demo")(demo)
app.command("runs")(runs)
app.command("status")(status)
app.command("export")(export)
app.add_typer(actions_app, name="actions")
app.add_typer(sim_app, name="sim")
app.add_typer(config_app, name="config")
app.add_typer(channels_app, name="channels")
app.command("list-signals")(list_signals)
app.command("list-specs")(list_specs)


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
    _stdio_on_devnull()
    # A run name or label that stdout's encoding cannot write ("测" on a Windows code page, or
    # PYTHONIOENCODING=ascii) made every table showing it a UnicodeEncodeError traceback: such
    # characters are escaped, as Python does on stderr (--json documents escape them anyway).
    if isinstance(sys.stdout, io.TextIOWrapper):
        sys.stdout.reconfigure(errors="backslashreplace")
    app()
