"""Review of plots, the demo and the simulator: an image named as asked, a failed save naming
that image, a score with nothing to count, a request log on a full disk."""

from __future__ import annotations

import asyncio
import errno
import json
import logging
import os
import sqlite3
import sys
from contextlib import closing
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from matplotlib.figure import Figure
from procs import run_cli
from test_operator_cli import plot_action
from test_sim_server import RawClient
from typer.testing import CliRunner

from simulators.serve import RunningSimulator, serve
from trajmon.cli import actions_cmd, app, demo_cmd
from trajmon.plotting import plot_action_window
from trajmon.schema import migrate
from trajmon.scoring import TruthChange, score_actions

WINDOW = [
    {
        "dt_s": [0.0, 0.5, 1.0, 1.5],
        "channels": [{"label": "I", "unit": "A"}],
        "columns": {"I": [1e-10, 2e-10, 3e-10, 2e-10]},
        "gaps": [],
    }
]


@pytest.fixture
def one_action(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A database for ``actions plot`` whose run, action and window are :func:`plot_action`
    and :data:`WINDOW`: what is tested is the command, not the recording."""
    monkeypatch.setattr(actions_cmd, "get_action", lambda *a: plot_action())
    monkeypatch.setattr(actions_cmd, "window_columns", lambda *a: WINDOW)
    monkeypatch.setattr(actions_cmd, "resolve_run", lambda conn, run: SimpleNamespace(
        run_id=1, run_name="r"))  # fmt: skip
    db = tmp_path / "t.db"
    with closing(sqlite3.connect(db)) as conn:
        migrate(conn)
    return db


def _plot(db: Path, out: Path | str) -> Any:
    return CliRunner().invoke(app, ["actions", "plot", "0", "--db", str(db), "-o", str(out)])


@pytest.mark.parametrize("name", [".png", ".SVG"])
def test_plot_to_a_bare_extension_is_refused_not_written_doubled(
    one_action: Path, tmp_path: Path, name: str
) -> None:
    """``-o .png`` (a name whose stem went missing, say an empty shell variable) has no suffix
    to Python, so the "no extension: .png" rule wrote ``.png.png`` and said so."""
    out = tmp_path / "plots" / name
    result = _plot(one_action, out)
    assert result.exit_code == 2, result.output
    assert f"{out} is only an extension; give a file name, e.g." in result.output
    assert f"action-0{name}" in result.output
    assert not (tmp_path / "plots").exists()


def test_a_dot_name_that_is_no_image_format_still_gets_png(
    one_action: Path, tmp_path: Path
) -> None:
    out = tmp_path / ".myplot"
    result = _plot(one_action, out)
    assert result.exit_code == 0, result.output
    assert (tmp_path / ".myplot.png").read_bytes().startswith(b"\x89PNG")


def _disk_full_on_open(monkeypatch: pytest.MonkeyPatch) -> None:
    """``savefig`` failing as ``open`` does on a full disk or an unwritable place: an
    OSError naming the file it was given."""

    def savefig(self: Figure, fname: Any, *args: Any, **kwargs: Any) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(fname))

    monkeypatch.setattr(Figure, "savefig", savefig)


def test_a_failed_save_names_the_file_asked_for_not_the_temporary_one(
    one_action: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """It said ``cannot write x.png: [Errno 28] No space left on device: 'x.png.partial'``:
    a file the user never named, and one that no longer exists."""
    _disk_full_on_open(monkeypatch)
    out = tmp_path / "x.png"
    with pytest.raises(OSError) as raised:
        plot_action_window(plot_action(), WINDOW, out, run_name="r")
    assert raised.value.errno == errno.ENOSPC and raised.value.filename == str(out)

    result = _plot(one_action, out)
    assert result.exit_code == 1
    assert result.output.strip() == (
        f"trajmon: error: cannot write {out}: {os.strerror(errno.ENOSPC)}"
    )
    assert not list(tmp_path.glob("x.png*"))  # no image, no .partial left


def test_a_name_too_long_for_the_file_system_is_one_line(one_action: Path, tmp_path: Path) -> None:
    """The directory check before the save looked at the path and raised ENAMETOOLONG out of
    the command: a traceback."""
    out = tmp_path / ("a" * 300 + ".png")
    result = _plot(one_action, out)
    assert result.exit_code == 1, result.output
    assert result.output.strip() == (
        f"trajmon: error: cannot write {out}: {os.strerror(errno.ENAMETOOLONG)}"
    )


def test_a_format_whose_tool_is_missing_is_one_line(
    one_action: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``-o x.pgf`` without LaTeX: matplotlib's RuntimeError came out as a traceback."""
    message = "'xelatex' not found; install it or change rcParams['pgf.texsystem']"

    def savefig(self: Figure, fname: Any, *args: Any, **kwargs: Any) -> None:
        raise RuntimeError(message)

    monkeypatch.setattr(Figure, "savefig", savefig)
    out = tmp_path / "x.pgf"
    result = _plot(one_action, out)
    assert result.exit_code == 1, result.output
    assert result.output.strip() == f"trajmon: error: cannot write {out}: {message}"
    assert not list(tmp_path.glob("x.pgf*"))


def test_a_directory_not_made_yet_is_not_written_as_an_image(
    one_action: Path, tmp_path: Path
) -> None:
    """``-o plots/`` (a directory meant, not there yet) lost its slash to Path and, having no
    extension, was written as the image ``plots.png`` beside it."""
    result = _plot(one_action, f"{tmp_path / 'plots'}/")
    assert result.exit_code == 2, result.output
    assert "names a directory" in result.output
    assert f"{tmp_path / 'plots' / 'action-0.png'}" in result.output
    assert not list(tmp_path.glob("plots*"))


# ---------------------------------------------------------------- scoring with nothing to count


def test_no_detection_has_no_precision_rather_than_nan() -> None:
    """Precision is a share of detections: with none it is 0/0. It was NaN (printed `nan`)
    with changes to find, and 1.0 — a perfect score — with none."""
    missed = score_actions([], [TruthChange("Bias", 1.0, 0.3)], max_latency_s=0.2)
    assert (missed.precision, missed.recall) == (None, 0.0)
    empty = score_actions([], [], max_latency_s=0.2)
    assert (empty.precision, empty.recall) == (None, None)
    extra = score_actions(
        [{"spec_label": "Bias", "dt_s": 1.0, "new_value": 0.3}], [], max_latency_s=0.2
    )
    assert (extra.precision, extra.recall) == (0.0, None)


def _demo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *args: str) -> Any:
    """``trajmon demo`` of 0.3 s whose score is that of a run that saw none of two changes."""
    truth = [TruthChange("Bias", 0.1, 0.3), TruthChange("Z Setpoint", 0.2, 2e-10)]
    score = score_actions([], truth, max_latency_s=0.2)
    monkeypatch.setattr(demo_cmd, "score_recording", lambda *a: (score, truth))
    db = tmp_path / "demo.db"
    return CliRunner().invoke(app, ["demo", "--duration", "0.3", "--db", str(db), *args])


def test_demo_json_with_nothing_detected_has_a_null_precision(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    result = _demo(tmp_path, monkeypatch, "--json")
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["precision"] is None and out["recall"] == 0.0
    assert (out["truth_actions"], out["matched"]) == (2, 0)


def test_demo_text_with_nothing_detected_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    result = _demo(tmp_path, monkeypatch)
    assert result.exit_code == 0, result.output
    assert (
        "scored against the scripted operator: 0/2 changes found,"
        " precision n/a (nothing detected), recall 0.00\n"
    ) in result.stdout
    assert "nan" not in result.stdout


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="no /dev/full: no disk that is full")
def test_demo_into_a_database_that_cannot_be_written_is_one_line() -> None:
    """`trajmon run` says this in one line; the demo raised the StorageError: a traceback.
    (/dev/full, a device, is now refused before the demo starts; a disk that fills is below.)"""
    done = run_cli("demo", "--duration", "0.3", "--db", "/dev/full")
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr and done.stdout == ""
    assert done.stderr.splitlines() == [
        "trajmon: error: /dev/full is a device or socket, not a database file"
    ]


def test_demo_whose_disk_fills_reports_the_failed_run_and_exits_1(small_fs: Path) -> None:
    """A full disk mid-run: `trajmon run` prints the summary and one line, exit 1; the demo
    raised RunFailedError out of the command — a traceback, no summary, no score."""
    free = os.statvfs(small_fs)
    (small_fs / "filler").write_bytes(b"x" * (free.f_bavail * free.f_frsize - 250 * 1024))
    db = small_fs / "demo.db"
    done = run_cli("demo", "--duration", "60", "--db", str(db), "--json")
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    assert done.stderr.splitlines()[-1].startswith(
        "trajmon: error: cannot write to the database: database or disk is full"
    )
    out = json.loads(done.stdout)
    assert out["status"] == "failed" and out["db"] == str(db)


# ---------------------------------------------------------------- request log on a full disk


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="no /dev/full: no disk that is full")
async def test_a_request_log_on_a_full_disk_stops_once_and_the_server_keeps_serving(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Every request raised ENOSPC out of the connection handler: the connection dropped with
    an asyncio traceback, for every client, so the simulated instrument was gone — for the
    sake of its log. /dev/full opens and fails every write with ENOSPC: a disk that is full."""
    errs: list[str] = []
    ready: asyncio.Future[RunningSimulator] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(
        serve(
            port=0,
            request_log="/dev/full",
            ready=ready.set_result,
            out=lambda line: None,
            err=errs.append,
        )
    )
    try:
        sim = await asyncio.wait_for(asyncio.shield(ready), 10)
        client = await RawClient.connect(sim.port)
        try:
            for _ in range(3):
                assert await asyncio.wait_for(client.call("Bias.Get"), 5) == [pytest.approx(0.1)]
        finally:
            await client.close()
        assert sim.server.request_counts["Bias.Get"] == 3
        assert sim.server.log_error == os.strerror(errno.ENOSPC)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert errs == [
        f"request log /dev/full: cannot write ({os.strerror(errno.ENOSPC)}); requests are no"
        " longer logged, the simulator keeps serving"
    ]
    assert not [r for r in caplog.records if r.name == "asyncio" and r.levelno >= logging.ERROR]


def test_the_demos_next_line_runs_as_pasted_without_the_environment_on_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`make demo` runs .venv/bin/trajmon; its `next:` line said bare `trajmon`, which is
    'command not found' until the environment is activated."""
    from trajmon.cli.demo_cmd import _next_command

    venv_bin = tmp_path / "my env" / "bin"
    venv_bin.mkdir(parents=True)
    program = venv_bin / "trajmon"
    program.write_text("#!/bin/sh\n", encoding="utf-8")
    program.chmod(0o755)
    monkeypatch.setattr(sys, "argv", [str(program), "demo"])
    monkeypatch.setenv("PATH", str(tmp_path / "elsewhere"))
    line = _next_command("r", Path("d.db"), [])
    assert line == f"'{program}' status r --db d.db"
    monkeypatch.setenv("PATH", str(venv_bin))  # activated: the name alone runs it
    assert _next_command("r", Path("d.db"), []) == "trajmon status r --db d.db"
