"""The ``trajmon`` command line."""

from __future__ import annotations

import typer

from .actions_cmd import actions_app
from .demo_cmd import demo
from .run_cmd import run
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
app.add_typer(actions_app, name="actions")
app.add_typer(sim_app, name="sim")


def main() -> None:
    app()
