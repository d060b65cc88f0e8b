"""``trajmon run``: record until the duration ends or the operator stops it."""

from __future__ import annotations

import dataclasses
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, closing
from pathlib import Path
from typing import Annotated, Any

import anyio
import typer
from rich.table import Table

from ..config import MonitorConfig
from ..queries import QueryError
from ..recorder import RunFailedError, RunSummary
from ..resume import load_resume_config
from ..runstore import RunExistsError
from ..writer import StorageError
from .common import EXIT_FAILED, DbOption, JsonOption, console, fail, print_json, user_errors
from .runner import connect_nanonis, exit_code_for, record

__all__ = ["check_run_name_free", "print_summary", "run", "sim_instruments"]


def check_run_name_free(db: Path, run_name: str) -> None:
    """Refuse a used name before any instrument is touched or any byte is written."""
    if not db.exists():
        return
    try:
        with closing(sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True)) as conn:
            tables = {
                r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")
            }
            if "runs" not in tables:
                return
            row = conn.execute("SELECT 1 FROM runs WHERE run_name = ?", (run_name,)).fetchone()
    except sqlite3.Error as exc:
        raise QueryError(f"cannot read {db}: {exc}") from exc
    if row is not None:
        raise RunExistsError(f"run name {run_name!r} is already used in {db}; choose a new name")


@asynccontextmanager
async def sim_instruments(
    timeout: float, scenario: Path | None = None, *, start_operator: bool = True
) -> AsyncIterator[Any]:
    """The bundled simulator on a free loopback port, read through the real TCP driver."""
    from simulators.operator import default_scenario_path
    from simulators.serve import run_simulator

    async with (
        run_simulator(
            port=0,
            scenario=scenario or default_scenario_path(),
            seed=0,
            start_operator=start_operator,
        ) as sim,
        connect_nanonis(sim.host, sim.port, timeout) as instruments,
    ):
        yield sim, instruments


def summary_dict(summary: RunSummary) -> dict[str, Any]:
    data = dataclasses.asdict(summary)
    data["signal_samples"] = summary.signal_samples
    data["spec_samples"] = summary.spec_samples
    data["missed_ticks"] = summary.missed_ticks
    return data


def print_summary(summary: RunSummary) -> None:
    table = Table(
        title=f"run {summary.run_name!r}: {summary.status} after {summary.duration_s:.1f} s"
    )
    for col in (
        "group",
        "kind",
        "interval",
        "samples",
        "missed ticks",
        "failed reads",
        "mean read",
    ):
        table.add_column(col, justify="left" if col in ("group", "kind") else "right")
    for g in summary.groups:
        table.add_row(
            g.name,
            g.kind,
            f"{g.interval_s:g} s",
            str(g.samples),
            str(g.missed_ticks),
            str(g.failed_reads),
            f"{g.mean_read_s * 1000:.2f} ms",
        )
    console.print(table)
    console.print(
        f"actions {summary.actions}  errors {summary.errors}  lost samples {summary.lost_samples}"
        f"  database {summary.db}",
        markup=False,
    )
    if summary.message:
        console.print(f"note: {summary.message}", markup=False)


def run(
    run_name: Annotated[
        str | None, typer.Option("--run-name", help="Name of this run (single-use).")
    ] = None,
    duration: Annotated[
        float | None, typer.Option("--duration", help="Seconds to record (default: until Ctrl-C).")
    ] = None,
    db: DbOption = Path("trajmon.db"),
    interval_s: Annotated[float, typer.Option("--interval-s", help="Poll interval.")] = 0.1,
    rotate_entries: Annotated[
        int, typer.Option("--rotate-entries", help="Samples per logical segment.")
    ] = 6000,
    action_window_s: Annotated[
        float, typer.Option("--action-window-s", help="Signal window before/after an action.")
    ] = 2.5,
    sim: Annotated[bool, typer.Option("--sim", help="Record the bundled STM simulator.")] = False,
    host: Annotated[str | None, typer.Option("--host", help="Nanonis TCP host.")] = None,
    port: Annotated[int | None, typer.Option("--port", help="Nanonis TCP port.")] = None,
    resume: Annotated[
        str | None,
        typer.Option(
            "--resume",
            help="Continue this crashed or interrupted run (same channels, same timeline).",
        ),
    ] = None,
    stale_after_s: Annotated[
        float,
        typer.Option(
            "--stale-after-s", help="Heartbeat age after which the run counts as crashed."
        ),
    ] = 5.0,
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress lines.")] = False,
    json_out: JsonOption = False,
) -> None:
    """Record signals, specs and actions until --duration ends or Ctrl-C."""
    if resume is not None:
        _resume(resume, db, duration, sim, host, port, quiet=quiet, json_out=json_out)
        return
    if run_name is None:
        fail("name the run: --run-name NAME (or --resume NAME to continue one)")
    with user_errors():
        config = MonitorConfig(
            run_name=run_name,
            db=db,
            interval_s=interval_s,
            rotate_entries=rotate_entries,
            window_before_s=action_window_s,
            window_after_s=action_window_s,
            duration_s=duration,
            stale_after_s=stale_after_s,
            source="sim" if sim else "tcp",
        )
        _check_source(sim, host, port)
        assert config.run_name is not None
        check_run_name_free(db, config.run_name)
    _record_and_exit(config, sim, host, port, quiet=quiet, json_out=json_out, resume=False)


def _check_source(sim: bool, host: str | None, port: int | None) -> None:
    if sim == (host is not None or port is not None):
        fail("choose one instrument source: --sim, or --host H --port P")
    if not sim and (host is None or port is None):
        fail("--host and --port go together")


def _resume(
    name: str,
    db: Path,
    duration: float | None,
    sim: bool,
    host: str | None,
    port: int | None,
    *,
    quiet: bool,
    json_out: bool,
) -> None:
    """Continue a run with its stored configuration; only the duration and source are new."""
    with user_errors():
        config = load_resume_config(db, name).updated(duration_s=duration)
        _check_source(sim, host, port)
    _record_and_exit(config, sim, host, port, quiet=quiet, json_out=json_out, resume=True)


def _record_and_exit(
    config: MonitorConfig,
    sim: bool,
    host: str | None,
    port: int | None,
    *,
    quiet: bool,
    json_out: bool,
    resume: bool,
) -> None:
    async def main() -> Any:
        quiet_ = quiet or json_out
        if sim:
            async with sim_instruments(config.read_timeout_s) as (_, instruments):
                return await record(config, instruments, quiet=quiet_, resume=resume)
        assert host is not None and port is not None
        async with connect_nanonis(host, port, config.read_timeout_s) as instruments:
            return await record(config, instruments, quiet=quiet_, resume=resume)

    with user_errors():
        try:
            outcome = anyio.run(main)
        except RunFailedError as exc:
            if json_out:
                print_json(summary_dict(exc.summary))
            else:
                print_summary(exc.summary)
            fail(str(exc), EXIT_FAILED)
        except StorageError as exc:
            fail(str(exc), EXIT_FAILED)
    if json_out:
        print_json(summary_dict(outcome.summary))
    else:
        print_summary(outcome.summary)
    raise typer.Exit(exit_code_for(outcome))
