"""Exploratory testing of the simulator's user-facing inputs (scenario and fault-plan YAML, the
log paths of ``trajmon sim serve``) and of ``trajmon demo``'s database option."""

from __future__ import annotations

import asyncio
import importlib
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from simulators.faults import FaultPlanError, load_fault_plan
from simulators.nanonis_server import NanonisServer
from simulators.operator import Change, Scenario, ScenarioError, ScriptedOperator, load_scenario
from simulators.serve import RunningSimulator, serve
from trajmon.cli import app

runner = CliRunner()
ONE = "name: s\nchanges:\n  - {at_s: 0.5, spec: Bias, value: 0.2}\n"


def _scenario(tmp_path: Path, text: str, name: str = "scenario.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def _change(spec: str, value: str) -> str:
    return f"name: s\nchanges:\n  - {{at_s: 0.5, spec: {spec}, value: {value}}}\n"


@pytest.fixture
def no_server(monkeypatch: pytest.MonkeyPatch) -> None:
    """A refused ``sim serve`` must stop before serving; one that got through fails fast."""

    async def started(**_: object) -> None:
        raise AssertionError("the server was started")

    # the package re-exports the function ``serve``, hiding the module of the same name
    monkeypatch.setattr(importlib.import_module("simulators.serve"), "serve", started)


def _refused(*args: str, code: int = 2) -> str:
    result = runner.invoke(app, list(args))
    assert result.exit_code == code, (result.exception, result.stdout, result.stderr)
    assert isinstance(result.exception, SystemExit), result.exception  # not a traceback
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("trajmon: error:"), result.stderr
    return lines[0]


# ---------------------------------------------------------------- scenario and fault-plan files


def test_a_scenario_that_is_not_utf8_is_a_scenario_error(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes(ONE.replace("name: s", "name: caf\xe9").encode("latin-1"))
    with pytest.raises(ScenarioError, match=r"latin1\.yaml: cannot read scenario: not UTF-8"):
        load_scenario(path)


def test_a_fault_plan_that_is_not_utf8_is_a_fault_plan_error(tmp_path: Path) -> None:
    path = tmp_path / "plan.yaml"
    path.write_bytes(b"\xff\xfef\x00a\x00")  # UTF-16
    with pytest.raises(FaultPlanError, match=r"plan\.yaml: cannot read fault plan: not UTF-8"):
        load_fault_plan(path)


@pytest.mark.usefixtures("no_server")
def test_sim_serve_refuses_a_non_utf8_scenario_in_one_line(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes(b"name: caf\xe9\nchanges: []\n")
    assert "not UTF-8" in _refused("sim", "serve", "--port", "0", "--scenario", str(path))


def test_a_yaml_syntax_error_says_where_and_what(tmp_path: Path) -> None:
    """It said only "while parsing a flow mapping": no line, no problem."""
    path = _scenario(tmp_path, "name: s\nchanges: [ {at_s: 1\n")
    with pytest.raises(ScenarioError) as info:
        load_scenario(path)
    message = str(info.value)
    assert "line 3" in message and "expected ',' or '}'" in message and "\n" not in message


@pytest.mark.parametrize(
    "text",
    [
        ONE + "changes:\n  - {at_s: 9.0, spec: Bias, value: 0.3}\n",  # the first list was dropped
        "name: s\nchanges:\n  - {at_s: 0.5, spec: Bias, value: 0.2, value: 0.4}\n",
    ],
)
def test_a_duplicate_key_is_refused_not_silently_overridden(tmp_path: Path, text: str) -> None:
    with pytest.raises(ScenarioError, match=r"duplicate key '(changes|value)'"):
        load_scenario(_scenario(tmp_path, text))


def test_a_duplicate_key_in_a_fault_plan_is_refused(tmp_path: Path) -> None:
    path = _scenario(tmp_path, "faults:\n  - {at_s: 1, fault: drop, at_s: 2}\n", "plan.yaml")
    with pytest.raises(FaultPlanError, match=r"duplicate key 'at_s'"):
        load_fault_plan(path)


@pytest.mark.parametrize(
    ("spec", "value", "problem"),
    [
        ("Bias", "11.0", "10 V"),
        ("Bias", "-10.5", "10 V"),
        ("Bias", "1.0e+300", "float32"),
        ("Z Setpoint", "1.0e-3", "1e-06 A"),
        ("Z Setpoint", "1.0e-60", "float32"),
        ("Scan Frame Width", "1.0e-60", "float32"),
        ("Scan Frame Angle", "1.0e+39", "float32"),
        ("Scan Frame Center X", "1.0e+300", "float32"),
        ("Z Controller I Gain", "1.0e-60", "float32"),
        ("Scan Frame", "{height: 1.0e-50}", "float32"),
    ],
)
def test_values_the_simulator_would_refuse_are_refused_on_load(
    tmp_path: Path, spec: str, value: str, problem: str
) -> None:
    """Each was accepted, then refused by the server (the change silently skipped) or crashed
    the operator (float too large to pack), leaving the rest of the scenario unplayed."""
    with pytest.raises(ScenarioError, match=r"changes\[0\]") as info:
        load_scenario(_scenario(tmp_path, _change(spec, value)))
    assert problem in str(info.value)


def test_values_at_the_model_limits_are_accepted(tmp_path: Path) -> None:
    text = (
        "name: s\nchanges:\n"
        "  - {at_s: 0.1, spec: Bias, value: -10.0}\n"
        "  - {at_s: 0.2, spec: Z Setpoint, value: 1.0e-6}\n"
        "  - {at_s: 0.3, spec: Scan Frame Angle, value: 3.0e+38}\n"
    )
    assert len(load_scenario(_scenario(tmp_path, text)).changes) == 3


# ---------------------------------------------------------------- the operator at run time


async def test_a_change_that_cannot_be_encoded_is_an_error_not_the_end_of_the_scenario() -> None:
    """A Scenario built in code bypasses the loader: an unpackable value crashed the operator
    task (OverflowError) and every later change was silently never played."""
    scenario = Scenario("s", "", None, (Change(0.0, "Bias", 1e300), Change(0.0, "Bias", 0.5)))
    async with NanonisServer() as srv:
        op = ScriptedOperator(srv.host, srv.port, scenario)
        truth = await asyncio.wait_for(op.run(), 10)
    assert len(op.errors) == 1 and "change 0 (Bias)" in op.errors[0]
    assert [(e.change_idx, e.new) for e in truth] == [(1, 0.5)]


async def test_sim_serve_reports_a_change_the_server_refused(tmp_path: Path) -> None:
    """The scenario is valid, but P/I (the time constant) is too small for a float32: the
    server refuses the set. sim serve printed nothing: the change was silently skipped."""
    path = _scenario(tmp_path, _change("Z Controller I Gain", "1.0e+38"))
    lines: list[str] = []
    ready: asyncio.Future[RunningSimulator] = asyncio.get_running_loop().create_future()
    kwargs: dict[str, Any] = {"err": lines.append, "out": lines.append}
    task = asyncio.create_task(serve(port=0, scenario=path, ready=ready.set_result, **kwargs))
    try:
        sim = await asyncio.wait_for(ready, 10)
        assert sim.operator_task is not None
        await asyncio.wait_for(sim.operator_task, 10)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    failed = [line for line in lines if "change 0 (Z Controller I Gain) failed" in line]
    assert len(failed) == 1 and "time_constant" in failed[0], lines
    assert any("1 of 1 changes failed" in line for line in lines), lines


# ---------------------------------------------------------------- sim serve log paths


@pytest.mark.usefixtures("no_server")
def test_a_truth_log_on_the_scenario_file_is_refused_and_the_scenario_kept(
    tmp_path: Path,
) -> None:
    """The truth log truncated the scenario, then the server died of a traceback."""
    path = _scenario(tmp_path, ONE)
    args = ["--scenario", str(path), "--truth-log", str(path)]
    line = _refused("sim", "serve", "--port", "0", *args)
    assert "truth log" in line and "scenario" in line
    assert path.read_text(encoding="utf-8") == ONE


@pytest.mark.usefixtures("no_server")
@pytest.mark.parametrize("option", ["--request-log", "--truth-log"])
def test_a_log_on_the_fault_plan_or_scenario_is_refused(tmp_path: Path, option: str) -> None:
    """The request log was appended to the user's scenario (or fault plan) file."""
    scenario = _scenario(tmp_path, ONE)
    plan = _scenario(tmp_path, "faults: []\n", "plan.yaml")
    for target in (scenario, plan):
        args = ["--scenario", str(scenario), "--faults", str(plan), option, str(target)]
        _refused("sim", "serve", "--port", "0", *args)
    assert scenario.read_text(encoding="utf-8") == ONE
    assert plan.read_text(encoding="utf-8") == "faults: []\n"


@pytest.mark.usefixtures("no_server")
def test_the_same_file_for_truth_and_request_log_is_refused(tmp_path: Path) -> None:
    """Both logs then wrote over each other: truncated and interleaved lines."""
    scenario = _scenario(tmp_path, ONE)
    log = tmp_path / "logs" / ".." / "both.jsonl"
    (tmp_path / "logs").mkdir()
    line = _refused(
        "sim", "serve", "--port", "0", "--scenario", str(scenario),
        "--truth-log", str(tmp_path / "both.jsonl"), "--request-log", str(log),
    )  # fmt: skip
    assert "same file" in line


@pytest.mark.usefixtures("no_server")
@pytest.mark.parametrize("where", ["directory", "missing parent"])
def test_an_unwritable_request_log_names_the_request_log(tmp_path: Path, where: str) -> None:
    """It said "cannot serve on 127.0.0.1:0: [Errno 21] Is a directory" — blaming the port."""
    log = tmp_path if where == "directory" else tmp_path / "missing" / "requests.jsonl"
    line = _refused("sim", "serve", "--port", "0", "--request-log", str(log))
    assert "cannot write the request log" in line and "cannot serve" not in line


@pytest.mark.usefixtures("no_server")
def test_a_truth_log_without_a_scenario_is_refused(tmp_path: Path) -> None:
    """Nothing ever writes it: the run left an empty file that looked like "no changes"."""
    log = tmp_path / "truth.jsonl"
    assert "--scenario" in _refused("sim", "serve", "--port", "0", "--truth-log", str(log))
    assert not log.exists()


# ---------------------------------------------------------------- trajmon demo --db


def test_demo_into_a_missing_directory_is_one_line(tmp_path: Path) -> None:
    """It was a StorageError traceback."""
    db = tmp_path / "missing" / "demo.db"
    line = _refused("demo", "--duration", "1", "--db", str(db), code=1)
    assert "does not exist" in line and not db.parent.exists()


def test_demo_into_a_directory_says_so(tmp_path: Path) -> None:
    """It said "cannot read DIR: disk I/O error"."""
    assert "is a directory" in _refused("demo", "--duration", "1", "--db", str(tmp_path))


def test_sim_serve_started_with_sigint_ignored_still_stops_on_sigint(tmp_path: Path) -> None:
    """A shell script's background job inherits SIGINT ignored; `kill -INT` stops `trajmon
    run` started that way, and must stop the server too (it served on, unkillable but by TERM)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "trajmon", "sim", "serve", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
    )
    try:
        assert proc.stdout is not None
        assert "listening on 127.0.0.1:" in proc.stdout.readline()
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=15)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
