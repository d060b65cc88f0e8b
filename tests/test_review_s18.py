"""Session 18's own review fixes: small faults left over from earlier reviews."""

from __future__ import annotations

import itertools
import json
import random
import sqlite3
import sys
from contextlib import closing
from pathlib import Path

import pytest
from test_review_plotdemo import _plot, one_action  # noqa: F401  (a fixture)
from test_review_readbig import NFC, NFD, record_sim

from trajmon import schema
from trajmon.cli.actions_cmd import print_actions
from trajmon.config import ConfigError
from trajmon.queries import connect_readonly, resolve_run
from trajmon.resume import load_resume_config
from trajmon.schema import migrate, segment_spans
from trajmon.status import run_status


@pytest.mark.parametrize("name", ["x.", "x.."])
def test_a_name_ending_in_a_dot_gets_one_png_extension(
    one_action: Path,  # noqa: F811
    tmp_path: Path,
    name: str,
) -> None:
    """``-o x.`` has no suffix to Python, so "no extension: .png" wrote ``x..png``."""
    result = _plot(one_action, tmp_path / name)
    assert result.exit_code == 0, result.output
    assert (tmp_path / "x.png").read_bytes().startswith(b"\x89PNG")
    assert not list(tmp_path.glob("x.*.png"))
    assert str(tmp_path / "x.png") in result.output


def _action(old: object, new: object, delta: float | None) -> dict[str, object]:
    return {
        "action_idx": 0,
        "dt_s": 1.0,
        "spec_label": "bias",
        "old_value": old,
        "new_value": new,
        "delta": delta,
        "window_start_s": 0.0,
        "window_end_s": 2.0,
    }


def test_a_change_six_digits_hide_is_shown_with_all_its_digits(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``0.1 → 0.1 (+1.388e-17)`` read as an action that changed nothing."""
    new = 0.1 + 1.388e-17
    assert new != 0.1
    print_actions([_action(0.1, new, new - 0.1), _action(0.25, 0.5, 0.25)], "t")
    out = capsys.readouterr().out
    assert repr(0.1) in out and repr(new) in out
    assert " 0.25 " in out and " 0.5 " in out  # others keep six digits


def test_resume_finds_a_run_named_in_another_unicode_form_or_case(tmp_path: Path) -> None:
    """``trajmon run --resume`` looked the name up exactly, while every other command finds a
    run up to Unicode form and case: ``Café run`` typed with ``e`` + accent could be shown but
    not resumed. The resumed config carries the stored name (its tables are named by it)."""
    db = tmp_path / "r.db"
    record_sim(db, NFC, 1)
    record_sim(db, "run-a", 2)
    with closing(sqlite3.connect(db)) as conn, conn:
        conn.execute("UPDATE runs SET status = 'interrupted'")
    for given in (NFD, "CAFÉ RUN", f" {NFD} "):
        assert load_resume_config(db, given).run_name == NFC
    with pytest.raises(ConfigError, match=r"^cannot resume: unknown run 'run-' \(runs whose"):
        load_resume_config(db, "run-")
    record_sim(db, NFD, 3)  # twins up to form: refused, not guessed
    with closing(sqlite3.connect(db)) as conn, conn:
        conn.execute("UPDATE runs SET status = 'interrupted'")
    with pytest.raises(ConfigError, match="is ambiguous"):
        load_resume_config(db, "CAFÉ RUN")
    assert load_resume_config(db, NFD).run_name == NFD


@pytest.mark.parametrize("content", [b"", b"plain text"])
def test_resume_into_a_file_that_is_no_trajmon_database_says_so(
    tmp_path: Path, content: bytes
) -> None:
    """An empty file (``sqlite3 x.db`` typed by hand, or ``touch``) was "cannot read x.db: no
    such table: runs"; another program's file is refused as SQLite refuses it."""
    db = tmp_path / "x.db"
    db.write_bytes(content)
    with pytest.raises(ConfigError, match=r"^cannot resume 'a': ") as caught:
        load_resume_config(db, "a")
    if not content:
        assert str(caught.value) == f"cannot resume 'a': {db} is not a trajmon database"
    assert db.read_bytes() == content


INDEX = "monitor_errors_by_last_read"
STREAK = (
    "INSERT INTO monitor_errors (run_id, error_idx, dt_s, error_type, message, reads, last_dt_s)"
    " VALUES (1, ?, ?, 'timeout', 'no answer', 1, ?)"
)


def _indexes(db: Path) -> set[str]:
    with closing(sqlite3.connect(db)) as conn:
        rows = conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'").fetchall()
    return {name for (name,) in rows}


def _file_from_before_the_index(db: Path, streaks: int) -> None:
    with closing(sqlite3.connect(db)) as conn:
        migrate(conn)
        with conn:
            conn.execute(f"DROP INDEX {INDEX}")
            conn.executemany(STREAK, ((i, i * 0.1, i * 0.1 + 0.05) for i in range(streaks)))


def _plans_of_error_queries(db: Path) -> list[str]:
    """The plan of every query ``status`` runs on ``monitor_errors``, as SQLite chose it."""
    record_sim(db, "r", 1)
    statements: list[str] = []
    with closing(connect_readonly(db)) as conn:
        conn.set_trace_callback(statements.append)
        run_status(conn, resolve_run(conn, "r"))
        conn.set_trace_callback(None)
        plans = []
        for sql in statements:
            if "FROM monitor_errors" in sql:
                rows = conn.execute(f"EXPLAIN QUERY PLAN {sql}").fetchall()
                plans.append(" / ".join(str(row[-1]) for row in rows))
    assert plans, "status ran no query on monitor_errors"
    return plans


def test_status_finds_the_latest_error_without_sorting_every_streak(tmp_path: Path) -> None:
    """``status`` (each second under ``--watch``) sorted all of a run's error streaks for the
    latest one: 92 ms at 360k streaks. A new file has an index that answers it directly."""
    for plan in _plans_of_error_queries(tmp_path / "new.db"):
        assert INDEX in plan and "TEMP B-TREE" not in plan, plan


def test_a_file_made_before_the_index_gets_it_when_a_recorder_opens_it(tmp_path: Path) -> None:
    db = tmp_path / "old.db"
    _file_from_before_the_index(db, 20)
    assert INDEX not in _indexes(db)
    with closing(sqlite3.connect(db)) as conn:
        assert migrate(conn) == schema.SCHEMA_VERSION  # the same version: nothing locked out
    assert INDEX in _indexes(db)


def test_the_index_is_not_built_on_a_large_table_nor_under_another_writers_lock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Building holds the write lock for the whole table: an older recorder still writing a
    file with millions of rows would wait past its 2 s. A locked file is left for next time."""
    big, locked = tmp_path / "big.db", tmp_path / "locked.db"
    monkeypatch.setattr(schema, "LATE_INDEX_MAX_ROWS", 10)
    _file_from_before_the_index(big, 11)
    with closing(sqlite3.connect(big)) as conn:
        migrate(conn)
    assert INDEX not in _indexes(big)
    _file_from_before_the_index(locked, 3)
    with closing(sqlite3.connect(locked, isolation_level=None)) as holder:
        holder.execute("BEGIN IMMEDIATE")
        with closing(sqlite3.connect(locked, timeout=0.05)) as conn:
            migrate(conn, wait_s=0.05)
        holder.execute("ROLLBACK")
    assert INDEX not in _indexes(locked)
    with closing(sqlite3.connect(locked)) as conn:
        migrate(conn)
    assert INDEX in _indexes(locked)


def _spans_by_grouping(rows: list[tuple[int, float]], rotate: int) -> list[tuple[object, ...]]:
    spans: list[tuple[object, ...]] = []
    for seg, part in itertools.groupby(rows, key=lambda row: row[0] // rotate):
        got = list(part)
        spans.append((7, 2, seg, got[0][0], got[-1][0], got[0][1], got[-1][1], len(got)))
    return spans


def test_segment_spans_agree_with_grouping_the_rows_by_segment() -> None:
    rng = random.Random(5)
    for _ in range(300):
        rotate = rng.choice([1, 2, 3, 10, 1000])
        idx = sorted(rng.sample(range(0, 60), rng.randint(1, 25)))
        rows = [(i, i * 0.01 + rng.random() * 1e-3) for i in idx]
        assert segment_spans(7, 2, rows, rotate) == _spans_by_grouping(rows, rotate)


def test_a_hung_benchmark_worker_is_killed_and_reported_not_waited_for(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A recorder that hangs in a benchmark hung ``make bench`` for good (no limit per worker);
    now the worker's session is killed at the limit and its rows say so."""
    from benchmarks import run

    hang = tmp_path / "hanging-python"
    hang.write_text("#!/bin/sh\nexec sleep 600\n", encoding="utf-8")
    hang.chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(hang))
    monkeypatch.setitem(run.WORKER_LIMIT_S, "quick", 0.5)
    out = tmp_path / "quick.json"
    code = run.main(["--quick", "--only", "writer", "--out", str(out), "--workdir", str(tmp_path)])
    assert code == 1
    capsys.readouterr()
    rows = json.loads(out.read_text(encoding="utf-8"))["results"]
    assert {r["status"] for r in rows} == {"error: no result within 0.5 s (hung?); worker killed"}


def test_tables_and_watch_lines_on_an_ascii_stdout_escape_what_it_cannot_write(
    tmp_path: Path,
) -> None:
    """``PYTHONIOENCODING=ascii`` (or a Windows code page) and a run named ``ünï 测试``: the
    runs table was a UnicodeEncodeError traceback, and so was ``status --watch --json``."""
    import subprocess

    from procs import ENV, TRAJMON

    db = tmp_path / "u.db"
    record_sim(db, "ünï 测试 run", 1)
    env = {**ENV, "PYTHONIOENCODING": "ascii"}
    for args in (("runs",), ("status", "--watch", "--json")):
        done = subprocess.run(
            [*TRAJMON, *args, "--db", str(db)],
            capture_output=True,
            timeout=60,
            env=env,
            check=False,
        )
        assert done.returncode == 0, done.stderr.decode("ascii", "replace")
        assert done.stdout.isascii()
        assert b"\\u6d4b\\u8bd5 run" in done.stdout
        if "--json" in args:
            assert json.loads(done.stdout)["run_name"] == "ünï 测试 run"


@pytest.mark.parametrize(("age", "shown"), [(0.4, False), (2.4, False), (3.0, True)])
def test_a_watch_line_in_a_log_says_when_the_heartbeat_stopped(
    tmp_path: Path, age: float, shown: bool
) -> None:
    """In a log, ``status --watch`` went on counting ``t=`` from the last heartbeat for up to
    ``stale_after_s`` after the recorder died, looking alive; past half of it, it says so."""
    from trajmon.cli.runs_cmd import watch_line

    db = tmp_path / "w.db"
    record_sim(db, "w", 1)
    with closing(sqlite3.connect(db)) as conn, conn:
        conn.execute("UPDATE runs SET status = 'running', heartbeat_epoch = 1000.0")
    with closing(connect_readonly(db)) as conn:
        doc = run_status(conn, resolve_run(conn, "w"), now=1000.0 + age)
    assert doc["running"] and doc["stale_after_s"] == 5.0
    assert (f" no heartbeat for {age:.1f} s" in watch_line(doc)) is shown, watch_line(doc)


@pytest.mark.parametrize(
    ("text", "said"),
    [
        ("at_s: " + "1" * 5000 + "\n", "a number of 5000 characters is too long to read"),
        ("x: " + "[" * 5000 + "]" * 5000 + "\n", "nested too deeply"),
    ],
)
def test_a_yaml_file_python_cannot_build_is_a_yaml_error_not_a_traceback(
    tmp_path: Path, text: str, said: str
) -> None:
    """Every YAML the tool reads (station, channels, staged config, scenario, fault plan) goes
    through ``read_yaml``: an int of 5000 digits was a bare ValueError, deep nesting a
    RecursionError — tracebacks from every command reading the file."""
    from trajmon.yamlfile import YamlSyntaxError, read_yaml

    path = tmp_path / "f.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(YamlSyntaxError, match=said):
        read_yaml(path)


def test_a_negative_array_count_in_a_reply_says_so() -> None:
    """A count field read as negative was "body truncated: need -16 bytes, have 4"."""
    import struct

    from trajmon.drivers.nanonis_protocol import ProtocolError, unpack_body

    body = struct.pack(">i", -4)
    with pytest.raises(ProtocolError, match=r"^negative size -16 at byte 4 of the body$"):
        unpack_body(["f[]"], body)


@pytest.mark.parametrize(
    ("status", "pid_is_ours", "said"),
    [
        ("completed", True, ""),
        ("running", False, " by a run still recording: stop it, or choose another run name"),
        (
            "running",
            True,
            " by a run still recording in this process: stop it, or choose another run name",
        ),
    ],
)
def test_a_run_name_held_by_a_run_still_recording_says_so(
    tmp_path: Path, status: str, pid_is_ours: bool, said: str
) -> None:
    """A notebook cell run again beside its own first run, still recording, was told only
    "already used in lab.db" — and the docs' advice for that is to delete the database."""
    import os
    import time

    from trajmon import MonitorConfig
    from trajmon.runstore import RunExistsError, prepare_db

    db = tmp_path / "lab.db"
    record_sim(db, "cell", 1)
    pid = os.getpid() if pid_is_ours else os.getpid() + 1
    with closing(sqlite3.connect(db)) as conn, conn:
        conn.execute(
            "UPDATE runs SET status = ?, heartbeat_epoch = ?, pid = ?", (status, time.time(), pid)
        )
    config = MonitorConfig(run_name="cell", db=db)
    with pytest.raises(RunExistsError) as refused:
        prepare_db(config, resume=False)
    assert str(refused.value) == f"run name 'cell' is already used in {db}{said}"


def test_results_cut_off_mid_write_leave_the_earlier_file_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``write_results`` wrote latest.json in place: a harness killed (or a disk filling)
    mid-write left a truncated file, the table of every earlier run lost."""
    from test_review_bench2 import _row

    from benchmarks.report import write_results

    out = tmp_path / "latest.json"
    write_results(out, [_row("writer_throughput", "writer")], {"benchmarks_run": ["writer"]})
    before = out.read_text(encoding="utf-8")
    real = Path.write_text

    def half_then_full_disk(self: Path, text: str, *args: object, **kwargs: object) -> int:
        real(self, text[: len(text) // 2], encoding="utf-8")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Path, "write_text", half_then_full_disk)
    with pytest.raises(OSError, match="No space left"):
        write_results(out, [_row("tcp_4_instruments", "tcp", 6)], {"benchmarks_run": ["tcp"]})
    monkeypatch.undo()
    assert out.read_text(encoding="utf-8") == before
    assert [p.name for p in tmp_path.iterdir()] == ["latest.json"]
