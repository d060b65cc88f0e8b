"""``trajmon export``: one run to CSV, Parquet or netCDF files, streamed in bounded memory."""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from ..export import DEFAULT_CHUNK_ROWS, MAX_CHUNK_ROWS, count_rows, export_run
from ..export_range import dt_range, recorded_span
from ..queries import resolve_run
from .common import (
    EXIT_SIGINT,
    DbOption,
    JsonOption,
    console,
    err_console,
    fail,
    print_json,
    reading,
)
from .runner import signal_exit_code, stop_signal_numbers

__all__ = ["export"]


class ExportFormat(StrEnum):
    csv = "csv"
    parquet = "parquet"
    netcdf = "netcdf"


@contextmanager
def _progress(total: int, label: str) -> Iterator[Callable[[int], None] | None]:
    """A progress bar on stderr for long exports on a terminal; nothing in logs or pipes."""
    if not err_console.is_terminal or total < 200_000:
        yield None
        return
    # Here, not at the top: rich.progress (its spinners) is a tenth of `trajmon --help`'s start.
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    columns = (
        TextColumn("{task.description}", markup=False),  # the label is data: no markup
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=err_console, transient=True) as bar:
        task = bar.add_task(label, total=total)
        yield lambda n: bar.advance(task, n)


@contextmanager
def _stopped_like_ctrl_c() -> Iterator[list[int]]:
    """Every stop signal (SIGTERM, SIGHUP — a closed terminal — as well as Ctrl-C) ends an
    export as Ctrl-C does: what it wrote is removed, so a retry is not refused for files of a
    half export. SIGTERM's and SIGHUP's default action killed the process with the finished
    files and a .partial file left behind. The signals received are listed for the exit code."""
    received: list[int] = []

    def interrupt(signum: int, _frame: object) -> None:
        received.append(signum)
        raise KeyboardInterrupt

    saved = {
        sig: signal.signal(sig, interrupt)
        for sig in stop_signal_numbers()
        if signal.getsignal(sig) != signal.SIG_IGN  # ignored (nohup, a script's job): stays so
    }
    try:
        yield received
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)


def export(
    run: Annotated[str, typer.Argument(help="Name of the run to export.")],
    fmt: Annotated[
        ExportFormat, typer.Option("--format", "-f", help="csv, parquet or netcdf.")
    ] = ExportFormat.csv,
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Directory; files go in OUT/<run name>/.")
    ] = Path("."),
    db: DbOption = Path("trajmon.db"),
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace files of an earlier export.")
    ] = False,
    chunk_rows: Annotated[
        int,
        typer.Option(
            "--chunk-rows",
            min=1,
            max=MAX_CHUNK_ROWS,  # memory grows with it; a bound makes a typo a usage error
            help="Rows read and written per chunk.",
        ),
    ] = DEFAULT_CHUNK_ROWS,
    since: Annotated[
        float | None, typer.Option("--since", help="Only dt_s >= S (seconds since the start).")
    ] = None,
    until: Annotated[float | None, typer.Option("--until", help="Only dt_s <= S.")] = None,
    json_out: JsonOption = False,
) -> None:
    """Export a run's samples, actions, errors and channel catalog, with units."""
    try:
        rng = dt_range(since, until, "--")
    except ValueError as exc:
        fail(str(exc))
    if out.exists() and not out.is_dir():
        fail(f"--out {out} is not a directory")
    with reading(db) as conn:
        ref = resolve_run(conn, run)
        total = count_rows(conn, ref, rng)
        if not total and not rng.whole:  # said, not refused: its actions and errors may be
            first, last = recorded_span(conn, ref)  # what was asked for
            span = "none were recorded" if first is None else f"{first:.3f} .. {last:.3f} s"
            err_console.print(
                f"note: no samples in {rng.text()} (the run's samples: {span});"
                " the sample files hold no rows",
                markup=False,
            )
        with (
            _progress(total, f"exporting {ref.run_name}") as progress,
            _stopped_like_ctrl_c() as sig,
        ):
            try:
                result = export_run(
                    conn,
                    ref,
                    fmt.value,
                    out,
                    chunk_rows=chunk_rows,
                    overwrite=overwrite,
                    progress=progress,
                    since=rng.since,
                    until=rng.until,
                )
            except OSError as exc:
                fail(f"cannot write the export: {exc}", 1)
            except KeyboardInterrupt:
                err_console.print("trajmon: export stopped; its files were removed", markup=False)
                raise typer.Exit(signal_exit_code(sig[0]) if sig else EXIT_SIGINT) from None
    for warning in result.warnings:  # on stderr, also with --json: a user sees it either way
        err_console.print(f"trajmon: warning: {warning}", markup=False)
    if json_out:
        print_json(
            {
                "run_name": result.run_name,
                "format": result.format,
                "directory": str(result.directory),
                "files": [{"path": str(p), "rows": result.rows.get(p.name)} for p in result.files],
                "warnings": result.warnings,
                "range": rng.as_json(),
            }
        )
        return
    part = "" if rng.whole else f" ({rng.text()})"
    console.print(
        f"exported run {result.run_name!r}{part} as {result.format} to {result.directory}/",
        markup=False,
    )
    for p in result.files:
        rows = result.rows.get(p.name)
        count = "" if rows is None else f"  ({rows} row{'' if rows == 1 else 's'})"
        console.print(f"  {p.name}{count}", markup=False)
