"""The writer in simulated time: batching, draining, heartbeat, segments, storage faults."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, closing
from pathlib import Path
from typing import Any

import anyio
import pytest

from trajmon.channels import Channel, PollGroup
from trajmon.checkpoint import AUTOCHECKPOINT_PAGES, Checkpoints
from trajmon.clock import FakeClock
from trajmon.config import MonitorConfig
from trajmon.connection import (
    StorageError,
    immediate_transaction,
    on_connection_thread,
    open_connection,
)
from trajmon.records import ActionEvent, FlaggedSample, MonitorError, Sample, SampleBatch
from trajmon.runstore import NewRun, create_run, finish_run
from trajmon.schema import migrate
from trajmon.sink import QueueSink, open_queue
from trajmon.writer import Writer, WriterTarget

SIGNALS = PollGroup(
    "signals",
    "signal",
    0.1,
    (
        Channel("Tunnel Current", "signal", "stm.current", "stm", "signals", "A", "float"),
        Channel("Z Position", "signal", "stm.z_position", "stm", "signals", "m", "float"),
    ),
)
SPECS = PollGroup(
    "specs",
    "spec",
    0.1,
    (Channel("Bias", "spec", "stm.bias", "stm", "specs", "V", "float"),),
)


@asynccontextmanager
async def started_writer(
    db: Path,
    clock: FakeClock,
    *,
    rotate: int = 4,
    commit_rows: int = 1000,
    queue: int = 100,
    heartbeat_s: float = 1.0,
    groups: tuple[PollGroup, ...] = (),
) -> AsyncIterator[tuple[Writer, QueueSink, WriterTarget, Any]]:
    """The real queue and writer on a new run of ``groups`` (default: SIGNALS and SPECS);
    closed, and so drained, when the block ends."""
    cfg = MonitorConfig(run_name="w", db=db, rotate_entries=rotate, commit_rows=commit_rows)
    with closing(sqlite3.connect(db)) as setup:
        migrate(setup)
    conn = await open_connection(db)
    try:
        target = await create_run(
            conn,
            NewRun(
                "w", clock.wall(), clock.monotonic(), cfg, list(groups or (SIGNALS, SPECS)), None
            ),
        )
        writer, sink = open_queue(
            conn,
            target,
            clock=clock,
            commit_interval_s=0.25,
            commit_rows=commit_rows,
            queue_size=queue,
            heartbeat_s=heartbeat_s,
        )
        async with anyio.create_task_group() as tg:
            await tg.start(writer.run)
            await committed(writer, 1)  # the first heartbeat, at start
            try:
                yield writer, sink, target, tg
            finally:
                sink.close()
    finally:
        await conn.close()


async def committed(writer: Writer, total: int) -> None:
    """Wait (bounded, in real time only as a guard) until ``total`` commits happened."""
    with anyio.fail_after(10):
        await writer.wait_commits(total)


def count(db: Path, table: str) -> int:
    with closing(sqlite3.connect(db)) as conn:
        return int(conn.execute(f'SELECT count(*) FROM "{table}"').fetchone()[0])


def sample(gid: int, idx: int, *values: Any) -> Sample:
    return Sample(gid, idx, idx * 0.1, 0.001, list(values))


async def test_commits_on_interval_not_per_item(db_path: Path) -> None:
    clock = FakeClock()
    async with started_writer(db_path, clock) as (writer, sink, target, _):
        for i in range(5):
            await sink.send(sample(0, i, 1e-10 * i, 2e-9))
            target.stats[0].samples_read += 1
        await anyio.lowlevel.checkpoint()
        assert count(db_path, "w/signals") == 0, "nothing is committed before the interval"
        commits = writer.commits
        await clock.advance(0.25)
        await committed(writer, commits + 1)
        assert count(db_path, "w/signals") == 5
        commits = writer.commits
        await sink.send(sample(0, 5, 0.0, 0.0))
        await clock.advance(0.1)
        assert writer.commits == commits, "no commit before the next interval"
        await clock.advance(0.2)
        await committed(writer, commits + 1)
        assert count(db_path, "w/signals") == 6


async def test_a_source_pulled_before_a_commit_makes_that_commit(db_path: Path) -> None:
    """A signal group's batch waits on its thread until the writer pulls it; the poller the
    pull wakes must enqueue before the writer takes, or the batch misses the commit."""
    clock = FakeClock()
    async with started_writer(db_path, clock) as (writer, sink, _, tg):
        held = [sample(0, i, 0.1 * i, 1.0) for i in range(3)]
        woken = anyio.Event()

        def pull() -> bool:
            if not held:
                return False
            woken.set()
            return True

        async def poller() -> None:  # as Poller._run_threaded: woken, it takes and enqueues
            await woken.wait()
            await sink.send(SampleBatch(0, held.copy()))
            held.clear()

        tg.start_soon(poller)
        remove = sink.add_puller(pull)
        await anyio.lowlevel.checkpoint()
        commits = writer.commits
        await clock.advance(0.25)
        await committed(writer, commits + 1)
        assert count(db_path, "w/signals") == 3, "pulled, enqueued and committed in one commit"
        remove()
        assert writer.pullers == []


async def test_row_cap_commits_early(db_path: Path) -> None:
    clock = FakeClock()
    async with started_writer(db_path, clock, commit_rows=10) as (writer, sink, _, _):
        commits = writer.commits
        for i in range(10):
            await sink.send(sample(0, i, 1.0, 2.0))
        await committed(writer, commits + 1)
        assert clock.monotonic() == 1000.0
        assert count(db_path, "w/signals") == 10, "reaching commit_rows commits without waiting"


async def test_close_drains_everything(db_path: Path) -> None:
    clock = FakeClock()
    async with started_writer(db_path, clock, queue=500) as (_, sink, target, _):
        for i in range(300):
            await sink.send(sample(0, i, float(i), 0.5))
            target.stats[0].samples_read += 1
        await sink.send(
            FlaggedSample(
                sample(1, 10, None),
                (MonitorError(1.0, "Bias", "stm", "timeout", "no answer"),),
                (ActionEvent(0, 1.0, 10, 0.9, "t", "Bias", 2, 0.1, 0.2, 0.1, -1.5, 3.5),),
            )
        )
    assert count(db_path, "w/signals") == 300
    assert count(db_path, "w/specs") == 1
    assert count(db_path, "actions") == 1
    assert count(db_path, "monitor_errors") == 1
    with closing(sqlite3.connect(db_path)) as conn:
        samples, read = conn.execute(
            "SELECT samples, samples_read FROM poll_groups WHERE group_id = 0"
        ).fetchone()
    assert samples == read == 300


async def test_commits_and_the_run_end_write_the_same_group_counters(db_path: Path) -> None:
    """Every commit and the run's final write fill a group's row through one statement; the end
    adds no rows, so it keeps the first and last ``dt_s`` the commits recorded."""
    clock = FakeClock()
    columns = "samples, samples_read, missed_ticks, failed_reads, first_dt_s, last_dt_s"
    async with started_writer(db_path, clock) as (_, sink, target, _):
        for i in range(3, 8):
            await sink.send(sample(0, i, 1.0, 2.0))
            target.stats[0].samples_read += 1
    with closing(sqlite3.connect(db_path)) as conn:
        after_commits = conn.execute(f"SELECT {columns} FROM poll_groups WHERE group_id = 0")
        assert after_commits.fetchone() == (5, 5, 0, 0, 3 * 0.1, 7 * 0.1)
    target.stats[0].samples_read += 2  # read, never committed: the end records them as read
    target.stats[0].missed_ticks = 4
    conn = await open_connection(db_path)
    try:
        await finish_run(
            conn,
            target,
            status="completed",
            end_dt_s=1.0,
            end_epoch=clock.wall(),
            lost_samples=2,
            message=None,
        )
    finally:
        await conn.close()
    with closing(sqlite3.connect(db_path)) as check:
        rows = check.execute(f"SELECT group_id, {columns} FROM poll_groups ORDER BY group_id")
        assert rows.fetchall() == [(0, 5, 7, 4, 0, 3 * 0.1, 7 * 0.1), (1, 0, 0, 0, 0, None, None)]


async def test_segments_index_and_generated_segment_id(db_path: Path) -> None:
    clock = FakeClock()
    async with started_writer(db_path, clock, rotate=4) as (writer, sink, _, _):
        for i in range(10):
            await sink.send(sample(0, i, 0.0, 0.0))
        await clock.advance(0.25)
        await committed(writer, 2)
        for i in range(10, 13):
            await sink.send(sample(0, i, 0.0, 0.0))
    with closing(sqlite3.connect(db_path)) as conn:
        segs = conn.execute(
            "SELECT segment_id, first_idx, last_idx, first_dt_s, last_dt_s, rows FROM segments"
            " WHERE group_id = 0 ORDER BY segment_id"
        ).fetchall()
        ids = conn.execute('SELECT sample_idx, segment_id FROM "w/signals"').fetchall()
    assert [s[0] for s in segs] == [0, 1, 2, 3]
    assert segs[2] == (2, 8, 11, pytest.approx(0.8), pytest.approx(1.1), 4)
    assert segs[3][1:3] == (12, 12) and segs[3][5] == 1
    assert all(seg == idx // 4 for idx, seg in ids)


async def test_heartbeat_beats_without_data(db_path: Path) -> None:
    clock = FakeClock()
    async with started_writer(db_path, clock) as (writer, _, _, _):
        for step in range(1, 13):
            await clock.advance(0.25)
            if step % 4 == 0:  # a beat is due each simulated second, data or not
                await committed(writer, 1 + step // 4)
        with closing(sqlite3.connect(db_path)) as conn:
            beat_dt = conn.execute("SELECT heartbeat_dt_s FROM runs").fetchone()[0]
        assert beat_dt >= 2.0, "the writer beats at least once a second even when idle"


@pytest.mark.parametrize("text", ["not a number", "nan", "1.5", b"2.0"])
async def test_bad_value_becomes_gap_plus_error(db_path: Path, text: Any) -> None:
    """Text in a float channel is a fault, even text float() would parse: guessing a number
    from a driver's string would hide the fault (and "nan" would read as a real NaN)."""
    clock = FakeClock()
    async with started_writer(db_path, clock) as (_, sink, _, _):
        await sink.send(sample(0, 0, text, 1.0))
    with closing(sqlite3.connect(db_path)) as conn:
        row = conn.execute('SELECT "Tunnel Current", "Z Position" FROM "w/signals"').fetchone()
        err = conn.execute("SELECT channel, error_type FROM monitor_errors").fetchone()
    assert row == (None, 1.0)
    assert err == ("Tunnel Current", "bad_value")


async def test_storage_fault_raises_storage_error(db_path: Path) -> None:
    clock = FakeClock()
    with pytest.raises(ExceptionGroup) as info:
        async with started_writer(db_path, clock) as (_, sink, _, _):
            with closing(sqlite3.connect(db_path)) as foreign:
                foreign.execute("BEGIN IMMEDIATE")  # a foreign writer holds the lock
                await sink.send(sample(0, 0, 1.0, 1.0))
                with anyio.fail_after(30):
                    await clock.advance(0.25)
                    await anyio.sleep_forever()  # the writer's failure cancels this
    assert info.group_contains(StorageError)


async def test_immediate_transaction_rolls_back_on_error_and_on_cancel(db_path: Path) -> None:
    conn = await open_connection(db_path)
    try:
        await conn.execute("CREATE TABLE t (x)")
        with pytest.raises(ValueError, match="boom"):
            async with immediate_transaction(conn):
                await conn.execute("INSERT INTO t VALUES (1)")
                raise ValueError("boom")
        assert not conn.in_transaction
        with anyio.CancelScope() as scope:
            async with immediate_transaction(conn):
                await conn.execute("INSERT INTO t VALUES (2)")
                scope.cancel()
                await anyio.sleep_forever()
        assert not conn.in_transaction, "left outside any transaction, even when cancelled"
        async with immediate_transaction(conn):
            await conn.execute("INSERT INTO t VALUES (3)")
        rows = await conn.execute_fetchall("SELECT x FROM t")
        assert [tuple(r) for r in rows] == [(3,)]
    finally:
        await conn.close()


async def test_immediate_transaction_keeps_the_first_error(db_path: Path) -> None:
    """The body ended the transaction itself, then failed: the ROLLBACK that follows fails too
    ("no transaction is active"), and the body's error is still the one raised."""
    conn = await open_connection(db_path)
    try:
        with pytest.raises(ValueError, match="first"):
            async with immediate_transaction(conn):
                await conn.execute("COMMIT")
                raise ValueError("first")
    finally:
        await conn.close()


def test_a_growing_log_past_the_backlog_size_is_checkpointed_beside_the_writer(
    tmp_path: Path,
) -> None:
    """trajmon.checkpoint's states, with the log's size given: the writer's own checkpoints
    stay on until a growing log passes the backlog size, then a background checkpoint copies
    it and, once it has caught up, the writer's come back on."""
    db = tmp_path / "log.db"
    with closing(sqlite3.connect(db, isolation_level=None)) as conn:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("CREATE TABLE t (x)")
        conn.execute("INSERT INTO t VALUES (1)")
        sizes = iter([4 << 20, 40 << 20, 44 << 20, 44 << 20, 30 << 20])
        checkpoints = Checkpoints(db, backlog_bytes=32 << 20, wal_size=lambda: next(sizes))
        try:
            assert checkpoints.after_commit(0.0) is None, "4 MiB: the writer's own checkpoints"
            assert checkpoints.after_commit(0.5) is None, "looked at once a second only"
            assert checkpoints.after_commit(1.0) == 0, "40 MiB and growing: a backlog"
            checkpoints.settle()
            assert (checkpoints.backlog, checkpoints.runs, checkpoints.failures) == (True, 1, 0)
            assert checkpoints.after_commit(2.0) == AUTOCHECKPOINT_PAGES, "caught up: back on"
            assert checkpoints.after_commit(3.0) is None, "large but not growing: no backlog"
            assert checkpoints.after_commit(4.0) is None and checkpoints.backlogs == 1
        finally:
            checkpoints.stop()


async def test_the_writer_keeps_sqlites_own_checkpoints_outside_a_backlog(db_path: Path) -> None:
    clock = FakeClock()
    async with started_writer(db_path, clock) as (writer, sink, _, _):
        for step in range(8):  # two seconds of commits: the log was looked at twice
            await sink.send(sample(0, step, 1.0, 2.0))
            await clock.advance(0.25)
        await committed(writer, 3)
        (auto,) = await on_connection_thread(
            writer._conn, lambda db: db.execute("PRAGMA wal_autocheckpoint").fetchone()
        )
        assert writer.checkpoints is not None and not writer.checkpoints.backlog
        assert auto == AUTOCHECKPOINT_PAGES and writer.checkpoints.runs == 0
