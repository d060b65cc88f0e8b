"""The read-side CLI as an operator meets it: narrow terminals, dumb terminals, pipes, hints."""

from __future__ import annotations

import io
import json
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from recordings import record_one_bias_change
from rich.console import Console
from rich.table import Table
from typer.testing import CliRunner

from trajmon.cli import app, common, runs_cmd
from trajmon.cli.common import fmt_value

runner = CliRunner()
RUN = "turned once"
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


@pytest.fixture(scope="module")
def turned_db(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A run (every default channel) in which the operator changed the bias once."""
    db = tmp_path_factory.mktemp("edges") / "runs.db"
    record_one_bias_change(db, RUN, seed=5, window_before_s=0.2, before=15, after=30)
    yield db


def invoke(*args: str) -> Any:
    return runner.invoke(app, list(args), catch_exceptions=False)


def terminal(width: int) -> tuple[Console, io.StringIO]:
    """What ``console`` is on an interactive terminal of ``width`` columns."""
    out = io.StringIO()
    screen = Console(
        file=out,
        force_terminal=True,
        width=width,
        color_system=None,
        highlight=False,
        soft_wrap=True,
        markup=False,
    )
    return screen, out


def test_a_window_wider_than_an_80_column_terminal_keeps_every_value_whole(
    turned_db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """rich squeezed the ten-spec window into 80 columns by cutting values: ``1e-…``,
    ``0.0…``, ``Tr…`` — the samples the command is for, unreadable on a standard terminal."""
    doc = json.loads(
        invoke(
            "actions", "show", "0", "--db", str(turned_db), "--with-spec-window", "--json"
        ).stdout
    )
    (window,) = doc["spec_window"]
    screen, out = terminal(80)
    monkeypatch.setattr(common, "console", screen)
    assert (
        invoke("actions", "show", "0", "--db", str(turned_db), "--with-spec-window").exit_code == 0
    )
    text = out.getvalue()
    assert "…" not in text
    rows = [
        [cell.strip() for cell in line.strip("│").split("│")]
        for line in text.splitlines()
        if line.startswith("│")
    ]
    labels = [c["label"] for c in window["channels"]]
    for row in window["rows"]:
        expected = [str(row["sample_idx"]), f"{row['dt_s']:.3f}"]
        expected += [fmt_value(row["values"][label]) for label in labels]
        assert expected in rows
    assert max(len(line) for line in text.splitlines()) <= 80


@pytest.mark.parametrize("width", [60, 30])
def test_a_table_on_a_terminal_too_narrow_for_its_values_loses_none(
    turned_db: Path, monkeypatch: pytest.MonkeyPatch, width: int
) -> None:
    """On 60 columns `runs` cut its start times and names ("2026-1…"), on 30 every cell was
    "…". Now values fold (60), or, with fewer columns on the screen than the table has
    columns, the table comes at its full width for the terminal to wrap (30)."""
    listed = json.loads(invoke("runs", "--db", str(turned_db), "--json").stdout)["runs"][0]
    screen, out = terminal(width)
    monkeypatch.setattr(common, "console", screen)
    assert invoke("runs", "--db", str(turned_db)).exit_code == 0
    text = out.getvalue()
    assert "…" not in text
    if width == 60:  # the title (the database's path, as long as it is) is the terminal's
        title, *table = text.splitlines()
        assert title.startswith("runs in ") and max(map(len, table)) <= width, text
    else:
        assert listed["run_name"] in text and listed["run_start_utc"][:19].replace("T", " ") in text
    # the short values stay whole
    tokens = text.split()
    for key in ("signal_samples", "spec_samples", "actions", "errors", "lost_samples"):
        assert str(listed[key]) in tokens
    assert {"turned", "once"} <= set(tokens)  # the name, wrapped between its words


def test_a_table_in_a_pipe_is_printed_whole_however_wide(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """In a pipe a table was measured against at most 1000 columns and squeezed into them:
    past that (a station's sixty channels side by side, a long text value) cells ended in "…"."""
    monkeypatch.setattr(common, "console", Console(highlight=False, soft_wrap=True, markup=False))
    table = Table(title="wide")
    for name in ("a", "b", "c"):
        table.add_column(name)
    table.add_row("x" * 600, "y" * 600, "the end")
    common.print_table(table)
    out = capsys.readouterr().out
    assert "x" * 600 in out and "y" * 600 in out and "the end" in out and "…" not in out


def test_watch_on_a_terminal_leaves_the_final_state_whole(
    turned_db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The redrawn view cropped each line at the window's edge, and left the final state so:
    "lost samples 0  ses" on an 80-column terminal."""
    screen, out = terminal(80)
    monkeypatch.setattr(runs_cmd, "console", screen)
    monkeypatch.setattr(common, "console", screen)
    assert invoke("status", "--db", str(turned_db), "--watch").exit_code == 0
    text = ANSI.sub("", out.getvalue())
    assert " ".join(text.split()).count("lost samples 0 sessions 1") >= 1
    assert screen.soft_wrap  # as it was


def test_watch_on_a_dumb_terminal_prints_a_line_per_refresh(
    turned_db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On TERM=dumb (an editor's shell, a serial console) rich's Live draws nothing until it
    stops: a whole run watched showed nothing until it ended."""
    monkeypatch.setenv("TERM", "dumb")
    screen, out = terminal(200)
    assert screen.is_dumb_terminal
    monkeypatch.setattr(runs_cmd, "console", screen)
    monkeypatch.setattr(common, "console", screen)
    real = runs_cmd._read_status
    reads = iter(range(3))

    def read(db: Path, run: str | None) -> dict[str, Any]:
        doc = real(db, run)
        if next(reads, None) is not None:  # the first three reads: still recording
            doc = {**doc, "status": "running", "running": True}
        return doc

    monkeypatch.setattr(runs_cmd, "_read_status", read)
    result = invoke("status", "--db", str(turned_db), "--watch", "--interval", "0.05")
    assert result.exit_code == 0
    lines = out.getvalue().splitlines()
    assert sum(line.startswith(f"{RUN}: running t=") for line in lines) == 3
    assert any("interrupted" in line for line in lines)


def test_plot_to_a_name_whose_image_path_is_a_directory_is_exit_2(
    turned_db: Path, tmp_path: Path
) -> None:
    """``-o plot`` writes ``plot.png``; when that is a directory the command failed only at the
    rename, as a write error (exit 1), instead of the documented refusal (exit 2)."""
    (tmp_path / "plot.png").mkdir()
    result = invoke("actions", "plot", "0", "--db", str(turned_db), "-o", str(tmp_path / "plot"))
    assert result.exit_code == 2
    assert "plot.png is a directory" in result.stderr
    assert os.listdir(tmp_path / "plot.png") == [] and sorted(os.listdir(tmp_path)) == ["plot.png"]


def test_the_demos_next_command_can_be_pasted_as_printed(tmp_path: Path) -> None:
    """The hint was ``--db my lab.db`` unquoted, and ``actions show 0`` even when the run saw
    no action (a short --duration): pasted, it failed either way."""
    db = tmp_path / "my lab.db"
    result = invoke("demo", "--duration", "1", "--db", str(db))
    assert result.exit_code == 0
    (hint,) = [line for line in result.stdout.splitlines() if line.startswith("next: ")]
    argv = shlex.split(hint.removeprefix("next: "))
    assert argv[0] == "trajmon" and argv[argv.index("--db") + 1] == str(db)
    pasted = invoke(*argv[1:])
    assert pasted.exit_code == 0, pasted.stderr


def test_output_cut_off_by_its_reader_is_quiet(turned_db: Path) -> None:
    """``trajmon … | head``: the reader gone, the command stops with exit code 1 and no
    traceback (Python's 'BrokenPipeError' or 'Exception ignored' lines)."""
    for args in (
        ["runs"],
        ["status", "--json"],
        ["actions", "show", "0", "--with-signal-window", "--with-spec-window"],
    ):
        read, write = os.pipe()
        os.close(read)
        try:
            done = subprocess.run(
                [sys.executable, "-m", "trajmon", *args, "--db", str(turned_db)],
                stdout=write,
                stderr=subprocess.PIPE,
                text=True,
                timeout=60,
                check=False,
            )
        finally:
            os.close(write)
        assert (done.returncode, done.stderr) == (1, ""), args
