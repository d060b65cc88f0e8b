"""``trajmon runs`` and ``trajmon status``: what is in a database, and how one run is doing.

Both open the database read-only (WAL): they can be run from another terminal, a cron job or a
supervising script while a run is recording, and never make it wait or see "database is locked".
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich import box
from rich.console import Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from ..queries import list_runs, resolve_run
from ..stalls import status_stalls
from ..status import run_status
from .common import (
    EXIT_SIGINT,
    STATUS_STYLE,
    DbOption,
    JsonOption,
    console,
    fit_to_width,
    print_json,
    print_table,
    reading,
)

__all__ = ["render_status", "runs", "status", "watch_line"]


def _num(value: float | None, fmt: str = ".1f", suffix: str = "") -> str:
    return "—" if value is None else f"{value:{fmt}}{suffix}"


def runs(db: DbOption = Path("trajmon.db"), json_out: JsonOption = False) -> None:
    """List every run in the database with its status, start, duration and counts."""
    with reading(db) as conn:
        rows = list_runs(conn)
    if json_out:
        print_json({"db": str(db.resolve()), "runs": rows})
        return
    table = Table(title=f"runs in {db} ({len(rows)})", box=box.SIMPLE_HEAD)
    for col in ("run", "status", "started (UTC)"):
        table.add_column(col)
    for col in ("duration", "signal", "spec", "missed", "actions", "errors", "lost"):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(
            Text(r["run_name"]),
            Text(r["status"], style=STATUS_STYLE.get(r["status"], "")),
            str(r["run_start_utc"])[:19].replace("T", " "),
            _num(r["duration_s"], suffix=" s"),
            str(r["signal_samples"]),
            str(r["spec_samples"]),
            str(r["missed_ticks"]),
            str(r["actions"]),
            str(r["errors"]),
            str(r["lost_samples"]),
        )
    print_table(table)


def render_status(doc: dict[str, Any]) -> RenderableType:
    """The human view of a status document (the JSON is the contract; this is for eyes)."""
    head = Text.assemble(
        ("run ", "bold"),
        (repr(doc["run_name"]), "bold cyan"),
        ": ",
        (doc["status"], STATUS_STYLE.get(doc["status"], "")),
        f"  elapsed {_num(doc['elapsed_s'], suffix=' s')}",
        f"  started {doc['run_start_utc']}",
    )
    if doc["status"] in ("running", "crashed") or doc.get("ended_utc") is None:
        # Liveness only means something for a run that has not recorded its end.
        age = doc["heartbeat_age_s"]
        when = (
            f"last heartbeat {_num(age, suffix=' s')} ago"
            f" (crashed if older than {doc['stale_after_s']:g} s)"
        )
        if doc["status"] == "crashed" and age is not None and age >= 0:
            # What status can tell is only that the beat stopped: a process stopped with
            # Ctrl-Z or a notebook cell that holds the loop looks the same until it resumes.
            when = (
                f"no heartbeat for {_num(age, suffix=' s')} (more than"
                f" {doc['stale_after_s']:g} s): its process died, or is paused or blocked (a"
                " notebook cell that does not await) and may still come back"
            )
        if age is not None and age < 0:  # ahead of the clock by more than a beat (status.py)
            when = (
                f"last heartbeat {-age:.1f} s ahead of this computer's clock (it was set back):"
                " crashed, unless a heartbeat comes in the next seconds"
            )
    else:
        when = f"ended {doc['ended_utc']}"
    beat = Text(
        f"{when}  actions {doc['actions']}  errors {doc['errors']}"
        f"  lost samples {doc['lost_samples']}  sessions {doc['sessions']}"
    )
    table = Table(box=None, header_style="bold", pad_edge=False)
    for col in ("group", "target Hz", "achieved Hz", "samples", "missed", "failed", "read ms"):
        table.add_column(col, justify="left" if col == "group" else "right")
    for g in doc["groups"]:
        mean = g["read_mean_s"]  # None before the first read: then there is no maximum either
        most = None if mean is None else g["read_max_s"] * 1000
        table.add_row(
            f"{g['name']} ({g['kind']})",
            f"{g['target_rate_hz']:.4g}",
            _num(g["achieved_rate_hz"], ".2f"),
            str(g["samples"]),
            str(g["missed_ticks"]),
            str(g["failed_reads"]),
            f"{_num(None if mean is None else mean * 1000, '.2f')} / {_num(most, '.2f')}",
        )
    parts: list[RenderableType] = [head, beat, table, *_stall_lines(doc["groups"])]
    if doc["last_error"] is not None:
        parts.extend(_last_error_lines(doc["last_error"]))
    if doc["message"]:
        parts.append(Text(f"note: {doc['message']}"))
    return Group(*parts)


def _stall_lines(groups: list[dict[str, Any]]) -> list[Text]:
    """Groups that had read nothing for too long at the last commit: a read hung in its
    driver is counted nowhere until it returns, and the row alone looks healthy."""
    lines = []
    for g in groups:
        if g.get("stalled_for_s") is None:  # absent: a document from run_status alone
            continue
        n = g["overdue_ticks"]
        lines.append(
            Text(
                f"{g['name']}: no new sample for {g['stalled_for_s']:.1f} s at the last commit,"
                f" {n} tick{'' if n == 1 else 's'} missed so far: a read may be hung",
                "bold red",
            )
        )
    return lines


def _last_error_lines(e: dict[str, Any]) -> list[Text]:
    """The latest streak of failed reads: where it began and why, and, when it spans more than
    one read, how long it lasted and what the latest read said."""
    where = f"{e['channel']} ({e['instrument']})" if e["instrument"] else str(e["channel"])
    cause = f"{e['error_type']}: {e['message']}"
    if e["reads"] == 1:
        return [Text(f"last error at {e['dt_s']:.2f} s on {where}: {cause}", "red")]
    lines = [
        Text(
            f"last error: {e['reads']} failed reads in a row on {where}"
            f" from {e['dt_s']:.2f} s to {e['last_dt_s']:.2f} s: {cause}",
            "red",
        )
    ]
    if e["last_message"] != e["message"]:
        lines.append(Text(f"  latest: {e['last_message']}", "red"))
    return lines


def _read_status(db: Path, run: str | None) -> dict[str, Any]:
    with reading(db) as conn:
        doc = run_status(conn, resolve_run(conn, run))
        status_stalls(conn, doc)
        return doc


def watch_line(doc: dict[str, Any]) -> str:
    """One refresh of ``status --watch`` where nothing is redrawn (a log): the counts, and the
    groups stalled at the last commit — in a log, frozen counts alone do not say a read hung."""
    line = (
        f"{doc['run_name']}: {doc['status']} t={_num(doc['elapsed_s'])} s"
        f" signal {doc['signal_samples']} spec {doc['spec_samples']}"
        f" actions {doc['actions']} errors {doc['errors']}"
    )
    for g in doc["groups"]:
        if g.get("stalled_for_s") is not None:
            line += f" stalled {g['name']} {g['stalled_for_s']:.1f} s"
    age = doc.get("heartbeat_age_s")
    if doc["running"] and age is not None and age > doc["stale_after_s"] / 2:
        # t= goes on counting from the last heartbeat until the run is called crashed: a
        # recorder that died (or a frozen machine) is told from a live one a little earlier.
        line += f" no heartbeat for {age:.1f} s"
    return line


def _watch(db: Path, run: str | None, interval: float, json_out: bool) -> dict[str, Any]:
    """Refresh until the run is no longer running; returns the final document."""
    doc = _read_status(db, run)
    name = doc["run_name"]  # follow this run even if a newer one starts meanwhile
    if json_out:
        while True:
            print_json(doc, compact=True)  # JSON Lines, escaped as every --json document is
            if not doc["running"]:
                return doc
            time.sleep(interval)
            doc = _read_status(db, name)
    if not console.is_terminal or console.is_dumb_terminal:
        # No redrawing (a pipe, a log, TERM=dumb — where rich's Live shows nothing until the
        # end): a line per refresh, then the final state.
        while doc["running"]:
            console.print(watch_line(doc), markup=False)
            time.sleep(interval)
            doc = _read_status(db, name)
        print_table(render_status(doc))
        return doc

    # Lines wrap rather than run off the edge: soft-wrapped, the redrawn view would crop them
    # at the window's width, and the final state left on the screen would lose its ends
    # ("lost samples 0  ses" on 80 columns).
    def view(doc: dict[str, Any]) -> RenderableType:
        shown = render_status(doc)
        fit_to_width(shown, console)
        return shown

    soft_wrap, console.soft_wrap = console.soft_wrap, False
    try:
        with Live(view(doc), console=console, auto_refresh=False) as live:
            while doc["running"]:
                time.sleep(interval)
                doc = _read_status(db, name)
                live.update(view(doc), refresh=True)
    finally:
        console.soft_wrap = soft_wrap
    return doc


def status(
    run: Annotated[
        str | None, typer.Argument(help="Run name (default: the most recent run).")
    ] = None,
    db: DbOption = Path("trajmon.db"),
    json_out: JsonOption = False,
    watch: Annotated[
        bool, typer.Option("--watch", help="Refresh until the run is no longer running.")
    ] = False,
    interval: Annotated[
        float,
        typer.Option(
            "--interval", min=0.05, max=3600.0, help="Seconds between refreshes (--watch)."
        ),
    ] = 1.0,
) -> None:
    """Show how a run is doing; safe to use while it records (read-only, never locks)."""
    if not watch:
        doc = _read_status(db, run)
        if json_out:
            print_json(doc)
        else:
            print_table(render_status(doc))
        return
    try:
        _watch(db, run, interval, json_out)
    except KeyboardInterrupt:
        raise typer.Exit(EXIT_SIGINT) from None
