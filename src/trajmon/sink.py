"""The pollers' side of the bounded queue between sampling and the writer.

The queue's bound is counted in samples, not queue items: the instrument threads hand samples
over in batches (:class:`~trajmon.records.SampleBatch`), and ``queue_size`` must keep meaning
"at most this many samples wait for the disk" however they are grouped. So the stream itself is
unbounded and :class:`QueueSink` admits an item only while the samples waiting, plus the item's,
fit the bound; the writer's count of samples taken gives the depth with a subtraction.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable

import aiosqlite
import anyio
from anyio.streams.memory import MemoryObjectSendStream

from .clock import Clock
from .records import ActionEvent, FlaggedSample, SampleBatch
from .writer import Item, Writer, WriterTarget

__all__ = ["EventTap", "QueueSink", "Waiters", "open_queue"]


class QueueSink:
    """Enqueues samples, batches, actions and errors, at most ``bound`` samples deep.

    A full queue makes ``send`` wait — the pollers then fall behind their schedule and count
    missed ticks — so memory is bounded by ``bound`` however slow the disk gets.
    """

    def __init__(
        self, send: MemoryObjectSendStream[Item], writer: Writer, *, bound: int, wake_at: int
    ) -> None:
        self._send = send
        self._writer = writer
        self._bound = bound
        self._wake_at = wake_at
        #: Samples sent so far (a batch counts its samples, anything else one).
        self.sent = 0
        self._blocked = 0  # senders waiting for room
        self._turn = anyio.Lock()  # fair: the one waiting longest is served first

    @property
    def depth(self) -> int:
        """Samples in the queue now."""
        return self.sent - self._writer.taken

    def send_nowait(self, item: Item) -> bool:
        """Enqueue without waiting; False (nothing sent) when the queue is full or other senders
        are waiting for room (they go first).

        The pollers' fast path: a plain call — no checkpoint, no cancel scope per item. Raises
        ``anyio.BrokenResourceError`` once the writer has stopped.
        """
        return not self._blocked and self._put(item)

    def _put(self, item: Item) -> bool:
        n = len(item.samples) if type(item) is SampleBatch else 1
        depth = self.sent - self._writer.taken
        if depth + n > self._bound:
            if self._writer.stopped:
                raise anyio.BrokenResourceError
            return False
        self._send.send_nowait(item)
        self.sent += n
        if depth + n >= self._wake_at:
            self._writer.wake()  # enough for a commit: do not wait for the interval
        return True

    async def send(self, item: Item) -> None:
        """Enqueue, waiting for room; waiting senders are served in arrival order.

        A batch goes in as far as there is room, the rest as room is made: a large batch never
        waits for an empty queue, and the bound holds.
        """
        if self.send_nowait(item):
            return
        self._blocked += 1
        try:
            async with self._turn:
                while not self._put(item):
                    room = self._bound - self.depth
                    if type(item) is SampleBatch and room > 0:
                        self._put(SampleBatch(item.group_id, item.samples[:room]))
                        item = SampleBatch(item.group_id, item.samples[room:])
                        continue
                    self._writer.wake()
                    await self._writer.room().wait()
        finally:
            self._blocked -= 1

    def add_puller(self, pull: Callable[[], bool]) -> Callable[[], None]:
        """Have the writer call ``pull`` before each commit (:attr:`Writer.pullers`); returns
        the call that removes it."""
        self._writer.pullers.append(pull)
        return lambda: self._writer.pullers.remove(pull)

    def close(self) -> None:
        self._send.close()
        self._writer.wake()


class Waiters:
    """Whoever waits in :meth:`Recorder.wait_until`: woken by every item, the start and the end."""

    __slots__ = ("event",)

    def __init__(self) -> None:
        self.event: anyio.Event | None = None

    def wake(self) -> None:
        if self.event is not None:
            self.event.set()
            self.event = None

    async def wait(self) -> None:
        if self.event is None:
            self.event = anyio.Event()
        await self.event.wait()


class EventTap:
    """Sees every item on its way to the queue: keeps the last actions for the live view
    (bounded) and wakes whoever waits in :meth:`Recorder.wait_until`."""

    def __init__(self, sink: QueueSink, recent: deque[ActionEvent], changed: Waiters) -> None:
        self._sink = sink
        self._recent = recent
        self._changed = changed

    async def send(self, item: Item) -> None:
        if not self.send_nowait(item):
            await self._sink.send(item)
            self._seen(item)

    def send_nowait(self, item: Item) -> bool:
        """The pollers' fast path (:meth:`QueueSink.send_nowait`); False when the queue is full."""
        if not self._sink.send_nowait(item):
            return False
        self._seen(item)
        return True

    def add_puller(self, pull: Callable[[], bool]) -> Callable[[], None]:
        return self._sink.add_puller(pull)

    def _seen(self, item: Item) -> None:
        if type(item) is FlaggedSample:
            self._recent.extend(item.events)
        self._changed.wake()


def open_queue(
    conn: aiosqlite.Connection,
    target: WriterTarget,
    *,
    clock: Clock,
    commit_interval_s: float,
    commit_rows: int,
    queue_size: int,
    heartbeat_s: float = 1.0,
) -> tuple[Writer, QueueSink]:
    """The writer and the pollers' sink, joined by one stream: the stream itself is unbounded
    and the sink holds it to ``queue_size`` samples; reaching ``commit_rows`` waiting samples
    wakes the writer. The writer owns the receive side (it closes it when it ends)."""
    send, receive = anyio.create_memory_object_stream[Item](math.inf)
    writer = Writer(
        conn,
        target,
        receive,
        clock=clock,
        commit_interval_s=commit_interval_s,
        commit_rows=commit_rows,
        heartbeat_s=heartbeat_s,
    )
    return writer, QueueSink(send, writer, bound=queue_size, wake_at=commit_rows)
