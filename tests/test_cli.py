"""The command line as an operator uses it: real subprocesses for recording, typer's runner
for queries."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from trajmon.cli import app
from trajmon.cli.common import fail

TRAJMON = [sys.executable, "-m", "trajmon"]
runner = CliRunner()


def trajmon(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    (done,) = trajmon_together(args, timeout=timeout)
    return done


def trajmon_together(
    *commands: tuple[str, ...], timeout: float = 60
) -> list[subprocess.CompletedProcess[str]]:
    """Run several ``trajmon`` commands as concurrent processes; their results, in order.

    For independent commands (reads of one finished recording): each process spends most of
    its ~0.7 s importing, so run side by side they take about half as long on two cores."""
    env = {**os.environ, "COLUMNS": "200"}
    procs = [
        subprocess.Popen(
            [*TRAJMON, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
        )
        for args in commands
    ]
    done = []
    try:
        for args, proc in zip(commands, procs, strict=True):
            out, err = proc.communicate(timeout=timeout)
            done.append(subprocess.CompletedProcess([*TRAJMON, *args], proc.returncode, out, err))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    return done


def invoke(*args: str) -> Any:
    return runner.invoke(app, list(args), catch_exceptions=False)


#: Seconds of the demo recording the query tests read: the default scenario's first four
#: changes (1.5 s to 3.6 s, five spec values) fall inside it.
DEMO_S = 4.0


@pytest.fixture(scope="module")
def demo_db(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    db = tmp_path_factory.mktemp("demo") / "demo.db"
    proc = trajmon("demo", "--duration", str(DEMO_S), "--db", str(db), "--json")
    assert proc.returncode == 0, proc.stderr
    return db, json.loads(proc.stdout)


def test_demo_json_reports_a_perfect_score(demo_db: tuple[Path, dict[str, Any]]) -> None:
    _, out = demo_db
    assert out["status"] == "completed"
    for key in ("run_name", "db", "signal_samples", "spec_samples", "missed_ticks", "errors"):
        assert key in out
    assert out["signal_samples"] + out["missed_ticks"] >= 40, "DEMO_S at the 0.1 s interval"
    assert out["truth_actions"] >= 3, "the default scenario changes specs from 1.5 s on"
    assert out["actions"] >= out["truth_actions"]
    assert out["precision"] == 1.0 and out["recall"] == 1.0
    assert out["errors"] == 0


def test_actions_list_and_show_with_window(demo_db: tuple[Path, dict[str, Any]]) -> None:
    db, out = demo_db
    listed = invoke("actions", "list", "--db", str(db), "--json")
    assert listed.exit_code == 0
    actions = json.loads(listed.stdout)["actions"]
    assert len(actions) == out["actions"]
    first = actions[0]
    shown = invoke(
        "actions",
        "show",
        str(first["action_idx"]),
        "--db",
        str(db),
        "--json",
        "--with-signal-window",
        "--with-spec-window",
    )
    assert shown.exit_code == 0
    data = json.loads(shown.stdout)
    assert data["action"]["spec_label"] == first["spec_label"]
    (signals,) = data["signal_window"]
    assert signals["rows"], "the window has signal samples"
    assert all(
        first["window_start_s"] <= r["dt_s"] <= first["window_end_s"] for r in signals["rows"]
    )
    assert {c["label"] for c in signals["channels"]} == {"Z Position", "Tunnel Current"}
    assert isinstance(signals["complete"], bool)
    assert data["spec_window"][0]["rows"]
    table = invoke("actions", "show", "0", "--db", str(db), "--with-signal-window")
    assert table.exit_code == 0 and "Tunnel Current" in table.stdout


def test_actions_list_filters(demo_db: tuple[Path, dict[str, Any]]) -> None:
    db, _ = demo_db
    everything = json.loads(invoke("actions", "list", "--db", str(db), "--json").stdout)
    some = json.loads(
        invoke("actions", "list", "--db", str(db), "--json", "--limit", "2", "--since", "2").stdout
    )
    assert len(some["actions"]) <= 2
    assert all(a["dt_s"] >= 2 for a in some["actions"])
    label = everything["actions"][0]["spec_label"]
    only = json.loads(invoke("actions", "list", "--db", str(db), "--json", "--spec", label).stdout)
    assert only["actions"] and all(a["spec_label"] == label for a in only["actions"])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("actions", "list", "--run", "nope"), "unknown run 'nope'"),
        (("actions", "show", "9999"), "has no action 9999"),
    ],
)
def test_query_errors_are_one_line_exit_2(
    demo_db: tuple[Path, dict[str, Any]], args: tuple[str, ...], message: str
) -> None:
    db, _ = demo_db
    result = invoke(*args, "--db", str(db))
    assert result.exit_code == 2
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_missing_database_is_exit_2(tmp_path: Path) -> None:
    result = invoke("actions", "list", "--db", str(tmp_path / "none.db"))
    assert result.exit_code == 2
    assert "database not found" in result.stderr
    assert not (tmp_path / "none.db").exists()


def test_run_sim_then_duplicate_name_is_refused(tmp_path: Path) -> None:
    db = tmp_path / "runs.db"
    first = trajmon(
        "run", "--run-name", "r1", "--sim", "--duration", "0.5", "--db", str(db), "--json"
    )
    assert first.returncode == 0, first.stderr
    summary = json.loads(first.stdout)
    assert summary["status"] == "completed"
    assert summary["lost_samples"] == 0
    assert summary["signal_samples"] > 0
    before = db.read_bytes()
    again = trajmon("run", "--run-name", "r1", "--sim", "--duration", "1", "--db", str(db))
    assert again.returncode == 2
    assert "already used" in again.stderr
    assert len(again.stderr.strip().splitlines()) == 1
    assert db.read_bytes() == before


def test_names_and_units_print_as_they_are(tmp_path: Path) -> None:
    """Brackets in data are not markup: a run named like a closing tag used to crash the run's
    summary (the data was recorded, the exit was a traceback), and "Z Position [m]" lost its
    unit in the window table."""
    db = tmp_path / "names.db"
    name = "[/x] [bold]"
    run = trajmon("run", "--run-name", name, "--sim", "--duration", "2.5", "--db", str(db))
    assert run.returncode == 0, run.stderr
    assert f"run {name!r}: completed" in run.stdout
    reads = [("runs",), ("status", name), ("actions", "list", "--run", name)]
    window_args = ("actions", "show", "0", "--run", name, "--with-signal-window")
    *listed, window = trajmon_together(*((*a, "--db", str(db)) for a in [*reads, window_args]))
    for args, shown in zip(reads, listed, strict=True):
        assert shown.returncode == 0 and name in shown.stdout, (args, shown.stderr)
    assert window.returncode == 0, window.stderr
    assert "Z Position [m]" in window.stdout and "Tunnel Current [A]" in window.stdout


@pytest.mark.parametrize(
    "args",
    [
        ("--interval-s", "0"),
        ("--interval-s", "nan"),
        ("--rotate-entries", "0"),
        ("--action-window-s", "-1"),
    ],
)
def test_bad_run_options_refused_before_anything_is_written(
    tmp_path: Path, args: tuple[str, ...]
) -> None:
    db = tmp_path / "bad.db"
    result = invoke("run", "--run-name", "x", "--sim", "--duration", "1", "--db", str(db), *args)
    assert result.exit_code == 2
    assert result.stderr.startswith("trajmon: error:")
    assert len(result.stderr.strip().splitlines()) == 1
    assert not db.exists()


def test_run_needs_one_instrument_source(tmp_path: Path) -> None:
    result = invoke("run", "--run-name", "x", "--db", str(tmp_path / "a.db"))
    assert result.exit_code == 2
    assert "--sim" in result.stderr


def test_unreachable_instrument_is_exit_2_and_writes_nothing(tmp_path: Path) -> None:
    db = tmp_path / "u.db"
    result = trajmon(
        "run", "--run-name", "x", "--host", "127.0.0.1", "--port", "1", "--db", str(db)
    )
    assert result.returncode == 2
    assert "unreachable" in result.stderr
    assert not db.exists()


def test_an_error_spanning_lines_is_printed_on_one(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(typer.Exit) as exit_info:
        fail("cannot write p.png: \nrun 'p $\\frac$'\n       ^\nParseException: at char 7\n")
    assert exit_info.value.exit_code == 2
    err = capsys.readouterr().err
    assert (
        err == "trajmon: error: cannot write p.png: run 'p $\\frac$' ^ ParseException: at char 7\n"
    )
