"""Lead's review fixes of session 20."""

from __future__ import annotations

import json
import shutil
import sqlite3
import sys
from contextlib import closing
from pathlib import Path

import pytest
from recordings import record_every_tick, record_one_bias_change
from rich.console import Console
from typer.testing import CliRunner

from trajmon.cli import app
from trajmon.cli.runs_cmd import render_status

ROOT = Path(__file__).resolve().parents[1]


def test_a_crashed_run_is_said_to_be_possibly_paused_not_only_dead(tmp_path: Path) -> None:
    """A notebook cell that holds the loop, or a process stopped with Ctrl-Z, stops the
    heartbeat as a death does; `status` said only "crashed if older than 5 s", and an operator
    would start a second recorder beside a run that comes back."""
    db = tmp_path / "runs.db"
    record_one_bias_change(db, "r", seed=1, window_before_s=0.3, before=5, after=5)
    out = CliRunner().invoke(app, ["status", "--db", str(db), "--json"], catch_exceptions=False)
    doc = json.loads(out.stdout)
    crashed = {**doc, "status": "crashed", "running": False, "ended_utc": None}
    crashed["heartbeat_age_s"] = 8.0
    console = Console(record=True, width=300)
    console.print(render_status(crashed))
    text = console.export_text()
    assert "no heartbeat for 8.0 s (more than 5 s)" in text
    assert "paused or blocked" in text and "may still come back" in text


def test_the_summarys_command_is_one_this_shell_can_run(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """`make demo` runs .venv/bin/trajmon, not on PATH until the venv is activated: the
    summary's "see the actions" line said a bare `trajmon` there, 'command not found' (the
    demo's own `next:` line already named the program as it was run)."""
    from test_review_livepolish import summary, summary_lines

    argv0 = tmp_path / "venv dir" / "bin" / "trajmon"
    monkeypatch.setattr(sys, "argv", [str(argv0), "run"])
    monkeypatch.setenv("PATH", str(tmp_path / "elsewhere"))
    lines = summary_lines(monkeypatch, summary(), 200)
    assert lines[-1].startswith(f"see the actions: '{argv0}' actions list --db "), lines


async def test_a_request_log_that_cannot_be_reopened_after_an_outage_stops_not_the_server(
    tmp_path: Path,
) -> None:
    """An outage (fault plan) stops and restarts the server; with the log's directory removed
    meanwhile, the restart raised and `sim serve` stayed down for good, saying it could not
    listen. The docs promise that a log that cannot be written stops and serving goes on."""
    from simulators.nanonis_server import NanonisServer

    said: list[str] = []
    logdir = tmp_path / "logs"
    logdir.mkdir()
    srv = NanonisServer(port=0, log_path=logdir / "req.jsonl", on_log_error=said.append)
    async with srv:
        await srv.stop()
        shutil.rmtree(logdir)
        await srv.start()
        assert srv.running and srv.log_error is not None
        assert len(said) == 1 and "requests are no longer logged" in said[0]
    with pytest.raises(OSError):  # a log that cannot be opened at the first start is an error
        await NanonisServer(port=0, log_path=tmp_path / "absent" / "req.jsonl").start()


async def test_the_scripted_operator_waits_out_the_servers_latency() -> None:
    """`sim serve --latency-ms 6000 --scenario …`: the operator's fixed 5 s timeout was shorter
    than every reply, so every scripted change failed — and the server applied each one later
    all the same, leaving real changes out of the truth log."""
    from simulators.operator import load_scenario
    from simulators.serve import run_simulator

    scenario = load_scenario(ROOT / "simulators" / "scenarios" / "quick.yaml")
    async with run_simulator(
        latency_ms=6000, jitter_ms=1000, scenario=scenario, start_operator=False
    ) as sim:
        assert sim.operator is not None
        assert sim.operator.timeout_s == 5.0 + 7.0


def test_a_run_recorded_with_an_untyped_channel_resumes_and_stays_untyped(tmp_path: Path) -> None:
    """An on/off ``val_mapping`` channel is now typed ``bool``; runs recorded before that
    have it as ``any``. Resuming one was refused ("recorded as any … now gives bool"), and
    writing it as ``bool`` would put plain 1/0 after ``bool:1`` blobs in one column."""
    from test_review_qcodesvariety import Heater, heater_config

    from trajmon.channels import decode_value, encoder_for

    db = tmp_path / "runs.db"
    config = heater_config(db)
    first = Heater("heater_first", outputs=["1", "1", "0", "0"])
    try:
        assert record_every_tick(config, {"heater": first}).status == "completed"
    finally:
        first.close()
    # As an older trajmon left it: the channel untyped, its values as untyped blobs.
    untyped = encoder_for("any")
    with closing(sqlite3.connect(db)) as conn, conn:
        conn.execute("UPDATE runs SET status = 'interrupted'")
        conn.execute("UPDATE channels SET value_type = 'any' WHERE label = 'Heater'")
        rows = conn.execute('SELECT sample_idx, "Heater" FROM "heat/specs"').fetchall()
        for idx, value in rows:
            conn.execute(
                'UPDATE "heat/specs" SET "Heater" = ? WHERE sample_idx = ?',
                (untyped(bool(value)), idx),
            )
    second = Heater("heater_second", outputs=["0", "1", "1", "1"])
    try:
        summary = record_every_tick(config, {"heater": second}, resume=True)
    finally:
        second.close()
    assert summary.status == "completed"
    with closing(sqlite3.connect(db)) as conn:
        query = 'SELECT "Heater" FROM "heat/specs" ORDER BY sample_idx'
        stored = [v for (v,) in conn.execute(query)]
        (catalog,) = conn.execute("SELECT value_type FROM channels WHERE label = 'Heater'")
    assert catalog == ("any",)
    assert len(stored) == 8 and all(isinstance(v, bytes) for v in stored), stored
    read = [decode_value("any", v) for v in stored]
    assert read == [True, True, False, False, False, True, True, True]


#: ``trajmon`` as its console script runs it, sending itself a stop signal as the run's
#: recorder is built: after the options were read and the source planned, before the runner
#: puts its own signal handlers in place.
SIGNAL_AT_RECORDER = """
import os, signal, sys
sys.argv[0] = "trajmon"
from trajmon.cli import main, runner

class Stopped(runner.Recorder):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        os.kill(os.getpid(), getattr(signal, os.environ["STOP_WITH"]))

runner.Recorder = Stopped
main()
"""


@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM"])
def test_a_stop_signal_just_before_the_run_takes_the_signals_writes_nothing(
    tmp_path: Path, sig: str
) -> None:
    """The signal's cancellation waited for the first checkpoint, inside ``Recorder.run``:
    by then the database and an ``interrupted`` run row of no samples were written, and no
    summary said so."""
    from test_review_entrypoint import CODES, LINES, _run

    db = tmp_path / "x.db"
    result = _run(SIGNAL_AT_RECORDER, db, env={"STOP_WITH": sig})
    assert (result.returncode, result.stderr) == (CODES[sig], LINES[sig])
    assert not db.exists()


@pytest.mark.parametrize("command", ["run", "demo"])
def test_run_and_demo_refuse_a_symlink_loop_in_one_line_before_starting(
    tmp_path: Path, command: str
) -> None:
    """``--db loop.db`` (a link to itself) was a RuntimeError traceback from resolving the
    path for ``run``, and ``demo`` printed "Recording …" and started the simulator first."""
    loop = tmp_path / "loop.db"
    loop.symlink_to(loop)
    args = [command, "--duration", "1", "--db", str(loop)]
    if command == "run":
        args += ["--sim", "--run-name", "x"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    assert result.stdout == "" and "Recording" not in result.output
    assert result.stderr.strip() == f"trajmon: error: {loop} is a symlink loop, not a database file"


def test_a_simulator_error_reply_names_its_command_once() -> None:
    """A request the simulator refused (a signal index past a shortened list) was recorded as
    ``Signals.ValsGet: Signals.ValsGet: signal index 6 out of range 0..2``: the server put the
    command in its description, and the driver names it again, as for a real controller."""
    from simulators.threaded_server import ThreadedNanonisServer
    from trajmon.drivers.nanonis import NanonisError, NanonisSTM

    with ThreadedNanonisServer() as srv:
        stm = NanonisSTM("stm_once", port=srv.port, timeout=2.0, signal_check_s=3600.0)
        try:
            srv.server.set_signal_layout(["Input 1 (V)", "Current (A)", "Z (m)"])
            (failed,) = stm.get_many([stm.z_position])  # index 6: no re-check for an hour
        finally:
            stm.close()
    assert isinstance(failed, NanonisError), failed
    assert str(failed) == "Signals.ValsGet: signal index 6 out of range 0..2"


def test_every_public_name_is_declared_once_and_importable_lazily() -> None:
    """The package lists its public names three times (``__all__``, the lazy ``_SOURCES``
    table, the imports type checkers read); a name missing from ``_SOURCES`` passed mypy and
    failed ``from trajmon import X`` with an AttributeError."""
    import ast
    import importlib

    import trajmon

    tree = ast.parse((ROOT / "src" / "trajmon" / "__init__.py").read_text(encoding="utf-8"))
    typed = {
        alias.asname or alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.level == 1
        for alias in node.names
    }
    assert set(trajmon._SOURCES) == typed == set(trajmon.__all__) - {"__version__"}
    assert trajmon.__all__ == sorted(trajmon.__all__, key=lambda n: (not n.isupper(), n))
    for name, module in trajmon._SOURCES.items():
        source = importlib.import_module(f"trajmon.{module}")
        assert getattr(trajmon, name) is getattr(source, name), name
