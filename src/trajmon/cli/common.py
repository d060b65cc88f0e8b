"""What every command shares: exit codes, one-line errors, JSON output, the --db option."""

from __future__ import annotations

import json
import math
import sqlite3
import sys
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Annotated, Any, NoReturn

import numpy as np
import typer
from pydantic import ValidationError
from rich.console import Console, RenderableType
from rich.measure import Measurement

from ..config import ConfigError, format_validation_error
from ..queries import QueryError, connect_readonly
from ..runstore import RunExistsError
from ..schema import SchemaError

__all__ = [
    "EXIT_FAILED",
    "EXIT_SIGINT",
    "EXIT_SIGTERM",
    "EXIT_USAGE",
    "DbOption",
    "JsonOption",
    "console",
    "err_console",
    "fail",
    "print_json",
    "print_table",
    "reading",
    "user_errors",
]

EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_SIGINT = 130
EXIT_SIGTERM = 143

# No markup: every string these print is data — run names, labels, units, values, paths — and
# rich would read "[m]" in "Z [m]" as a style (dropping it) and fail on a stray "[/x]". Styling
# is done with Text objects instead.
console = Console(highlight=False, soft_wrap=True, markup=False)
err_console = Console(stderr=True, highlight=False, soft_wrap=True, markup=False)

DbOption = Annotated[Path, typer.Option("--db", help="SQLite database file.")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]


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


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # "nan", "inf", "-inf": strict JSON has no such numbers
    if isinstance(value, np.ndarray):
        return [_jsonable(v) for v in value.tolist()]
    if isinstance(value, np.generic):
        return _jsonable(value.item())
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, str | int | float):
        return value
    return str(value)  # a complex, a Path, an object an untyped channel held: its text


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(_jsonable(data), indent=2, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def fmt_value(value: Any, fmt: Callable[[float], str] = lambda v: f"{v:.6g}") -> str:
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, float):
        return fmt(value)
    if isinstance(value, np.ndarray):
        return np.array2string(value, precision=4, threshold=8)
    return str(value)


def print_table(renderable: RenderableType) -> None:
    """On a terminal rich fits the table to the window; in a pipe or a log there is no window,
    so print at the table's natural width rather than squeezing it into 80 columns."""
    if console.is_terminal:
        console.print(renderable)
        return
    width = Measurement.get(console, console.options.update(max_width=1000), renderable).maximum
    Console(highlight=False, soft_wrap=True, markup=False, width=max(width, console.width)).print(
        renderable
    )
