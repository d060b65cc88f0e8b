"""The read side reviewed as an operator uses it: run names and values that look like rich's
emoji codes, and a 5 000-row window drawn as a table (measured once, not cell by cell, each
time rich lays the table out)."""

from __future__ import annotations

import io
import sqlite3
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from recordings import record_one_bias_change
from rich.console import Console
from rich.measure import Measurement
from rich.table import Table
from typer.testing import CliRunner

from trajmon.cli import app, common
from trajmon.queries import RunRef, connect_readonly, list_actions

runner = CliRunner()
RUN = "sweep:up:1 x:x:y"  # ":up:" and ":x:" are emoji codes rich would replace


@pytest.fixture(scope="module")
def coded_db(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A run named with text that rich reads as emoji codes; the bias turned once."""
    db = tmp_path_factory.mktemp("reads") / "runs.db"
    record_one_bias_change(db, RUN, seed=7, window_before_s=0.2, before=10, after=20)
    yield db


def invoke(*args: str) -> Any:
    return runner.invoke(app, list(args), catch_exceptions=False)


@pytest.mark.parametrize(
    "args",
    [("actions", "list"), ("actions", "show", "0", "--with-spec-window")],
)
def test_names_that_look_like_emoji_codes_are_printed_as_they_are(
    coded_db: Path, args: tuple[str, ...]
) -> None:
    """rich's console replaced emoji codes in every string it printed: the run 'sweep:up:1'
    was shown as 'sweep🆙1' (and a value 'x:x:y' as 'x❌y')."""
    result = invoke(*args, "--db", str(coded_db))
    assert result.exit_code == 0, result.stderr
    assert RUN in result.stdout
    assert "🆙" not in result.stdout and "❌" not in result.stdout


def _window_table(rows: int) -> Table:
    """What ``actions show --with-signal-window`` draws for ``rows`` samples, with a column of
    wide characters and one of values that need rich's own measurement."""
    table = Table(title="signal window")
    for name in ("sample_idx", "dt_s", "Z [m]", "mode", "note"):
        table.add_column(name, justify="right")
    for i in range(rows):
        table.add_row(
            str(i), f"{i * 0.001:.3f}", f"{1e-9 + i * 1e-15:.6g}", "中文" * (i % 3), "a\tb"
        )
    return table


def _reference(table: Table) -> str:
    """rich's own drawing of ``table`` at its natural width."""
    probe = Console(file=io.StringIO(), width=1_000_000, emoji=False, markup=False)
    width = Measurement.get(probe, probe.options, table).maximum
    out = io.StringIO()
    Console(
        file=out, width=width, highlight=False, soft_wrap=True, markup=False, emoji=False
    ).print(table)
    return out.getvalue()


@pytest.mark.parametrize("on_terminal", [False, True])
def test_a_long_window_table_is_measured_once_and_drawn_as_rich_draws_it(
    monkeypatch: pytest.MonkeyPatch, on_terminal: bool
) -> None:
    """Drawing a 5 000-row window took 3.9 s (0.66 s as JSON): rich measured every cell each
    time the table was measured — for its natural width, to fit the terminal, then again to
    print it. Plain cells are now measured by their characters once; the drawing is the same."""
    rows = 300
    want = _reference(_window_table(rows))
    out = io.StringIO()
    screen = Console(
        file=out,
        force_terminal=on_terminal,
        width=1000,
        color_system=None,
        highlight=False,
        soft_wrap=True,
        markup=False,
        emoji=False,
    )
    monkeypatch.setattr(common, "console", screen)
    calls = 0
    measure = Measurement.get

    def counted(*args: Any, **kwargs: Any) -> Measurement:
        nonlocal calls
        calls += 1
        return measure(*args, **kwargs)

    monkeypatch.setattr(Measurement, "get", counted)
    common.print_table(_window_table(rows))
    assert out.getvalue() == want
    # the "a\tb" column is measured by rich, once per cell; the other cells not at all
    assert calls < rows + 50, calls


def test_list_actions_refuses_a_run_name_and_a_fractional_limit_as_type_errors(
    tmp_path: Path,
) -> None:
    """A run name where the RunRef goes failed with an AttributeError deep inside, and
    ``limit=2.5`` with SQLite's "datatype mismatch", neither naming the argument."""
    from trajmon.schema import migrate

    db = tmp_path / "empty.db"
    with closing(sqlite3.connect(db)) as conn:
        migrate(conn)
    with closing(connect_readonly(db)) as conn:
        with pytest.raises(TypeError, match=r"run must be a RunRef \(resolve_run"):
            list_actions(conn, "run")  # type: ignore[arg-type]
        ref = RunRef(1, "run")
        for bad in ({"limit": 2.5}, {"last": "3"}, {"limit": True}):
            with pytest.raises(TypeError, match="must be a whole number"):
                list_actions(conn, ref, **bad)  # type: ignore[arg-type]


def test_a_missing_database_names_the_ones_beside_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``trajmon runs`` right after ``make demo`` said only "database not found: trajmon.db";
    the one database there was trajmon-demo.db."""
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["runs"])
    assert result.exit_code == 2
    assert result.output.strip() == "trajmon: error: database not found: trajmon.db"
    (tmp_path / "trajmon-demo.db").touch()
    result = CliRunner().invoke(app, ["runs"])
    assert result.exit_code == 2
    assert result.output.strip() == (
        "trajmon: error: database not found: trajmon.db (databases in .: trajmon-demo.db)"
    )
