"""The ``trajmon`` command line."""

from __future__ import annotations

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


def main() -> None:
    app()
