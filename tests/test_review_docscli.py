"""docs/cli.md and docs/operations.md followed step by step: the run summaries the pages show are
what ``trajmon run`` prints for those figures, and what the pages say about ``config clear``,
``status --interval``, the demo's ``next:`` line and a rescued database is what the code does."""

from __future__ import annotations

import contextlib
import io
import json
import re
import shlex
import sqlite3
import sys
from contextlib import closing
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from trajmon.cli import app
from trajmon.cli.demo_cmd import _next_command
from trajmon.cli.run_cmd import print_summary
from trajmon.files import save_database_copy
from trajmon.staging import StagedConfig
from trajmon.summary import GroupSummary, RunSummary

DOCS = Path(__file__).resolve().parents[1] / "docs"

HEAD = re.compile(r"^run '(?P<name>.*)': (?P<status>\w+) after (?P<duration>[\d.]+) s$")
ROW = re.compile(
    r"^(?P<name>\S+) \((?P<kind>signal|spec)\) +(?P<interval>[\d.]+) s +(?P<samples>\d+)"
    r" +(?P<missed>\d+) +(?P<failed>\d+) +(?:(?P<read>[\d.]+) ms|no reads)$"
)
COUNTS = re.compile(
    r"^actions (?P<actions>\d+)  errors (?P<errors>\d+)  lost samples (?P<lost>\d+)"
)


def _blocks(page: str) -> list[list[str]]:
    text = (DOCS / page).read_text(encoding="utf-8")
    return [block.splitlines() for block in re.findall(r"^```[^\n]*\n(.*?)^```", text, re.S | re.M)]


def _section(page: str, heading: str) -> str:
    text = (DOCS / page).read_text(encoding="utf-8")
    return next(part for part in re.split(r"\n(?=## )", text) if part.startswith(heading))


def _shown_summaries(page: str) -> list[tuple[list[str], list[str]]]:
    """Each run summary a page shows, with the ``$ trajmon run`` command it follows: the lines
    from its head line — or, where the page elides the start with ``…``, from its counts line —
    to the next elision, blank line, command or the end of the block."""
    found = []
    for lines in _blocks(page):
        command: list[str] = []
        i = 0
        while i < len(lines):
            line = lines[i]
            if line.startswith("$ trajmon run"):
                command = shlex.split(line[2:], comments=True)
            if HEAD.match(line) or COUNTS.match(line):
                shown = []
                while i < len(lines) and lines[i] not in ("…", "") and lines[i][:2] != "$ ":
                    shown.append(lines[i])
                    i += 1
                found.append((command, shown))
                continue
            i += 1
    return found


def _option(command: list[str], name: str, default: str) -> str:
    return command[command.index(name) + 1] if name in command else default


def _printed(command: list[str], shown: list[str]) -> list[str]:
    """What ``trajmon run`` prints for the figures ``shown`` gives, from the same first line."""
    head = HEAD.match(shown[0])
    rows = [m for m in map(ROW.match, shown) if m]
    counts = next((m for m in map(COUNTS.match, shown) if m), None)
    base = next((line[len("database ") :] for line in shown if line.startswith("database ")), None)
    summary = RunSummary(
        run_name=head["name"] if head else _option(command, "--run-name", "?"),
        run_id=1,
        db=base or _option(command, "--db", "trajmon.db"),
        status=head["status"] if head else "completed",
        duration_s=float(head["duration"]) if head else 0.0,
        groups=[
            GroupSummary(
                name=m["name"],
                kind=m["kind"],
                interval_s=float(m["interval"]),
                samples=int(m["samples"]),
                samples_read=int(m["samples"]) if m["read"] else 0,
                missed_ticks=int(m["missed"]),
                failed_reads=int(m["failed"]),
                mean_read_s=float(m["read"]) / 1000 if m["read"] else 0.0,
            )
            for m in rows
        ],
        actions=int(counts["actions"]) if counts else 0,
        errors=int(counts["errors"]) if counts else 0,
        lost_samples=int(counts["lost"]) if counts else 0,
    )
    out = io.StringIO()
    # The console writes to whatever sys.stdout is; setting its file and then "restoring" it
    # pinned it to this test's captured stream, and later tests printed nowhere.
    with contextlib.redirect_stdout(out):
        print_summary(summary)
    printed = out.getvalue().splitlines()
    start = 0 if head else next(i for i, line in enumerate(printed) if COUNTS.match(line))
    return printed[start : start + len(shown)]


@pytest.mark.parametrize("page", ["cli.md", "operations.md", "simulators.md"])
def test_every_run_summary_the_docs_show_is_what_trajmon_prints(page: str) -> None:
    """The staged-configuration example showed a boxed table with ``kind``, ``missed ticks``
    and ``failed reads`` columns and ``database`` on the counts line, and the ``sim serve``
    example ``actions 9  errors 0  lost samples 0  database /tmp/lab.db``: a summary the run
    command has not printed since its groups are worded as ``status`` words them."""
    summaries = _shown_summaries(page)
    if page == "cli.md":
        assert len(summaries) >= 4, "the run, Ctrl-C, sim serve and station examples"
    for command, shown in summaries:
        assert shown == _printed(command, shown), f"{page}: {shown[0]!r}"


def test_config_clear_of_a_station_source_clears_what_the_page_says(tmp_path: Path) -> None:
    """Clearing a staged station also clears its channels file and the label selections; the
    page said only that the four source fields go."""
    staged = tmp_path / "config.json"
    staged.write_text(
        json.dumps(
            {
                "run_name": "kept",
                "source": "station",
                "station": str(tmp_path / "station.yaml"),
                "channels": str(tmp_path / "channels.yaml"),
                "signals": ["Drain Voltage"],
                "specs": ["Gate 1"],
            }
        ),
        encoding="utf-8",
    )
    result = CliRunner().invoke(
        app, ["config", "clear", "--field", "station", "--json", "--config-path", str(staged)]
    )
    assert result.exit_code == 0, result.output
    cleared = set(json.loads(result.stdout)["cleared"])
    assert cleared > {"source", "station"}  # the station's files went with it
    bullet = re.search(
        r"^- `clear` (.*?)\n\n", _section("cli.md", "## `trajmon config"), re.M | re.S
    )
    assert bullet
    named = set(re.findall(r"`(\w+)`", bullet.group(1))) & set(StagedConfig.model_fields)
    assert cleared <= named, f"cleared but not named: {sorted(cleared - named)}"
    assert json.loads(staged.read_text(encoding="utf-8")) == {"run_name": "kept"}


def test_the_status_page_gives_the_interval_range_the_option_takes() -> None:
    """``status --interval 0.01`` is a usage error (0.05 to 3600 s); the page gave only the
    default."""
    command = typer.main.get_command(app).commands["status"]  # type: ignore[attr-defined]
    interval = next(p for p in command.params if p.name == "interval")
    low, high = interval.min, interval.max
    section = _section("cli.md", "## `trajmon status`")
    assert f"`--interval` is {low:g} to {high:g} seconds" in " ".join(section.split())
    result = CliRunner().invoke(app, ["status", "--interval", str(low / 2)])
    assert result.exit_code == 2


def test_the_demo_page_shows_the_next_line_of_make_demo(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``make demo`` runs ``.venv/bin/trajmon``, and its ``next:`` line names that path (a bare
    ``trajmon`` is not on PATH there); the page showed only ``next: trajmon …``."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PATH", str(tmp_path))  # no trajmon on it
    monkeypatch.setattr(sys, "argv", [".venv/bin/trajmon", "demo"])
    line = _next_command("demo-1", Path("trajmon-demo.db"), [{"action_idx": 0}])
    assert line.startswith(".venv/bin/trajmon actions show 0 ")
    section = " ".join(_section("cli.md", "## `trajmon demo`").split())
    assert "(`next: .venv/bin/trajmon actions show 0 …`)" in section


def test_the_rescued_copy_is_named_as_the_operations_page_says(tmp_path: Path) -> None:
    """The page wrote the copy as ``….rescued-1.db``: read as ``trajmon.db.rescued-1.db`` (the
    name an operator first tried) it is not there; the copy of ``trajmon.db`` is
    ``trajmon.rescued-1.db``."""
    db = tmp_path / "trajmon.db"
    with closing(sqlite3.connect(db)) as conn:
        conn.execute("CREATE TABLE t (x)")
        conn.commit()
        first = save_database_copy(conn, db)
        second = save_database_copy(conn, db)
    row = next(
        line
        for line in (DOCS / "operations.md").read_text(encoding="utf-8").splitlines()
        if "deleted or replaced while recording" in line
    )
    assert f"`{first.name}` for `{db.name}`" in row
    assert f"`--db {first.name} --resume NAME`" in row
    assert second.name == first.name.replace("-1", "-2") and "then `-2`" in row
