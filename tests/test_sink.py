"""The bounded queue in front of the real writer: bound in samples, batches, fairness, shutdown."""

from __future__ import annotations

import math
import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any

import anyio
import pytest
from test_writer import committed, count, sample, started_writer

from trajmon.clock import FakeClock
from trajmon.connection import StorageError
from trajmon.records import Sample, SampleBatch
from trajmon.sink import QueueSink


def batch(gid: int, first: int, n: int) -> SampleBatch:
    return SampleBatch(gid, [sample(gid, i, float(i), 0.5) for i in range(first, first + n)])


async def test_batches_are_written_like_single_samples(db_path: Path) -> None:
    clock = FakeClock()
    async with started_writer(db_path, clock, queue=100) as (_, sink, target, _):
        await sink.send(batch(0, 0, 30))
        await sink.send(sample(0, 30, 30.0, 0.5))
        await sink.send(batch(0, 31, 9))
        target.stats[0].samples_read += 40
    with closing(sqlite3.connect(db_path)) as conn:
        rows = conn.execute('SELECT sample_idx, "Tunnel Current" FROM "w/signals"').fetchall()
        samples, read = conn.execute(
            "SELECT samples, samples_read FROM poll_groups WHERE group_id = 0"
        ).fetchone()
    assert rows == [(i, float(i)) for i in range(40)]
    assert samples == read == 40


async def test_bound_counts_samples_not_items(db_path: Path) -> None:
    clock = FakeClock()
    async with started_writer(db_path, clock, queue=50, commit_rows=1000) as (_, sink, _, _):
        assert sink.send_nowait(batch(0, 0, 30))
        assert sink.depth == 30
        assert not sink.send_nowait(batch(0, 30, 21)), "51 samples do not fit a bound of 50"
        assert sink.depth == 30, "a refused batch sends nothing"
        assert sink.send_nowait(batch(0, 30, 20))
        assert sink.depth == 50
        assert not sink.send_nowait(sample(0, 50, 1.0, 1.0))


async def test_a_batch_goes_in_as_room_is_made_and_never_exceeds_the_bound(
    db_path: Path,
) -> None:
    clock = FakeClock()
    depths: list[int] = []
    async with started_writer(db_path, clock, queue=40, commit_rows=10) as (writer, sink, _, _):
        sink.send_nowait(batch(0, 0, 35))
        done = anyio.Event()

        async def send_big() -> None:
            await sink.send(batch(0, 35, 100))  # more than the whole bound
            done.set()

        async with anyio.create_task_group() as tg:
            tg.start_soon(send_big)
            while not done.is_set():
                depths.append(sink.depth)
                commits = writer.commits
                await clock.advance(0.25)
                await committed(writer, commits + 1)
        assert max(depths) <= 40
    assert count(db_path, "w/signals") == 135


class ManualWriter:
    """The sink's side of the writer (``taken``, ``stopped``, ``wake``, ``room``), taking only
    when the test says so: the order in which waiting senders are served is then exact."""

    def __init__(self, receive: Any) -> None:
        self.receive = receive
        self.taken = 0
        self.stopped = False
        self._room = anyio.Event()

    def wake(self) -> None:
        pass

    def room(self) -> anyio.Event:
        return self._room

    def take(self, n: int) -> None:
        for _ in range(n):
            item = self.receive.receive_nowait()
            self.taken += len(item.samples) if isinstance(item, SampleBatch) else 1
        self._room.set()
        self._room = anyio.Event()


async def test_waiting_senders_are_served_in_arrival_order() -> None:
    """A poller of small items must not starve one waiting with a batch (and vice versa)."""
    send, receive = anyio.create_memory_object_stream[Any](math.inf)
    with send, receive:
        await _served_in_order(send, ManualWriter(receive))


async def _served_in_order(send: Any, writer: ManualWriter) -> None:
    sink = QueueSink(send, writer, bound=20, wake_at=1000)  # type: ignore[arg-type]
    order: list[str] = []
    for i in range(20):
        assert sink.send_nowait(sample(0, i, 1.0))

    async def sender(name: str, item: Sample | SampleBatch) -> None:
        await sink.send(item)
        order.append(name)

    async with anyio.create_task_group() as tg:
        tg.start_soon(sender, "batch of 15", batch(0, 20, 15))
        await anyio.wait_all_tasks_blocked()
        tg.start_soon(sender, "spec sample", sample(1, 0, 1.0))
        await anyio.wait_all_tasks_blocked()
        assert not sink.send_nowait(sample(1, 1, 2.0)), "no overtaking on the fast path"
        writer.take(5)  # room for 5: the batch's first 5 go in, it keeps its turn
        await anyio.wait_all_tasks_blocked()
        assert order == [] and sink.depth == 20
        writer.take(10)
        await anyio.wait_all_tasks_blocked()
        assert order == ["batch of 15"] and sink.depth == 20
        writer.take(1)
        await anyio.wait_all_tasks_blocked()
        assert order == ["batch of 15", "spec sample"]
    writer.take(1)
    assert sink.send_nowait(sample(1, 2, 3.0)), "nobody waits any more: the fast path is open"


async def test_a_sender_waiting_for_room_fails_when_the_writer_stops(db_path: Path) -> None:
    clock = FakeClock()
    refused = anyio.Event()

    async def blocked_send(sink: QueueSink) -> None:
        with pytest.raises(anyio.BrokenResourceError):
            await sink.send(sample(0, 10, 1.0, 1.0))
        refused.set()

    with pytest.raises(ExceptionGroup) as info:
        async with started_writer(db_path, clock, queue=10) as (_, sink, _, tg):
            with closing(sqlite3.connect(db_path)) as foreign:
                foreign.execute("BEGIN IMMEDIATE")  # the writer's next commit fails
                assert sink.send_nowait(batch(0, 0, 10))
                await clock.advance(0.25)  # taken; the commit now waits for the lock, then fails
                assert sink.depth == 0
                assert sink.send_nowait(batch(0, 10, 10))
                tg.start_soon(blocked_send, sink)  # finds the queue full: waits for room
                with anyio.fail_after(30):
                    await anyio.sleep_forever()  # the writer's failure cancels this
    assert info.group_contains(StorageError)
    assert refused.is_set(), "the waiting sender was told, not left hanging"
