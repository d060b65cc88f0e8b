"""Review of the write path over long and unusual runs: the heartbeat's due time in simulated
time, values whose conversion raises anything, segments at the edges of the index space, a
commit held up by another process's write lock, and a queue far smaller than the batches."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, closing
from pathlib import Path
from typing import Any

import anyio
import numpy as np
import pytest
from test_writer import SIGNALS, committed, started_writer

from trajmon.channels import Channel, PollGroup
from trajmon.clock import FakeClock
from trajmon.records import Sample, SampleBatch
from trajmon.sink import QueueSink
from trajmon.writer import Writer, WriterTarget

COUNTS = PollGroup(
    "counts", "signal", 0.1, (Channel("Count", "signal", "stm.count", "stm", "counts", "", "int"),)
)


@asynccontextmanager
async def writing(
    db: Path, clock: FakeClock, **options: Any
) -> AsyncIterator[tuple[Writer, QueueSink, WriterTarget]]:
    """test_writer's writer, on a run with an int group beside the float one."""
    async with started_writer(db, clock, groups=(SIGNALS, COUNTS), **options) as started:
        yield started[:3]


def batch(gid: int, first: int, count: int, t0_idx: int = 0) -> SampleBatch:
    return SampleBatch(
        gid,
        [
            Sample(gid, i, (i - t0_idx) * 0.1, 0.001, [float(i), 2.0])
            for i in range(first, first + count)
        ],
    )


def query(db: Path, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    with closing(sqlite3.connect(db)) as conn:
        return [tuple(r) for r in conn.execute(sql, args)]


def segments_as_stored_and_as_counted(db: Path, table: str) -> tuple[list[Any], list[Any]]:
    """The segments index of group 0 and the same figures computed from the rows themselves."""
    stored = query(
        db,
        "SELECT segment_id, first_idx, last_idx, first_dt_s, last_dt_s, rows FROM segments"
        " WHERE group_id = 0 ORDER BY segment_id",
    )
    counted = query(
        db,
        f"SELECT segment_id, min(sample_idx), max(sample_idx), min(dt_s), max(dt_s), count(*)"
        f' FROM "{table}" GROUP BY segment_id ORDER BY segment_id',
    )
    return stored, counted


# -- the heartbeat ---------------------------------------------------------------------------


async def test_a_beat_due_where_float_subtraction_rounds_down_is_beaten(db_path: Path) -> None:
    """heartbeat_s 0.3 from monotonic 1000.0: the sleep's deadline is 1000.0 + 0.3, but
    1000.3 - 1000.0 is 0.29999999999995453 < 0.3. The writer woke at its deadline, found the beat
    not due, and slept until that same deadline again: a busy loop with no beat until the clock
    moved on (for ever, in simulated time). The beat is now taken when its deadline comes."""
    clock = FakeClock(start=1000.0)
    assert (1000.0 + 0.3) - 1000.0 < 0.3  # the rounding this test is about
    async with writing(db_path, clock, heartbeat_s=0.3) as (writer, _, _):
        commits = writer.commits
        await clock.advance(0.3)
        await committed(writer, commits + 1)
        (beat,) = query(db_path, "SELECT heartbeat_dt_s FROM runs")[0]
        assert beat == pytest.approx(0.3)
        await clock.advance(0.3)
        await committed(writer, commits + 2)


# -- values no conversion expected -------------------------------------------------------------


class Refuses:
    """A driver's value object whose conversion raises its own exception type."""

    def __float__(self) -> float:
        raise ArithmeticError("no number here")

    def __index__(self) -> int:
        raise ArithmeticError("no number here")

    def __repr__(self) -> str:
        return "Refuses()"


@pytest.mark.parametrize(
    ("gid", "value", "kind"),
    [(0, Refuses(), "float"), (1, Refuses(), "int"), (1, np.ma.masked, "int")],
)
async def test_a_value_whose_conversion_raises_anything_is_a_gap_not_the_runs_end(
    db_path: Path, gid: int, value: Any, kind: str
) -> None:
    """Only TypeError, ValueError and OverflowError were caught: numpy's ``MaskError`` (a masked
    element from an Ints parameter) or any driver object raising its own exception ended the
    whole run as failed ("unexpected error"), every queued sample lost with it. Such a value is
    a bad_value gap with an error row, like any value that does not fit its column."""
    clock = FakeClock()
    async with writing(db_path, clock) as (writer, sink, target):
        values: list[Any] = [value, 1.0] if gid == 0 else [value]
        await sink.send(Sample(gid, 0, 0.0, 0.001, values))
        good: list[Any] = [1.5, 1.0] if gid == 0 else [7]
        await sink.send(Sample(gid, 1, 0.1, 0.001, good))
        target.stats[gid].samples_read += 2
        commits = writer.commits
        await clock.advance(0.25)
        await committed(writer, commits + 1)
    table = "w/signals" if gid == 0 else "w/counts"
    column = "Tunnel Current" if gid == 0 else "Count"
    rows = query(db_path, f'SELECT sample_idx, "{column}" FROM "{table}" ORDER BY sample_idx')
    assert rows == [(0, None), (1, good[0])]
    errors = query(db_path, "SELECT channel, error_type, message FROM monitor_errors")
    assert [(c, t) for c, t, _ in errors] == [(column, "bad_value")]
    assert f"is not a {kind}" in errors[0][2]
    assert query(db_path, "SELECT status, lost_samples FROM runs") == [("running", 0)]


# -- segments at the edges ----------------------------------------------------------------------


@pytest.mark.parametrize("rotate", [1, 2, 7, 2**53])
@pytest.mark.parametrize("first", [0, 2**31 - 3, 2**53 - 5])
async def test_segments_index_matches_the_rows_for_any_rotate_and_index(
    db_path: Path, rotate: int, first: int
) -> None:
    """Batches of 6 that straddle segment boundaries, commits by rows (7) and by interval, a
    clock started after 11 days of uptime and indices past 2**31 and near 2**53: the segments
    index says exactly what a GROUP BY over the rows says, segment_id is sample_idx // rotate,
    and dt_s is relative to the run's start, exact."""
    clock = FakeClock(start=1e6)
    async with writing(db_path, clock, rotate=rotate, commit_rows=7, queue=50) as (_, sink, t):
        for start in range(first, first + 40, 6):
            count = min(6, first + 40 - start)
            await sink.send(batch(0, start, count, t0_idx=first))
            t.stats[0].samples_read += count
            await clock.advance(0.1)
    stored, counted = segments_as_stored_and_as_counted(db_path, "w/signals")
    assert stored == counted
    assert [s[0] for s in stored] == sorted({i // rotate for i in range(first, first + 40)})
    ids = query(db_path, 'SELECT sample_idx, segment_id, dt_s FROM "w/signals" ORDER BY 1')
    assert [i for i, _, _ in ids] == list(range(first, first + 40))
    assert all(seg == idx // rotate for idx, seg, _ in ids)
    assert all(dt == (idx - first) * 0.1 for idx, _, dt in ids)
    assert query(db_path, "SELECT samples, samples_read FROM poll_groups WHERE group_id = 0") == [
        (40, 40)
    ]


# -- another process holds the write lock; the queue is small ----------------------------------


async def test_a_commit_held_by_a_foreign_lock_then_closed_loses_and_repeats_nothing(
    db_path: Path,
) -> None:
    """Another process holds the write lock while samples pile up in a queue smaller than the
    batches; the queue is closed (twice) with a commit possibly waiting for the lock; then the
    lock is released (well inside the 2 s busy timeout). Every sample is committed once, in
    order, the segments index agrees, and nothing is counted lost."""
    clock = FakeClock()
    foreign = sqlite3.connect(db_path, isolation_level=None)
    try:
        async with writing(db_path, clock, rotate=5, commit_rows=4, queue=8) as (w, sink, t):
            foreign.execute("BEGIN IMMEDIATE")
            sent = 0

            async def produce() -> None:
                nonlocal sent
                for start in range(0, 60, 12):  # batches larger than the whole queue
                    await sink.send(batch(0, start, 12))
                    t.stats[0].samples_read += 12
                    sent += 12

            async with anyio.create_task_group() as tg:
                tg.start_soon(produce)
                with anyio.fail_after(10):
                    while sink.depth < 8:  # full: the producer waits for room
                        await clock.advance(0.25)
                assert sent < 60
                foreign.execute("COMMIT")  # the writer's commit goes through now
            sink.close()
            sink.close()
            assert w.commits >= 1
    finally:
        foreign.close()
    rows = query(db_path, 'SELECT sample_idx FROM "w/signals" ORDER BY rowid')
    assert [r[0] for r in rows] == list(range(60))
    stored, counted = segments_as_stored_and_as_counted(db_path, "w/signals")
    assert stored == counted and sum(s[5] for s in stored) == 60
    assert query(db_path, "SELECT samples, samples_read FROM poll_groups WHERE group_id = 0") == [
        (60, 60)
    ]
