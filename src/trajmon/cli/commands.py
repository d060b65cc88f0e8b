"""The ``trajmon`` command line: its commands, in one typer application."""

from __future__ import annotations

from typing import Any

import typer
from typer.core import TyperGroup

from .actions_cmd import actions_app
from .channels_cmd import channels_app, list_signals, list_specs
from .config_cmd import config_app
from .demo_cmd import demo
from .entry import interrupted
from .export_cmd import export
from .run_cmd import run
from .runs_cmd import runs, status
from .sim_cmd import sim_app

__all__ = ["app"]


class _Interruptible(TyperGroup):
    """A Ctrl-C (or SIGTERM, :mod:`.entry`) that a command does not handle itself — while it
    reads its options, plans a run, starts the simulator — ends it with one line and 130 (143).
    typer made it 130 without a word (older versions: "Aborted!" and exit code 1)."""

    def invoke(self, ctx: Any) -> Any:  # a click Context (typer's own copy of click, lately)
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            raise typer.Exit(interrupted()) from None


app = typer.Typer(
    name="trajmon",
    cls=_Interruptible,
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
