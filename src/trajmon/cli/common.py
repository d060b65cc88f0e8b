"""What every command shares: exit codes, one-line errors, JSON output, the --db option."""

from __future__ import annotations

import shlex
import shutil
import sqlite3
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Annotated, Any, NoReturn

import numpy as np
import typer
from pydantic import ValidationError
from rich import box
from rich.cells import cell_len
from rich.console import Console, ConsoleOptions, Group, JustifyMethod, RenderableType
from rich.measure import Measurement
from rich.table import Table

from ..config import ConfigError, format_validation_error
from ..queries import QueryError, connect_readonly
from ..runstore import RunExistsError
from ..schema import SchemaError
from .jsonout import Streamed, print_json

__all__ = [
    "EXIT_FAILED",
    "EXIT_SIGINT",
    "EXIT_SIGTERM",
    "EXIT_USAGE",
    "STATUS_STYLE",
    "DbOption",
    "JsonOption",
    "Streamed",
    "console",
    "err_console",
    "fail",
    "fit_to_width",
    "print_json",
    "print_long_table",
    "print_table",
    "program_name",
    "reading",
    "user_errors",
]

EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_SIGINT = 130
EXIT_SIGTERM = 143

# No markup: every string these print is data — run names, labels, units, values, paths — and
# rich would read "[m]" in "Z [m]" as a style (dropping it) and fail on a stray "[/x]". Styling
# is done with Text objects instead. No emoji codes either: rich would print run "sweep:up:1"
# as "sweep🆙1" and a value "x:x:y" as "x❌y".
console = Console(highlight=False, soft_wrap=True, markup=False, emoji=False)
err_console = Console(stderr=True, highlight=False, soft_wrap=True, markup=False, emoji=False)

DbOption = Annotated[Path, typer.Option("--db", help="SQLite database file.")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]


#: How a run's status is coloured wherever it is shown (runs, status, a run's summary).
STATUS_STYLE = {
    "running": "green",
    "completed": "cyan",
    "interrupted": "yellow",
    "failed": "bold red",
    "crashed": "bold red",
}


def fail(message: str, code: int = EXIT_USAGE) -> NoReturn:
    """One line on stderr, a non-zero exit: what an operator (or a script) can act on. A message
    carried over from a library may span lines; they are joined, so a log keeps it whole."""
    line = " ".join(part.strip() for part in message.splitlines() if part.strip())
    err_console.print(f"trajmon: error: {line}", markup=False)
    raise typer.Exit(code)


@contextmanager
def user_errors() -> Iterator[None]:
    """Map the errors a user can cause to one line and exit code 2."""
    try:
        yield
    except ValidationError as exc:
        fail(format_validation_error(exc))
    except (ConfigError, QueryError, RunExistsError, SchemaError) as exc:
        fail(str(exc))


@contextmanager
def reading(db: Path) -> Iterator[sqlite3.Connection]:
    """The read-only connection of a query command, its errors as one line and exit code 2
    (missing, foreign, newer or damaged database; unknown run or action).

    All of the command's queries run in one read transaction: one consistent snapshot of a run
    that is recording (its counters, samples and segments as of one commit), and with WAL a
    snapshot makes no writer wait."""
    with user_errors():
        try:
            with closing(connect_readonly(db)) as conn:
                conn.execute("BEGIN")
                yield conn
        except sqlite3.DatabaseError as exc:  # a damaged file shows only when its pages are read
            fail(f"cannot read {db}: {exc}")


def fmt_value(value: Any, fmt: Callable[[float], str] = lambda v: f"{v:.6g}") -> str:
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, float):
        return fmt(value)
    if isinstance(value, np.ndarray):
        return np.array2string(value, precision=4, threshold=8)
    return str(value)


#: Wider than any table's natural width: measured against this, a table asks for all it needs.
_UNBOUNDED = 1_000_000


def _natural_width(target: Console, renderable: RenderableType) -> int:
    """The width at which every cell of ``renderable`` fits on one line."""
    options = target.options.update(max_width=_UNBOUNDED)
    return Measurement.get(target, options, renderable).maximum


def _cell_width(target: Console, options: ConsoleOptions, cell: RenderableType) -> int:
    """A cell's width on one line. Printable text without ":" (which an emoji code needs) is
    one line of its characters' widths, as rich measures it, at a fraction of the cost: a
    5 000-row window has 20 000 such cells, and rich measuring each took a second."""
    if isinstance(cell, str) and cell.isprintable() and ":" not in cell:
        return cell_len(cell)
    return Measurement.get(target, options, cell).maximum


def _pin_widths(table: Table, target: Console) -> list[tuple[int, int]]:
    """Fix each column of ``table`` that has no width of its own at its natural width (its
    widest value, header included), measuring each cell once; returns each column's widest
    value and natural width.

    rich measures every cell of a table each time the table is measured and again when it is
    printed; with the widths fixed, both only add them up (a 5 000-row window: 3.8 s -> 1 s)."""
    options = target.options.update(max_width=_UNBOUNDED)

    def widest(cells: Iterable[RenderableType]) -> int:
        return max((_cell_width(target, options, c) for c in cells), default=1)

    out = []
    for column in table.columns:
        value = max(widest(column.cells), 1)
        ends = [column.header] * table.show_header + [column.footer] * table.show_footer
        full = max(value, widest(ends))
        if column.width is None and column.min_width is None and column.max_width is None:
            column.width = full
        out.append((value, full))
    return out


def _pin_tables(renderable: RenderableType, target: Console) -> None:
    """:func:`_pin_widths` for each table in ``renderable``."""
    if isinstance(renderable, Group):
        for part in renderable.renderables:
            _pin_tables(part, target)
    elif isinstance(renderable, Table):
        _pin_widths(renderable, target)


def fit_to_width(renderable: RenderableType, target: Console) -> bool:
    """Make the tables in ``renderable`` fit ``target``'s width keeping every character of every
    cell; False when they cannot (fewer columns on the screen than the table has columns).

    rich would squeeze a table's widest columns and end each cell that no longer fits in "…"
    (``1e-…``, or ``178…`` for 17894: data lost, or misread, on an 80-column terminal). Here
    the headers wrap first, each column keeping the width of its widest value; when even the
    values cannot fit side by side, the narrow ones stay whole and the widest fold onto more
    lines — with a rule between rows, so that the rest of a folded value is not taken for the
    next row's."""
    if isinstance(renderable, Group):
        return all([fit_to_width(part, target) for part in renderable.renderables])
    if not isinstance(renderable, Table):
        return True
    table = renderable
    columns = table.columns
    given = [c.width for c in columns]
    measured = _pin_widths(table, target)
    values, full = [v for v, _ in measured], [f for _, f in measured]
    if _natural_width(target, table) <= target.width:
        return True
    if table.box is None:  # a rule to tell rows apart, should values fold
        table.box, table.show_edge = box.SIMPLE_HEAD, False
    room = target.width - (_natural_width(target, table) - sum(full))  # for the contents
    if room < len(columns):
        for column, width in zip(columns, given, strict=True):
            column.width = width  # as it was: rich squeezes it as it would have
        return False
    widths = _share(room, values)
    spare = room - sum(widths)
    while spare > 0:  # then a character more, in turn, for each header that still wraps
        short = [i for i, most in enumerate(full) if widths[i] < most][:spare]
        if not short:
            break
        for i in short:
            widths[i] += 1
        spare -= len(short)
    for column, width in zip(columns, widths, strict=True):
        column.width = width
        column.overflow = "fold"
        column.no_wrap = False
    table.show_lines = any(w < v for w, v in zip(widths, values, strict=True))
    return True


def _share(room: int, wanted: list[int]) -> list[int]:
    """``room`` characters for columns that want ``wanted``: the narrowest get all they want,
    what is left is shared evenly by the rest (at least one character each)."""
    widths = [0] * len(wanted)
    pending = sorted(range(len(wanted)), key=wanted.__getitem__)
    while pending:
        share = room // len(pending)
        if wanted[pending[0]] > share:
            for n, i in enumerate(pending):
                widths[i] = max(1, share + (1 if n < room % len(pending) else 0))
            break
        i = pending.pop(0)
        widths[i] = wanted[i]
        room -= wanted[i]
    return widths


def print_table(renderable: RenderableType) -> None:
    """On a terminal, fitted to the window without cutting a cell (:func:`fit_to_width`); in a
    pipe or a log there is no window — nor on a terminal too narrow for the table's columns —
    so at the table's natural width, however wide (squeezed into any fixed width, a cell would
    end in "…")."""
    if console.is_terminal and fit_to_width(renderable, console):
        console.print(renderable)
        return
    _pin_tables(renderable, console)
    _unbounded(max(_natural_width(console, renderable), console.width)).print(renderable)


def _unbounded(width: int) -> Console:
    """:data:`console`, set as wide as a table is where no window bounds it (a pipe, a log)."""
    return Console(
        file=console.file, highlight=False, soft_wrap=True, markup=False, emoji=False, width=width
    )


def _width(cell: str) -> int:
    """The columns printable ``cell`` takes: rich's measure, which it caches (a cache that
    grows with a long table's distinct cells), only for text that is not ASCII."""
    return len(cell) if cell.isascii() else cell_len(cell)


def print_long_table(
    title: Callable[[int], str],
    columns: Sequence[tuple[str, JustifyMethod]],
    rows: Iterable[Sequence[str]],
    noted: Callable[[int], None],
) -> bool:
    """``rows`` (an iterable read twice: to measure, then to write) as :func:`print_table`
    prints a ``Table(title=title(count))`` of these columns — the same characters — but each
    row written as it comes: rich lays out a whole table at about 0.5 ms a row, and holds it.
    ``noted(count)`` is called between the two readings. False, having written nothing, when
    a cell is not one plain line or, on a terminal, the table is wider than the window (rich
    folds such cells: :func:`fit_to_width`)."""
    widths = [cell_len(name) for name, _ in columns]
    count = 0
    for row in rows:
        count += 1
        for i, cell in enumerate(row):
            if not cell.isprintable():
                return False
            widths[i] = max(widths[i], _width(cell))
    natural = sum(widths) + 3 * len(widths) + 1
    if console.is_terminal and natural > console.width:
        return False
    noted(count)
    table = Table(title=title(count))
    for (name, justify), width in zip(columns, widths, strict=True):
        table.add_column(name, justify=justify, width=width)
    target = console if console.is_terminal else _unbounded(max(natural, console.width))
    with target.capture() as captured:
        target.print(table)  # the title and the header, then the line under no rows
    *head, bottom = captured.get().splitlines(keepends=True)
    write = target.file.write
    write("".join(head))
    for row in rows:
        cells = [
            cell.rjust(width + len(cell) - _width(cell))
            if justify == "right"
            else cell.ljust(width + len(cell) - _width(cell))
            for cell, (_, justify), width in zip(row, columns, widths, strict=True)
        ]
        write("│ " + " │ ".join(cells) + " │\n")
    write(bottom)
    target.file.flush()
    return True


def program_name() -> str:
    """trajmon as this shell can run it: `make demo` runs .venv/bin/trajmon, which is not on
    PATH until the venv is activated, and a bare `trajmon` there is 'command not found'."""
    argv0 = sys.argv[0]
    if Path(argv0).name != "trajmon":  # python -m trajmon, or a test calling main()
        return "trajmon"
    on_path = shutil.which("trajmon")
    if on_path is not None and Path(on_path).resolve() == Path(argv0).resolve():
        return "trajmon"
    return shlex.quote(argv0)
