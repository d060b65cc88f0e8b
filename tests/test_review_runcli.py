"""Review of ``trajmon run`` as an operator uses it: closed output streams and its help."""

from __future__ import annotations

import json
import sqlite3
import subprocess
from contextlib import closing
from pathlib import Path

from procs import ENV, TRAJMON
from typer.testing import CliRunner

from trajmon.cli import app


def test_json_summary_with_stdout_closed_keeps_the_exit_code(tmp_path: Path) -> None:
    """``trajmon run --json >&-`` (stdout closed before the start, as a detached job may be):
    Python has no ``sys.stdout`` then; the completed run must exit 0 without a traceback."""
    db = tmp_path / "runs.db"
    cmd = [*TRAJMON, "run", "--sim", "--run-name", "closed", "--duration", "0.3"]
    proc = subprocess.run(
        ["sh", "-c", 'exec "$@" >&-', "sh", *cmd, "--db", str(db), "--json"],
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
        timeout=60,
    )
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.returncode == 0, proc.stderr
    with closing(sqlite3.connect(db)) as conn:
        status = conn.execute("SELECT status FROM runs WHERE run_name = 'closed'").fetchone()
    assert status == ("completed",)
    # the same run with stdout open prints the summary as before
    shown = subprocess.run(
        [*TRAJMON, "runs", "--db", str(db), "--json"],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=60,
    )
    assert json.loads(shown.stdout)["runs"][0]["status"] == "completed"


def test_run_help_does_not_break_a_sentence_mid_line() -> None:
    """Typer keeps a docstring's line breaks: ``the staged run`` / ``name is cleared`` read as
    two broken lines in ``trajmon run --help``."""
    result = CliRunner().invoke(app, ["run", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    lines = [line.strip() for line in result.output.splitlines()]
    assert any("run name is cleared once the run has started" in line for line in lines), (
        result.output
    )
