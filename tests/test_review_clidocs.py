"""docs/cli.md against the real command line: every option a command has is named in its
section, the demo's scenario counts are the bundled scenario's, and the ``--json`` keys the page
lists for ``runs`` and ``status`` are exactly those printed."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import click
import typer
from recordings import record_every_tick
from typer.testing import CliRunner

from simulators.operator import default_scenario_path, load_scenario
from simulators.qcodes_sim import SimulatedSTM
from trajmon import MonitorConfig
from trajmon.cli import app

PAGE = Path(__file__).resolve().parents[1] / "docs" / "cli.md"


def _sections() -> dict[str, str]:
    """The page's ``## `` sections by heading line."""
    text = PAGE.read_text(encoding="utf-8")
    return {part.split("\n", 1)[0]: part for part in re.split(r"\n(?=## )", text)}


def _commands(command: click.Command, path: tuple[str, ...] = ()) -> list[tuple[str, Any]]:
    """Every leaf command with its full name (``trajmon actions plot``)."""
    subcommands = getattr(command, "commands", None)
    if subcommands is None:
        return [(" ".join(("trajmon", *path)), command)]
    found: list[tuple[str, Any]] = []
    for name, sub in subcommands.items():
        found += _commands(sub, (*path, name))
    return found


def test_every_option_of_every_command_is_named_in_its_section() -> None:
    """``actions plot`` takes ``-o/--out``; its section named only ``-o``, so a reader who met
    ``--out`` in ``--help`` (or wrote it, as for ``export``) found it nowhere on the page."""
    sections = _sections()
    missing: dict[str, list[str]] = {}
    for name, command in _commands(typer.main.get_command(app)):
        group = name.rsplit(" ", 1)[0]
        text = "\n".join(
            body
            for heading, body in sections.items()
            if f"`{name}`" in heading or f"`{group} show|set|clear`" in heading
        )
        assert text, f"docs/cli.md has no section for {name}"
        names = [o for p in command.params for o in (*p.opts, *p.secondary_opts)]
        absent = [o for o in names if o.startswith("-") and o != "--help" and o not in text]
        if absent:
            missing[name] = absent
    assert missing == {}


def test_the_demo_section_gives_the_default_scenarios_counts() -> None:
    """The demo's score line says ``27/27 changes found`` while the page said the scenario makes
    24 changes: the score counts spec changes, and two setting changes set several
    ``Scan Frame`` fields at once."""
    section = next(b for h, b in _sections().items() if "`trajmon demo`" in h)
    flat = " ".join(section.split())
    settings = re.search(r"(\d+) setting changes", flat)
    specs = re.search(r"(\d+) spec changes", flat)
    assert settings and specs, "the demo section gives both counts"
    scenario = load_scenario(default_scenario_path())
    spec_changes = sum(len(c.value) if isinstance(c.value, dict) else 1 for c in scenario.changes)
    assert (int(settings.group(1)), int(specs.group(1))) == (len(scenario.changes), spec_changes)
    assert f"{spec_changes}/{spec_changes} changes found" in flat


def test_runs_and_status_json_print_the_documented_keys(tmp_path: Path) -> None:
    db = tmp_path / "keys.db"
    config = MonitorConfig(run_name="keys", db=db, interval_s=0.1, duration_s=0.3)
    stm = SimulatedSTM("stm", seed=0)
    try:
        record_every_tick(config, {"stm": stm})
    finally:
        stm.close()
    runner = CliRunner()
    runs = json.loads(runner.invoke(app, ["runs", "--db", str(db), "--json"]).stdout)
    status = json.loads(runner.invoke(app, ["status", "--db", str(db), "--json"]).stdout)

    sections = _sections()
    flat = " ".join(sections["## `trajmon runs`"].split())
    shown = re.search(r"`--json` prints `(.*?)`", flat)
    assert shown
    assert set(runs) == set(re.findall(r'"(\w+)":', shown.group(1)))
    row = re.search(r"\[\{(.*?)\}", shown.group(1))
    assert row
    assert set(runs["runs"][0]) == set(re.findall(r'"(\w+)"', row.group(1)))
    status_doc = sections["## `trajmon status`"]
    table = status_doc.split("### The `status --json` document", 1)[1]
    fields = {
        key
        for cell in re.findall(r"^\| ((?:`\w+`(?:, )?)+) \|", table, re.M)
        for key in re.findall(r"`(\w+)`", cell)
    }
    assert set(status) == fields
    groups = re.search(r"Each `groups\[\]` object: (.*?)\n\n", table, re.S)
    assert groups
    named = set(re.findall(r"`(\w+)`", groups.group(1))) - {"signal", "spec", "dt_s"}  # values
    assert set(status["groups"][0]) == named
    # A run that ended has no queue: its pending_samples is 0, not the null of "not known yet".
    assert status["pending_samples"] == 0
    row = re.search(r"^\| `pending_samples` \|.*$", table, re.M)
    assert row
    assert "0 otherwise" in row.group(0)
