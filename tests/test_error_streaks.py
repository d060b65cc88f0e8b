"""A streak of failed reads of one channel is one ``monitor_errors`` row (src/trajmon/streaks.py).

An outage used to write one row per channel per failed read (~130 rows/s at the defaults);
now a row says where the streak began and why, how many reads it spans and its latest read.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from contextlib import closing
from pathlib import Path
from typing import Any

import anyio
from test_export import FlakyInstrument
from test_live import group_view, text_of
from test_writer import committed, started_writer

from trajmon import ChannelSpec, MonitorConfig, Recorder
from trajmon.cli.runner import group_progress
from trajmon.cli.runs_cmd import _last_error_lines
from trajmon.clock import FakeClock
from trajmon.live import LiveSnapshot
from trajmon.queries import connect_readonly, resolve_run
from trajmon.records import FlaggedSample, GroupStats, MonitorError, Sample
from trajmon.schema import SCHEMA_VERSION, migrate, quote_ident
from trajmon.status import run_status

COLUMNS = "error_idx, dt_s, channel, error_type, message, reads, last_dt_s, last_message"


def failed(idx: int, **errors: tuple[str, str]) -> FlaggedSample:
    """Sample ``idx`` of the signals group in which each named channel's read failed."""
    labels = {"current": "Tunnel Current", "z": "Z Position"}
    values: list[Any] = [None if key in errors else 1.0 for key in labels]
    return FlaggedSample(
        Sample(0, idx, idx * 0.1, 0.001, values),
        tuple(
            MonitorError(idx * 0.1, labels[key], "stm", kind, message)
            for key, (kind, message) in errors.items()
        ),
        (),
    )


def rows(db: Path) -> list[tuple[Any, ...]]:
    with closing(sqlite3.connect(db)) as conn:
        return conn.execute(f"SELECT {COLUMNS} FROM monitor_errors ORDER BY error_idx").fetchall()


def run_errors(db: Path) -> int:
    with closing(sqlite3.connect(db)) as conn:
        return int(conn.execute("SELECT errors FROM runs").fetchone()[0])


async def test_consecutive_failures_of_a_channel_are_one_row_across_commits(
    db_path: Path,
) -> None:
    clock = FakeClock()
    lost = ("ConnectionError", "connection lost")
    waiting = ("ConnectionError", "not connected; next attempt in 0.4 s")
    async with started_writer(db_path, clock) as (writer, sink, _, _):
        await sink.send(Sample(0, 0, 0.0, 0.001, [1.0, 1.0]))
        await sink.send(failed(1, current=lost, z=lost))
        await sink.send(failed(2, current=waiting, z=waiting))
        commits = writer.commits
        await clock.advance(0.25)
        await committed(writer, commits + 1)
        assert rows(db_path) == [
            (0, 0.1, "Tunnel Current", "ConnectionError", "connection lost", 2, 0.2, waiting[1]),
            (1, 0.1, "Z Position", "ConnectionError", "connection lost", 2, 0.2, waiting[1]),
        ]
        assert run_errors(db_path) == 2
        # The next commit continues both rows; Z then reads again, so its next failure is a
        # new row, and so is a failure of another type on the current.
        await sink.send(failed(3, current=waiting, z=waiting))
        await sink.send(failed(4, current=waiting))
        await sink.send(failed(5, current=("timeout", "no answer within 2.0 s"), z=lost))
        await sink.send(Sample(0, 6, 0.6, 0.001, [1.0, 1.0]))
        await sink.send(failed(7, current=("timeout", "no answer within 2.0 s")))
        commits = writer.commits
        await clock.advance(0.25)
        await committed(writer, commits + 1)
    got = rows(db_path)
    assert [r[0] for r in got] == [0, 1, 2, 3, 4]
    assert [(r[2], r[3], r[1], r[5], r[6]) for r in got] == [
        ("Tunnel Current", "ConnectionError", 0.1, 4, 0.4),
        ("Z Position", "ConnectionError", 0.1, 3, 0.30000000000000004),
        ("Tunnel Current", "timeout", 0.5, 1, 0.5),
        ("Z Position", "ConnectionError", 0.5, 1, 0.5),
        ("Tunnel Current", "timeout", 0.7000000000000001, 1, 0.7000000000000001),
    ]
    assert got[2][4] == got[2][7] == "no answer within 2.0 s", "one read: last = first"
    assert run_errors(db_path) == 5


async def test_values_that_do_not_fit_on_every_read_are_one_row(db_path: Path) -> None:
    clock = FakeClock()
    async with started_writer(db_path, clock) as (_, sink, _, _):
        for idx in range(6):
            await sink.send(Sample(0, idx, idx * 0.1, 0.001, [f"overload {idx}", 1.0]))
            await anyio.lowlevel.checkpoint()
    ((_, dt, channel, kind, message, reads, last_dt, last_message),) = rows(db_path)
    assert (dt, channel, kind, reads, last_dt) == (0.0, "Tunnel Current", "bad_value", 6, 0.5)
    assert message.startswith("'overload 0' is not a float")
    assert last_message.startswith("'overload 5' is not a float")


def version_1(
    db: Path,
    errors: Iterable[tuple[int, float, str]] = ((0, 1.5, "first"), (1, 1.6, "second")),
) -> None:
    """A database as trajmon with schema version 1 left it, run 'old': one row per failed read
    (``errors``: error_idx, dt_s, message, each a TimeoutError of Bias)."""
    with closing(sqlite3.connect(db)) as conn:
        migrate(conn)
        conn.execute("DROP INDEX monitor_errors_by_last_read")  # added in version 2, on them
        for column in ("reads", "last_dt_s", "last_message"):
            conn.execute(f"ALTER TABLE monitor_errors DROP COLUMN {column}")
        conn.execute(
            "INSERT INTO runs (run_id, run_name, status, run_start_utc, run_start_epoch,"
            " rotate_entries, window_before_s, window_after_s, commit_interval_s,"
            " stale_after_s, config_json, trajmon_version)"
            " VALUES (1, 'old', 'completed', '2026-01-01T00:00:00+00:00', 1767225600.0,"
            " 6000, 2.5, 2.5, 0.25, 5.0, '{}', '0.1')"
        )
        conn.executemany(
            "INSERT INTO monitor_errors VALUES (1, ?, ?, 'Bias', 'stm', 'TimeoutError', ?)",
            errors,
        )
        conn.execute("PRAGMA user_version = 1")
        conn.commit()


def test_a_version_1_file_is_read_as_it_is_and_upgraded_in_place(tmp_path: Path) -> None:
    db = tmp_path / "v1.db"
    version_1(db)
    with closing(connect_readonly(db)) as conn:  # a reader cannot migrate: it reads v1 as is
        last = run_status(conn, resolve_run(conn, "old"))["last_error"]
    assert last == {
        "dt_s": 1.6,
        "channel": "Bias",
        "instrument": "stm",
        "error_type": "TimeoutError",
        "message": "second",
        "reads": 1,
        "last_dt_s": 1.6,
        "last_message": "second",
    }
    with closing(sqlite3.connect(db)) as conn:
        assert migrate(conn) == 1
        assert migrate(conn) == SCHEMA_VERSION, "a second migration finds nothing to do"
        (version,) = conn.execute("PRAGMA user_version").fetchone()
        got = conn.execute(f"SELECT {COLUMNS} FROM monitor_errors ORDER BY error_idx").fetchall()
    assert version == SCHEMA_VERSION
    # Streaks of one read, not rewritten (ALTER TABLE only): NULL stands for dt_s and message.
    assert got == [
        (0, 1.5, "Bias", "TimeoutError", "first", 1, None, None),
        (1, 1.6, "Bias", "TimeoutError", "second", 1, None, None),
    ]
    with closing(connect_readonly(db)) as conn:
        assert run_status(conn, resolve_run(conn, "old"))["last_error"] == last


def assert_streaks_are_the_gaps(db: Path, table: str, channel: str) -> list[tuple[Any, ...]]:
    """Each of ``channel``'s error rows spans exactly ``reads`` samples of ``table``, all NULL
    for it, and together they are every NULL of the channel (the simulators never answer
    None). Returns the rows (dt_s, reads, last_dt_s)."""
    col, tab = quote_ident(channel), quote_ident(table)
    with closing(sqlite3.connect(db)) as conn:
        streaks = conn.execute(
            "SELECT dt_s, reads, last_dt_s FROM monitor_errors WHERE channel = ?"
            " ORDER BY error_idx",
            (channel,),
        ).fetchall()
        for dt_s, reads, last_dt_s in streaks:
            spanned, gaps = conn.execute(
                f"SELECT count(*), count(*) - count({col}) FROM {tab} WHERE dt_s BETWEEN ? AND ?",
                (dt_s, last_dt_s),
            ).fetchone()
            assert spanned == gaps == reads, (channel, dt_s, reads, last_dt_s, spanned, gaps)
        (nulls,) = conn.execute(f"SELECT count(*) - count({col}) FROM {tab}").fetchone()
    assert sum(reads for _, reads, _ in streaks) == nulls, (channel, streaks, nulls)
    return streaks


def test_status_text_says_how_long_the_latest_streak_lasted() -> None:
    one = {
        "dt_s": 1.5,
        "channel": "Bias",
        "instrument": "stm",
        "error_type": "TimeoutError",
        "message": "Bias.Get timed out",
        "reads": 1,
        "last_dt_s": 1.5,
        "last_message": "Bias.Get timed out",
    }
    outage = {
        **one,
        "error_type": "ConnectionError",
        "message": "connection lost",
        "reads": 321,
        "last_dt_s": 33.1,
        "last_message": "not connected; next reconnect attempt in 0.2 s",
    }
    assert [line.plain for line in _last_error_lines(one)] == [
        "last error at 1.50 s on Bias (stm): TimeoutError: Bias.Get timed out"
    ]
    assert [line.plain for line in _last_error_lines(outage)] == [
        "last error: 321 failed reads in a row on Bias (stm) from 1.50 s to 33.10 s:"
        " ConnectionError: connection lost",
        "  latest: not connected; next reconnect attempt in 0.2 s",
    ]


def test_the_progress_line_names_failed_reads_once_there_are_any() -> None:
    healthy = GroupStats(0, "signals", 0.1, samples_read=51)
    assert group_progress(healthy, 10.2) == "signals 51 (10.2/s, missed 0)"
    outage = GroupStats(0, "signals", 0.1, samples_read=400, failed_reads=321)
    assert group_progress(outage, 10.0) == "signals 400 (10.0/s, missed 0, failed 321)"


def test_the_live_view_says_why_a_group_fails() -> None:
    failing = group_view(
        [("Tunnel Current", "A", None)],
        last_error=(12.3, "Tunnel Current", "ConnectionError", "connection lost\nreconnecting"),
    )
    recovered = group_view(
        [("Bias", "V", 0.1)],
        name="specs",
        kind="spec",
        last_error=(4.0, "Bias", "TimeoutError", "Bias.Get timed out"),
    )
    healthy = group_view([("Z", "m", 1e-9)], name="other", failed_reads=0)
    out = text_of(LiveSnapshot("r", 12.4, 0, 100, 0, [failing, recovered, healthy], []))
    assert (
        "signals: failing at 12.3 s on Tunnel Current: ConnectionError: connection lost"
        " reconnecting" in out
    )
    assert "specs: last error at 4.0 s on Bias: TimeoutError: Bias.Get timed out" in out
    assert "other:" not in out


async def test_a_group_keeps_its_latest_failed_read_for_the_live_view(db_path: Path) -> None:
    flaky = FlakyInstrument("flaky")  # reads 3 to 6 of level fail
    channels = [
        ChannelSpec(label="Level", source="flaky.level", kind="signal"),
        ChannelSpec(label="Knob", source="flaky.knob", kind="spec"),
    ]
    config = MonitorConfig(
        run_name="flaky", db=db_path, channels=channels, interval_s=0.01, duration_s=0.15
    )
    recorder = Recorder(config, {"flaky": flaky})
    try:
        assert (await recorder.run()).status == "completed"
    finally:
        flaky.close()
    signals, specs = recorder.stats
    assert signals.failed_reads == 4 and specs.last_error is None
    assert signals.last_error is not None
    dt_s, channel, kind, message = signals.last_error
    assert (channel, kind) == ("Level", "RuntimeError") and "overload 6" in message
    assert rows(db_path)[0][5:7] == (4, dt_s), "the same read as the streak's last"
