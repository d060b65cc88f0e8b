"""``trajmon run``: record until the duration ends or the operator stops it."""

from __future__ import annotations

import dataclasses
import os
import shlex
import sqlite3
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, closing
from pathlib import Path
from typing import Annotated, Any

import anyio
import typer
from rich.console import Group, RenderableType
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

from ..config import ConfigError, MonitorConfig
from ..connection import StorageError, not_a_file
from ..live_rows import flowed
from ..queries import QueryError, open_readonly
from ..resume import load_resume_config
from ..runstore import RunExistsError
from ..staging import EffectiveConfig, consume_run_name, read_staged
from ..summary import GroupSummary, RunFailedError, RunSummary
from .common import (
    EXIT_FAILED,
    STATUS_STYLE,
    JsonOption,
    console,
    err_console,
    fail,
    print_json,
    print_table,
    program_name,
    user_errors,
)
from .config_cmd import (
    AfterOption,
    BeforeOption,
    ChannelsOption,
    ConfigPathOption,
    IntervalOption,
    RotateOption,
    SignalIntervalOption,
    SignalsOption,
    SpecIntervalOption,
    SpecsOption,
    StationOption,
    WindowOption,
    config_path_or_default,
    option_overrides,
)
from .connect import connect_nanonis
from .runner import (
    exit_code_for,
    record,
    signals_restored,
    unless_output_gone,
)
from .sources import open_source, plan_run, unused_intervals

__all__ = ["check_run_name_free", "print_summary", "run", "sim_instruments"]


def check_run_name_free(db: Path, run_name: str) -> None:
    """Refuse a used name — or a place no run can be written to — before any instrument is
    touched or any byte is written."""
    if (problem := not_a_file(db)) is not None:  # before the simulator starts: `demo` said
        raise QueryError(f"{db} is {problem}, not a database file")  # "Recording …" first
    if not db.parent.is_dir():
        problem = "is not a directory" if db.parent.exists() else "does not exist"
        raise StorageError(f"cannot open database {db} for writing: {db.parent} {problem}")
    for place in (db.parent, db) if db.exists() else (db.parent,):
        if not os.access(place, os.W_OK):
            raise StorageError(f"cannot open database {db} for writing: {place} is not writable")
    if not db.exists():
        return
    try:
        conn, tables = open_readonly(db)
        with closing(conn):
            if "runs" not in tables:
                return
            row = conn.execute("SELECT 1 FROM runs WHERE run_name = ?", (run_name,)).fetchone()
    except sqlite3.Error as exc:
        if getattr(exc, "sqlite_errorname", None) == "SQLITE_READONLY_ROLLBACK":
            # A hot rollback journal: a writer was killed mid-transaction (creating the
            # catalog of a new file, say). Only a writer can roll it back — the recorder's
            # own connection does, and checks the name again under its write lock.
            return
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
    """``--json``'s document. A group that read nothing has no mean read time: ``null``, as
    ``trajmon runs --json`` gives it, rather than NaN (``"nan"`` in a number's place)."""
    data = dataclasses.asdict(summary)
    for group, g in zip(data["groups"], summary.groups, strict=True):
        if not g.samples_read:
            group["mean_read_s"] = None
    data["signal_samples"] = summary.signal_samples
    data["spec_samples"] = summary.spec_samples
    data["missed_ticks"] = summary.missed_ticks
    return data


def print_summary(summary: RunSummary) -> None:
    """The run's end as ``trajmon status`` shows a run: a head line, its groups (worded as
    status words them), its counts, the database and the command that lists its actions.
    On a terminal too narrow for the groups' table, each group's figures are flowed onto
    lines as the live view's are: the table had a border and headers as long as its values,
    and at 50 columns its headers stood one letter a line, ten lines tall."""
    head = Text.assemble(
        "run ",
        (repr(summary.run_name), "bold cyan"),
        ": ",
        (summary.status, STATUS_STYLE.get(summary.status, "")),
        f" after {summary.duration_s:.1f} s",
    )
    rows = [_summary_cells(g) for g in summary.groups]
    table = Table(box=None, header_style="bold", pad_edge=False)
    for col in _SUMMARY_COLUMNS:
        table.add_column(col, justify="left" if col == "group" else "right")
    for cells in rows:
        table.add_row(*cells)
    groups: list[RenderableType] = [table]
    wide = console.options.update_width(10_000)
    if console.is_terminal and Measurement.get(console, wide, table).maximum > console.width:
        groups = []
        for group, *cells in rows:
            named = zip(_SUMMARY_COLUMNS[1:], cells, strict=True)
            pairs = [group, *(Text.assemble(f"{name} ", cell) for name, cell in named)]
            groups.extend(flowed(pairs, console.width))
    counts = Text.assemble(
        f"actions {summary.actions}  errors ",
        (str(summary.errors), "red" if summary.errors else ""),
        "  lost samples ",
        (str(summary.lost_samples), "red" if summary.lost_samples else ""),
    )
    parts: list[RenderableType] = [head, *groups, counts, Text(f"database {summary.db}")]
    if summary.actions:  # quoted for a shell: run names and paths may hold spaces
        listing = f"{program_name()} actions list --db {shlex.quote(summary.db)}"
        parts.append(Text(f"see the actions: {listing} --run {shlex.quote(summary.run_name)}"))
    print_table(Group(*parts))
    if summary.message:
        console.print(f"note: {summary.message}", markup=False)


_SUMMARY_COLUMNS = ("group", "interval", "samples", "missed", "failed", "mean read")


def _summary_cells(g: GroupSummary) -> list[Text]:
    return [
        Text(f"{g.name} ({g.kind})"),
        Text(f"{g.interval_s:g} s"),
        Text(str(g.samples)),
        Text(str(g.missed_ticks), "red" if g.missed_ticks else ""),
        Text(str(g.failed_reads), "red" if g.failed_reads else ""),
        Text(f"{g.mean_read_s * 1000:.2f} ms" if g.samples_read else "no reads"),
    ]


_STALE_AFTER_S = 5.0
_READ_TIMEOUT_S = 2.0


def run(
    run_name: Annotated[
        str | None,
        typer.Option("--run-name", help="Name of this run (single-use; default: the staged one)."),
    ] = None,
    duration: Annotated[
        float | None, typer.Option("--duration", help="Seconds to record (default: until Ctrl-C).")
    ] = None,
    db: Annotated[
        Path | None, typer.Option("--db", help="SQLite database file (default: trajmon.db).")
    ] = None,
    interval_s: IntervalOption = None,
    signal_interval_s: SignalIntervalOption = None,
    spec_interval_s: SpecIntervalOption = None,
    rotate_entries: RotateOption = None,
    action_window_s: WindowOption = None,
    window_before_s: BeforeOption = None,
    window_after_s: AfterOption = None,
    signals: SignalsOption = None,
    specs: SpecsOption = None,
    sim: Annotated[bool, typer.Option("--sim", help="Record the bundled STM simulator.")] = False,
    host: Annotated[str | None, typer.Option("--host", help="Nanonis TCP host.")] = None,
    port: Annotated[int | None, typer.Option("--port", help="Nanonis TCP port.")] = None,
    station: StationOption = None,
    channels: ChannelsOption = None,
    resume: Annotated[
        str | None,
        typer.Option(
            "--resume",
            help="Continue this crashed, interrupted or failed run (same channels, same timeline).",
        ),
    ] = None,
    stale_after_s: Annotated[
        float,
        typer.Option(
            "--stale-after-s", help="Heartbeat age after which the run counts as crashed."
        ),
    ] = _STALE_AFTER_S,
    read_timeout_s: Annotated[
        float,
        typer.Option(
            "--read-timeout-s", help="Give up on an instrument read after this many seconds."
        ),
    ] = _READ_TIMEOUT_S,
    config_path: ConfigPathOption = None,
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress lines.")] = False,
    json_out: JsonOption = False,
) -> None:
    """Record signals, specs and actions until --duration ends or Ctrl-C.

    Every option overrides the staged configuration (trajmon config show).
    The staged run name is cleared once the run has started, whatever its outcome.
    """
    path = config_path_or_default(config_path)
    if resume is not None:
        fixed = {
            "--run-name": run_name,
            "--interval-s": interval_s,
            "--signal-interval-s": signal_interval_s,
            "--spec-interval-s": spec_interval_s,
            "--rotate-entries": rotate_entries,
            "--action-window-s": action_window_s,
            "--window-before-s": window_before_s,
            "--window-after-s": window_after_s,
            "--signals": signals,
            "--specs": specs,
            "--channels": channels,
            "--stale-after-s": None if stale_after_s == _STALE_AFTER_S else stale_after_s,
            "--read-timeout-s": None if read_timeout_s == _READ_TIMEOUT_S else read_timeout_s,
        }
        given = [name for name, value in fixed.items() if value is not None]
        if given:  # silently recording with other settings than asked would be worse
            fail(
                f"{', '.join(given)}: a resumed run keeps its stored configuration;"
                " only the instrument source, --duration and --db are taken on resume"
            )
        with user_errors():
            # absolute, as a new run's (staging): the summary names the same file either way
            resume_db = (db or read_staged(path).db or Path("trajmon.db")).expanduser().resolve()
        with user_errors():
            config = load_resume_config(resume_db, resume).updated(duration_s=duration)
            source = _resume_source(config, sim, host, port, station)
        _record_and_exit(source, quiet=quiet, json_out=json_out, resume=True)
        return
    with user_errors():
        overrides = option_overrides(
            run_name=run_name,
            db=db,
            signals=signals,
            specs=specs,
            interval_s=interval_s,
            signal_interval_s=signal_interval_s,
            spec_interval_s=spec_interval_s,
            rotate_entries=rotate_entries,
            action_window_s=action_window_s,
            window_before_s=window_before_s,
            window_after_s=window_after_s,
            sim=sim,
            host=host,
            port=port,
            station=station,
            channels=channels,
        )
        plan = plan_run(
            read_staged(path),
            overrides,
            duration_s=duration,
            stale_after_s=stale_after_s,
            read_timeout_s=read_timeout_s,
        )
        assert plan.config.run_name is not None
        typed = {
            "--interval-s": interval_s,
            "--signal-interval-s": signal_interval_s,
            "--spec-interval-s": spec_interval_s,
        }
        for name, why in unused_intervals(plan.config, typed).items():
            note = f"trajmon: note: {name} {typed[name]:g} is not used: {why}"
            err_console.print(note, markup=False)
        try:
            check_run_name_free(plan.config.db, plan.config.run_name)
        except StorageError as exc:
            fail(str(exc), EXIT_FAILED)
    try:
        _record_and_exit(plan, quiet=quiet, json_out=json_out, resume=False)
    finally:
        _forget_staged_name(path, plan.config)


def _forget_staged_name(path: Path, config: MonitorConfig) -> None:
    """Once the run row exists the staged name is spent, however the run ended."""
    assert config.run_name is not None
    try:
        check_run_name_free(config.db, config.run_name)
        return  # refused before it started: the name stays staged
    except RunExistsError:
        pass
    except QueryError:
        return
    try:
        consume_run_name(path)
    except ConfigError as exc:
        err_console.print(f"trajmon: warning: {exc}", markup=False)


def _check_source(sim: bool, host: str | None, port: int | None) -> None:
    if sim == (host is not None or port is not None):
        fail("choose one instrument source: --sim, or --host H --port P")
    if not sim and (host is None or port is None):
        fail("--host and --port go together")


def _resume_source(
    config: MonitorConfig,
    sim: bool,
    host: str | None,
    port: int | None,
    station: Path | None,
) -> EffectiveConfig:
    """Where a resumed run's instruments come from: the options given, else what the run
    was recorded from (a station file, or the simulator). Channels always stay the stored ones:
    the channels file they came from is not read again (it may have been moved or edited)."""
    if station is not None:
        return EffectiveConfig(config, "station", None, None, station, config.channels_file)
    if sim or host is not None or port is not None:
        _check_source(sim, host, port)
        return EffectiveConfig(config, "sim" if sim else "tcp", host, port, None, None)
    if config.source == "station" and config.station is not None:
        return EffectiveConfig(config, "station", None, None, config.station, config.channels_file)
    if config.source == "sim":
        return EffectiveConfig(config, "sim", None, None, None, None)
    raise ConfigError(
        f"say where {config.run_name!r} records from: --host H --port P, --station FILE or --sim"
    )


def _record_and_exit(plan: EffectiveConfig, *, quiet: bool, json_out: bool, resume: bool) -> None:
    config = plan.config

    async def main() -> Any:
        async with open_source(plan, config.read_timeout_s) as (instruments, snapshot):
            return await record(
                config, instruments, snapshot=snapshot, quiet=quiet or json_out, resume=resume
            )

    with signals_restored():
        with user_errors():
            try:
                outcome = anyio.run(main)
            except RunFailedError as exc:
                _show_summary(exc.summary, json_out)
                fail(str(exc), EXIT_FAILED)
            except StorageError as exc:
                fail(str(exc), EXIT_FAILED)
        _show_summary(outcome.summary, json_out)
    raise typer.Exit(exit_code_for(outcome))


def _show_summary(summary: RunSummary, json_out: bool) -> None:
    """The run has ended and its end is recorded; a closed stdout (the terminal gone, a pipe
    whose reader ended) loses the summary, not the exit code a script acts on. Started with
    stdout closed (``>&-``), Python has no ``sys.stdout`` at all: writing to it raised
    AttributeError, a traceback and exit code 1 after a completed run."""
    if sys.stdout is None:
        return
    with unless_output_gone():
        if json_out:
            print_json(summary_dict(summary))
        else:
            print_summary(summary)
