"""``trajmon actions list|show|plot``: the operator's actions and their signal context."""

from __future__ import annotations

import itertools
import math
import os
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import JustifyMethod
from rich.table import Table

from ..channels import INT64_MAX
from ..detection import shown_apart
from ..queries import get_action, iter_actions, resolve_run
from ..windows import rows_of, window_columns
from .common import (
    EXIT_FAILED,
    DbOption,
    JsonOption,
    Streamed,
    console,
    err_console,
    fail,
    fmt_value,
    print_json,
    print_long_table,
    print_table,
    reading,
)

__all__ = ["LONG_LIST", "actions_app", "print_actions"]

actions_app = typer.Typer(help="List and inspect detected operator actions.", no_args_is_help=True)

#: Actions beyond which ``actions list`` says, before it draws, that the table takes seconds:
#: rich draws about 2 000 rows a second, and only then does anything appear.
LONG_LIST = 5000

RunOption = Annotated[
    str | None, typer.Option("--run", help="Run name (default: the most recent run).")
]


#: The columns of an action table, and how each is justified.
_COLUMNS: list[tuple[str, JustifyMethod]] = [
    (col, "right" if col in ("idx", "dt_s", "delta") else "left")
    for col in ("idx", "dt_s", "spec", "old", "new", "delta", "window")
]


def _cells(a: dict[str, Any]) -> tuple[str, ...]:
    old, new = shown_apart(a["old_value"], a["new_value"], fmt_value)
    return (
        str(a["action_idx"]),
        f"{a['dt_s']:.3f}",
        a["spec_label"],
        old,
        new,
        "" if a["delta"] is None else f"{a['delta']:+.4g}",
        f"[{a['window_start_s']:.2f}, {a['window_end_s']:.2f}]",
    )


def print_actions(actions: list[dict[str, Any]], title: str) -> None:
    table = Table(title=title)
    for col, justify in _COLUMNS:
        table.add_column(col, justify=justify)
    for a in actions:
        table.add_row(*_cells(a))
    print_table(table)


class _Rows:
    """The cells of each action, as often as they are iterated."""

    def __init__(self, actions: Iterable[dict[str, Any]]) -> None:
        self.actions = actions

    def __iter__(self) -> Iterator[tuple[str, ...]]:
        return map(_cells, self.actions)


@actions_app.command("list")
def list_cmd(
    run: RunOption = None,
    db: DbOption = Path("trajmon.db"),
    spec: Annotated[str | None, typer.Option("--spec", help="Only this spec label.")] = None,
    since: Annotated[float | None, typer.Option("--since", help="Only dt_s >= S.")] = None,
    until: Annotated[float | None, typer.Option("--until", help="Only dt_s <= S.")] = None,
    limit: Annotated[
        int | None,
        typer.Option("--limit", min=1, max=INT64_MAX, help="The first N actions only."),
    ] = None,
    last: Annotated[
        int | None,
        typer.Option("--last", min=1, max=INT64_MAX, help="The latest N actions only."),
    ] = None,
    json_out: JsonOption = False,
) -> None:
    """List the actions of a run."""
    if limit is not None and last is not None:
        fail("--limit and --last cannot be combined: --limit keeps the first N, --last the latest")
    for option, value in (("--since", since), ("--until", until)):
        if value is not None and math.isnan(value):
            fail(f"{option} must be a number of seconds, got {value}")
    if since is not None and until is not None and since > until:  # swapped: an empty list
        # would read as "nothing was touched in between"
        first, then = shown_apart(since, until, lambda s: f"{s:g}")
        fail(f"--since {first} is after --until {then}: no time lies between them")
    with reading(db) as conn:
        ref = resolve_run(conn, run)
        actions = iter_actions(
            conn, ref, spec=spec, since=since, until=until, limit=limit, last=last
        )
        # Which actions are listed is fixed; the rest is read a chunk at a time, each in a
        # read of its own (iter_actions): a slow reader of the output (`| less`) would
        # otherwise hold the database's log at this snapshot, and it grows while a run records.
        conn.commit()
        if json_out:
            print_json({"run_name": ref.run_name, "actions": Streamed(actions)})
            return
        _print_list(actions, ref.run_name)


def _print_list(actions: Iterable[dict[str, Any]], run_name: str) -> None:
    """The action table; a long one row by row (:func:`print_long_table`), as rich would have
    drawn it: rich draws about 2 000 rows a second, and only then does anything appear."""

    def title(count: int) -> str:
        return f"actions of run {run_name!r} ({count})"

    first = list(itertools.islice(actions, LONG_LIST + 1))
    if len(first) <= LONG_LIST:
        print_actions(first, title(len(first)))
        return
    del first

    def note(count: int) -> None:  # said first: a night's 50 000 drew for 25 s with no word
        err_console.print(
            f"note: {count} actions; the table takes a while to draw (about 0.03 ms a row,"
            " 0.5 ms when a value is wider than the window): --last N, --spec,"
            " --since/--until narrow it",
            markup=False,
        )

    if not print_long_table(title, _COLUMNS, _Rows(actions), note):
        shown = list(actions)
        note(len(shown))
        print_actions(shown, title(len(shown)))


def _print_window(kind: str, groups: list[dict[str, Any]]) -> None:
    title = f"{kind} window"
    if not groups:  # asked for: printing nothing read as a window left out, or a flag ignored
        console.print(f"{title}: none, the run records no {kind} channels", markup=False)
    for g in groups:
        coverage = "complete" if g["complete"] else "INCOMPLETE"
        n = len(g["dt_s"])
        table = Table(title=f"{title} — group {g['group']!r}: {n} samples, {coverage}")
        table.add_column("sample_idx", justify="right")
        table.add_column("dt_s", justify="right")
        for c in g["channels"]:
            table.add_column(
                f"{c['label']} [{c['unit']}]" if c["unit"] else c["label"], justify="right"
            )
        columns = [[fmt_value(v) for v in col] for col in g["columns"].values()]
        for i, (idx, t) in enumerate(zip(g["sample_idx"], g["dt_s"], strict=True)):
            table.add_row(str(idx), f"{t:.3f}", *[col[i] for col in columns])
        print_table(table)
        if not g["complete"]:
            first, last = g["recorded_from_s"], g["recorded_to_s"]
            parts = []  # why: the window's own samples first (a resume's outage at an edge)
            if g["dt_s"]:
                parts.append(
                    f"samples in this window span {g['dt_s'][0]:.3f} .. {g['dt_s'][-1]:.3f} s"
                )
            elif first is not None:
                parts.append("no samples in this window")
            parts.append(
                "no samples recorded in this group"
                if first is None
                else f"recorded data spans {first:.3f} .. {last:.3f} s"
            )
            parts.append(f"gaps: {len(g['gaps'])}")
            console.print("  " + "; ".join(parts), markup=False)


def _as_rows(groups: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The documented JSON shape: each group's samples as ``rows`` (built only for JSON)."""
    cols = ("sample_idx", "dt_s", "columns")
    return [{**{k: v for k, v in g.items() if k not in cols}, "rows": rows_of(g)} for g in groups]


@actions_app.command("show")
def show_cmd(
    idx: Annotated[
        int, typer.Argument(min=0, max=INT64_MAX, help="Action index (see `actions list`).")
    ],
    run: RunOption = None,
    db: DbOption = Path("trajmon.db"),
    with_signal_window: Annotated[
        bool, typer.Option("--with-signal-window", help="Include the signal samples in the window.")
    ] = False,
    with_spec_window: Annotated[
        bool, typer.Option("--with-spec-window", help="Include the spec samples in the window.")
    ] = False,
    json_out: JsonOption = False,
) -> None:
    """Show one action, optionally with the samples in its window."""
    with reading(db) as conn:
        ref = resolve_run(conn, run)
        action = get_action(conn, ref, idx)
        start, end = action["window_start_s"], action["window_end_s"]
        signal = window_columns(conn, ref, "signal", start, end) if with_signal_window else None
        spec = window_columns(conn, ref, "spec", start, end) if with_spec_window else None
    if json_out:
        out: dict[str, Any] = {"run_name": ref.run_name, "action": action}
        if signal is not None:
            out["signal_window"] = _as_rows(signal)
        if spec is not None:
            out["spec_window"] = _as_rows(spec)
        print_json(out)
        return
    print_actions([action], f"action {idx} of run {ref.run_name!r}")
    if signal is not None:
        _print_window("signal", signal)
    if spec is not None:
        _print_window("spec", spec)


def _is_dir(path: Path) -> bool:
    """Whether ``path`` is a directory; a path that cannot even be looked at (a name too long)
    is not, and the save then says why in one line instead of this check in a traceback."""
    try:
        return path.is_dir()
    except OSError:
        return False


@actions_app.command("plot")
def plot_cmd(
    idx: Annotated[
        int, typer.Argument(min=0, max=INT64_MAX, help="Action index (see `actions list`).")
    ],
    file: Annotated[
        str,
        typer.Option(
            "--out",
            "-o",
            metavar="FILE",
            help="Image file (.png, .svg, .pdf; no extension: .png).",
        ),
    ],
    run: RunOption = None,
    db: DbOption = Path("trajmon.db"),
) -> None:
    """Plot the signals in an action's window, the action instant marked."""
    from matplotlib.backend_bases import FigureCanvasBase

    from ..plotting import MissingGlyphsWarning, plot_action_window

    out = Path(file)  # the text kept too: "plots/" is a directory, Path("plots/") is "plots"
    formats = FigureCanvasBase.get_supported_filetypes()
    if out.name.startswith(".") and out.name[1:].lower() in formats:
        # To Python ".png" is a stem without a suffix: it was written as ".png.png".
        example = out.with_name(f"action-{idx}{out.name}")
        fail(f"{out} is only an extension; give a file name, e.g. {example}")
    named_dir, is_dir = file.endswith(("/", os.sep)), _is_dir(out)
    if not out.suffix and not (named_dir or is_dir):  # what matplotlib would write; the name
        # printed must be the file's — and the check below see it. "x." has no suffix to
        # Python either: its dot is the one the extension goes after, not "x..png".
        out = out.with_name(f"{out.name.rstrip('.') or out.name}.png")
        is_dir = _is_dir(out)
    if named_dir or is_dir:
        what = f"{out} is" if is_dir else f"{file} names"
        fail(f"{what} a directory; give an image file, e.g. {out / f'action-{idx}.png'}")
    with reading(db) as conn:
        ref = resolve_run(conn, run)
        action = get_action(conn, ref, idx)
        start, end = action["window_start_s"], action["window_end_s"]
        signal = window_columns(conn, ref, "signal", start, end)
        unit = conn.execute(
            "SELECT unit FROM channels WHERE run_id = ? AND label = ?",
            (ref.run_id, action["spec_label"]),
        ).fetchone()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", MissingGlyphsWarning)
        try:
            plot_action_window(
                action, signal, out, run_name=ref.run_name, spec_unit=unit[0] if unit else ""
            )
        except ValueError as exc:  # an image format matplotlib does not know: a usage error
            fail(f"cannot write {out}: {exc}")
        except OSError as exc:  # unwritable path, full disk: a write error, as for export
            detail = exc.strerror if exc.strerror and exc.filename == str(out) else exc
            fail(f"cannot write {out}: {detail}", EXIT_FAILED)
        except RuntimeError as exc:  # a format whose tool is missing (.pgf needs LaTeX)
            fail(f"cannot write {out}: {exc}", EXIT_FAILED)
    for w in caught:  # a note, as the CLI's others, not a warning with a source line
        if issubclass(w.category, MissingGlyphsWarning):
            err_console.print(f"note: {w.message}", markup=False)
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno, source=w.source)
    console.print(f"wrote {out}", markup=False)
