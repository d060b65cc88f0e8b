"""``runs``, ``status`` and ``actions plot`` on a recorded run (in-process, via typer's runner)."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import sqlite3
import time
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from qcodes.instrument import Instrument
from recordings import record_every_tick, record_one_bias_change
from rich.console import Console
from typer.testing import CliRunner

from trajmon import ChannelSpec, MonitorConfig
from trajmon.cli import app
from trajmon.cli.runs_cmd import render_status
from trajmon.plotting import plot_action_window
from trajmon.queries import connect_readonly, resolve_run
from trajmon.status import STATUS_SCHEMA, run_status

runner = CliRunner()
RUN = "knob turned"


@pytest.fixture(scope="module")
def knob_db(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A run in which the operator changed the bias once, stopped with Ctrl-C (interrupted)."""
    db = tmp_path_factory.mktemp("operator") / "runs.db"
    record_one_bias_change(db, RUN, seed=3, window_before_s=0.3, before=20, after=45)
    yield db


def invoke(*args: str) -> Any:
    return runner.invoke(app, list(args), catch_exceptions=False)


def test_runs_lists_status_start_duration_and_counts(knob_db: Path) -> None:
    data = json.loads(invoke("runs", "--db", str(knob_db), "--json").stdout)
    (run,) = data["runs"]
    assert run["run_name"] == RUN and run["status"] == "interrupted"
    assert run["duration_s"] > 0.5 and run["signal_samples"] >= 45 and run["actions"] >= 1
    assert run["run_start_utc"].endswith("+00:00")
    table = invoke("runs", "--db", str(knob_db))
    assert table.exit_code == 0 and RUN in table.stdout and "interrupted" in table.stdout


def test_status_json_shape(knob_db: Path) -> None:
    result = invoke("status", RUN, "--db", str(knob_db), "--json")
    doc = json.loads(result.stdout)
    assert doc["schema"] == STATUS_SCHEMA == 1
    assert doc["status"] == doc["stored_status"] == "interrupted" and doc["running"] is False
    assert doc["lost_samples"] == 0 and doc["pending_samples"] == 0 and doc["errors"] == 0
    assert doc["actions"] >= 1 and doc["last_error"] is None and doc["sessions"] == 1
    signals, specs = doc["groups"]
    assert (signals["kind"], specs["kind"]) == ("signal", "spec")
    assert signals["target_rate_hz"] == pytest.approx(50)
    assert signals["achieved_rate_hz"] == pytest.approx(50, rel=0.2)
    assert 0 < signals["read_mean_s"] <= signals["read_max_s"]
    assert doc["signal_samples"] == signals["samples"]
    expected = {
        "schema", "run_id", "run_name", "status", "stored_status", "running", "run_start_utc",
        "ended_utc", "elapsed_s", "requested_duration_s", "heartbeat_utc", "heartbeat_age_s",
        "stale_after_s", "signal_samples", "spec_samples", "missed_ticks", "actions", "errors",
        "failed_reads", "last_error", "lost_samples", "pending_samples", "sessions", "pid",
        "message", "groups",
    }  # fmt: skip
    assert set(doc) == expected, "the documented, versioned shape"
    text = invoke("status", "--db", str(knob_db))  # most recent run by default
    assert text.exit_code == 0 and "interrupted" in text.stdout and "signals" in text.stdout
    # An ended run says when it ended; a heartbeat's age means something only while it runs.
    assert f"ended {doc['ended_utc']}" in text.stdout and "heartbeat" not in text.stdout
    running = {**doc, "status": "running", "running": True, "ended_utc": None}
    console = Console(record=True, width=200)
    console.print(render_status(running))
    live = console.export_text()
    assert "last heartbeat" in live and "crashed if older than" in live and "ended" not in live


def test_watch_on_a_finished_run_prints_the_final_state_and_exits_0(knob_db: Path) -> None:
    lines = invoke("status", "--db", str(knob_db), "--watch", "--json").stdout.splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["status"] == "interrupted"
    text = invoke("status", RUN, "--db", str(knob_db), "--watch", "--interval", "0.1")
    assert text.exit_code == 0 and "interrupted" in text.stdout


def test_stale_running_row_is_crashed(knob_db: Path, tmp_path: Path) -> None:
    db = tmp_path / "copy.db"
    beat = time.time() - 3
    with closing(sqlite3.connect(knob_db)) as src, closing(sqlite3.connect(db)) as dst:
        src.backup(dst)
        dst.execute(
            "UPDATE runs SET status = 'running', stale_after_s = 0.5, heartbeat_epoch = ?,"
            " end_dt_s = NULL, ended_utc = NULL",
            (beat,),
        )
        dst.execute("UPDATE poll_groups SET samples_read = samples_read + 2")
        dst.commit()
    doc = json.loads(invoke("status", "--db", str(db), "--json").stdout)
    assert doc["status"] == "crashed" and doc["stored_status"] == "running"
    assert doc["heartbeat_age_s"] > 2.5 and doc["running"] is False
    assert doc["lost_samples"] == 4, "read but never committed, counted as lost"
    assert json.loads(invoke("runs", "--db", str(db), "--json").stdout)["runs"][0]["status"] == (
        "crashed"
    )
    with closing(connect_readonly(db)) as conn:  # the same row, seen before it went stale
        ref = resolve_run(conn, RUN)
        fresh = run_status(conn, ref, now=beat + 0.1)
    assert fresh["status"] == "running" and fresh["pending_samples"] == 4


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("status", "nope"), "unknown run 'nope'"),
        (("status", "nope", "--watch"), "unknown run 'nope'"),
        (("actions", "plot", "99", "-o", "x.png"), "has no action 99"),
        (("actions", "plot", "0", "--run", "nope", "-o", "x.png"), "unknown run 'nope'"),
    ],
)
def test_errors_are_one_line_exit_2(
    knob_db: Path, tmp_path: Path, args: tuple[str, ...], message: str
) -> None:
    result = invoke(*args, "--db", str(knob_db))
    assert result.exit_code == 2 and message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "x.png").exists()


@pytest.mark.parametrize("command", ["runs", "status"])
def test_missing_database_is_exit_2(tmp_path: Path, command: str) -> None:
    result = invoke(command, "--db", str(tmp_path / "none.db"))
    assert result.exit_code == 2 and "database not found" in result.stderr
    assert not (tmp_path / "none.db").exists()


def test_actions_plot_writes_a_png(knob_db: Path, tmp_path: Path) -> None:
    out = tmp_path / "plots" / "bias.png"
    result = invoke("actions", "plot", "0", "--run", RUN, "--db", str(knob_db), "-o", str(out))
    assert result.exit_code == 0, result.stderr
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(data) > 20_000, "two axes of signal traces, not an empty canvas"


def plot_action(**fields: Any) -> dict[str, Any]:
    """An action as ``actions plot`` gets it: Bias 0.1 -> 0.2 at 1 s, window 0-2 s."""
    action: dict[str, Any] = {
        "action_idx": 0,
        "dt_s": 1.0,
        "prev_dt_s": 0.9,
        "window_start_s": 0.0,
        "window_end_s": 2.0,
        "spec_label": "Bias",
        "old_value": 0.1,
        "new_value": 0.2,
    }
    return {**action, **fields}


def test_plot_takes_dollars_in_names_and_units_literally(tmp_path: Path) -> None:
    """``$`` starts matplotlib's math mode; in a run name, label or unit it is just a character,
    and "$\\frac$" (invalid math) used to make the plot fail."""
    action = plot_action(spec_label="Bias $\\frac$")
    groups = [
        {
            "dt_s": [0.0, 0.5, 1.0, 1.5],
            "channels": [{"label": "I $\\frac$", "unit": "$\\x$"}],
            "columns": {"I $\\frac$": [1.0, 2.0, 3.0, 2.0]},
        }
    ]
    out = tmp_path / "dollars.png"
    axes = plot_action_window(action, groups, out, run_name="run $\\frac$", spec_unit="$\\y$")
    assert axes == 1 and out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_names_the_file_it_wrote_and_refuses_a_directory(
    knob_db: Path, tmp_path: Path
) -> None:
    bare = tmp_path / "bias"
    result = invoke("actions", "plot", "0", "--run", RUN, "--db", str(knob_db), "-o", str(bare))
    assert result.exit_code == 0 and f"wrote {bare}.png" in result.stdout
    assert (tmp_path / "bias.png").exists() and not bare.exists()
    refused = invoke(
        "actions", "plot", "0", "--run", RUN, "--db", str(knob_db), "-o", str(tmp_path)
    )
    assert refused.exit_code == 2 and "is a directory" in refused.stderr
    (tmp_path / "afile").touch()
    below_a_file = tmp_path / "afile" / "sub" / "x.png"
    refused = invoke(
        "actions", "plot", "0", "--run", RUN, "--db", str(knob_db), "-o", str(below_a_file)
    )
    assert refused.exit_code == 1 and f"Not a directory: '{tmp_path / 'afile'}'" in refused.stderr


def test_a_plot_that_cannot_be_saved_leaves_no_partial_image(knob_db: Path, small_fs: Path) -> None:
    """The image was written in place: a full disk left a truncated file under the name."""
    out = small_fs / "bias.png"
    out.write_bytes(b"earlier")
    with (small_fs / "filler").open("wb", buffering=0) as f, contextlib.suppress(OSError):
        f.write(b"\0" * 600 * 1024)  # fills the disk
    result = invoke("actions", "plot", "0", "--run", RUN, "--db", str(knob_db), "-o", str(out))
    assert result.exit_code == 1 and "No space left" in result.stderr
    assert sorted(p.name for p in small_fs.iterdir()) == ["bias.png", "filler"]
    assert out.read_bytes() == b"earlier"


@pytest.mark.parametrize(
    "args",
    [
        ("actions", "show", str(2**63)),
        ("actions", "plot", str(2**63), "-o", "x.png"),
        ("actions", "list", "--limit", str(2**63)),
        ("status", "--watch", "--interval", "inf"),
    ],
)
def test_out_of_range_numbers_are_usage_errors(knob_db: Path, args: tuple[str, ...]) -> None:
    """Beyond SQLite's integers (or an endless refresh): refused as usage, not a traceback."""
    result = invoke(*args, "--db", str(knob_db))
    assert result.exit_code == 2


def test_a_run_is_found_by_its_name_as_given_with_spaces(knob_db: Path) -> None:
    """New run names are stripped when stored; lookups strip them the same way."""
    result = invoke("status", f"  {RUN} ", "--db", str(knob_db), "--json")
    assert result.exit_code == 0 and json.loads(result.stdout)["run_name"] == RUN


def _read_only_place(monkeypatch: pytest.MonkeyPatch) -> None:
    """As on a read-only mount (checked by hand there): the directory is not writable, so
    SQLite cannot create the -shm file a WAL database needs and refuses a plain read-only
    open; an immutable open needs no -shm."""
    real = sqlite3.connect

    def connect(database: str, *args: Any, **kwargs: Any) -> sqlite3.Connection:
        if "immutable=1" not in database:
            raise sqlite3.OperationalError("unable to open database file")
        return real(database, *args, **kwargs)

    real_access = os.access
    monkeypatch.setattr(
        os, "access", lambda path, mode: mode != os.W_OK and real_access(path, mode)
    )
    monkeypatch.setattr(sqlite3, "connect", connect)


def _archived_copy(db: Path, tmp_path: Path) -> Path:
    """The bare database file, as an archive holds it: no -wal, no -shm beside it."""
    archived = tmp_path / "archived.db"
    with closing(sqlite3.connect(db)) as src, closing(sqlite3.connect(archived)) as dst:
        src.backup(dst)
    return archived


def test_an_archived_database_in_a_read_only_place_can_be_read(
    knob_db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    archived = _archived_copy(knob_db, tmp_path)
    _read_only_place(monkeypatch)
    result = invoke("runs", "--db", str(archived), "--json")
    assert result.exit_code == 0, result.stderr
    assert [r["run_name"] for r in json.loads(result.stdout)["runs"]] == [RUN]


def test_a_read_only_database_with_a_write_ahead_log_says_what_to_do(
    knob_db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its last commits may be only in the -wal file: reading it as immutable would miss them."""
    archived = _archived_copy(knob_db, tmp_path)
    (tmp_path / "archived.db-wal").write_bytes(b"\0" * 64)
    _read_only_place(monkeypatch)
    result = invoke("runs", "--db", str(archived))
    assert result.exit_code == 2 and "copy it with its archived.db-wal file" in result.stderr


@pytest.fixture(scope="module")
def busy_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run whose one spec changes at every read: an action per spec sample."""
    db = tmp_path_factory.mktemp("busy") / "busy.db"
    knob = Instrument("busy_knob")
    turns = itertools.count()
    knob.add_parameter("position", unit="deg", get_cmd=lambda: float(next(turns)))
    config = MonitorConfig(
        run_name="busy",
        db=db,
        interval_s=0.01,
        duration_s=0.15,
        channels=[ChannelSpec(label="Knob", source="busy_knob.position", kind="spec")],
    )
    try:
        assert record_every_tick(config, {"busy_knob": knob}).actions == 14  # 15 reads
    finally:
        knob.close()
    return db


def test_actions_list_last_shows_the_latest_oldest_first(busy_db: Path) -> None:
    def listed(*args: str) -> list[int]:
        result = invoke("actions", "list", "--db", str(busy_db), "--json", *args)
        assert result.exit_code == 0, result.stderr
        return [a["action_idx"] for a in json.loads(result.stdout)["actions"]]

    everything = listed()
    assert listed("--last", "3") == everything[-3:] and listed("--limit", "3") == everything[:3]
    middle = invoke("actions", "show", str(everything[4]), "--db", str(busy_db), "--json")
    until = str(json.loads(middle.stdout)["action"]["dt_s"])
    assert listed("--last", "2", "--until", until) == everything[3:5], "after the filters"
    assert listed("--last", str(len(everything) + 5)) == everything
    table = invoke("actions", "list", "--db", str(busy_db), "--last", "1")
    assert table.exit_code == 0 and "actions of run 'busy' (1)" in table.stdout
    assert f"│ {everything[-1]} │" in table.stdout.replace("│  ", "│ ")
    both = invoke("actions", "list", "--db", str(busy_db), "--last", "1", "--limit", "1")
    assert both.exit_code == 2 and "--limit and --last cannot be combined" in both.stderr
