"""The single writer: drains the bounded queue into SQLite in batched transactions.

One aiosqlite connection (one thread) owns every write, so there is never a second writer to
wait for. Items are committed every ``commit_interval_s`` — or sooner when ``commit_rows`` are
waiting — which bounds what a SIGKILL can lose to one interval. Each commit also beats the run's
heartbeat and copies the live counters onto the run, so another process can tell a running run
from a crashed one and see exactly what was read and what was committed.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiosqlite
import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from .channels import PollGroup, encoder_for
from .clock import Clock, utc_iso
from .records import ActionEvent, GroupStats, MonitorError, Sample
from .schema import (
    ACTION_INSERT,
    ERROR_INSERT,
    GROUP_UPDATE,
    RUN_BEAT,
    SEGMENT_UPSERT,
    insert_sql,
    segment_spans,
)

__all__ = ["QueueSink", "StorageError", "Writer", "WriterTarget"]

Item = Sample | ActionEvent | MonitorError


class StorageError(RuntimeError):
    """SQLite refused a write (disk full, read-only file, locked by another writer)."""


@dataclass(slots=True)
class WriterTarget:
    """Where and what one run writes; built by the recorder once the run row exists."""

    run_id: int
    t0_mono: float
    groups: dict[int, PollGroup]
    tables: dict[int, str]
    rotate_entries: int
    stats: dict[int, GroupStats]
    channel_types: dict[int, str]
    next_error_idx: int = 0
    actions: int = 0
    errors: int = 0


class _GroupBuffer:
    __slots__ = ("all_float", "encoders", "rows", "sql", "width")

    def __init__(self, group: PollGroup, table: str) -> None:
        self.sql = insert_sql(table, group)
        self.encoders = tuple(encoder_for(c.value_type) for c in group.channels)
        self.width = len(self.encoders)
        # Every column REAL: a row of plain floats can be bound as it is (see _plain_floats).
        self.all_float = all(c.value_type == "float" for c in group.channels)
        self.rows: list[tuple[Any, ...]] = []


def _plain_floats(values: list[Any]) -> bool:
    """True when every value binds to a REAL column unchanged: a Python ``float`` (not a numpy
    scalar, not None) that is neither NaN (SQLite would store NULL) nor ±0.0 (-0.0 would lose
    its sign). Those rare values take the per-value encoders, which keep their exact bits."""
    for v in values:  # noqa: SIM110 - a loop: all() over a generator is ~2x slower per row
        if type(v) is not float or v != v or v == 0.0:
            return False
    return True


class Writer:
    """Owns the run's aiosqlite connection and the receive side of the bounded queue."""

    def __init__(
        self,
        conn: aiosqlite.Connection,
        target: WriterTarget,
        receive: MemoryObjectReceiveStream[Item],
        *,
        clock: Clock,
        commit_interval_s: float,
        commit_rows: int,
        heartbeat_s: float = 1.0,
    ) -> None:
        self._conn = conn
        self._target = target
        self._receive = receive
        self._clock = clock
        self._interval = commit_interval_s
        self._rows = commit_rows
        self._heartbeat_s = min(heartbeat_s, 1.0)
        self._buffers = {
            gid: _GroupBuffer(group, target.tables[gid]) for gid, group in target.groups.items()
        }
        self._wake_scope: anyio.CancelScope | None = None
        self._last_beat = -float("inf")
        self.commits = 0
        #: Items taken off the queue so far; with the sink's count of sends this is the queue's
        #: depth, for free (the stream's ``statistics()`` builds an object on every call).
        self.taken = 0
        self._pending_errors: list[MonitorError] = []
        self._committed = anyio.Event()

    def wake(self) -> None:
        """Commit now rather than at the next interval (queue filling up, or shutting down)."""
        if self._wake_scope is not None:
            self._wake_scope.cancel()

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Commit until the queue is closed and empty; raises :class:`StorageError` on failure."""
        task_status.started()
        with self._receive:  # owned here: closed when done, so blocked senders never hang
            await self._loop()

    async def _loop(self) -> None:
        next_commit = self._clock.monotonic()
        while True:
            items, ended = self._take(self._rows)
            now = self._clock.monotonic()
            if items or ended or now - self._last_beat >= self._heartbeat_s:
                await self._commit(items)
            if ended:
                return
            if len(items) >= self._rows:
                continue  # a backlog: keep committing without sleeping
            next_commit = max(next_commit + self._interval, self._clock.monotonic())
            # Beat on time even with a long commit interval: a late beat reads as a crash.
            deadline = min(next_commit, self._last_beat + self._heartbeat_s)
            with anyio.CancelScope() as scope:
                self._wake_scope = scope
                await self._clock.sleep_until(deadline)
            self._wake_scope = None

    def _take(self, limit: int) -> tuple[list[Item], bool]:
        items: list[Item] = []
        receive = self._receive
        ended = False
        while len(items) < limit:
            try:
                items.append(receive.receive_nowait())
            except anyio.WouldBlock:
                break
            except anyio.EndOfStream:
                ended = True
                break
        self.taken += len(items)
        return items, ended

    def _encode(self, buf: _GroupBuffer, sample: Sample) -> tuple[Any, ...]:
        values = sample.values
        if buf.all_float and len(values) == buf.width and _plain_floats(values):
            return (sample.sample_idx, sample.dt_s, sample.read_s, *values)  # the common case
        try:
            return (
                sample.sample_idx,
                sample.dt_s,
                sample.read_s,
                *[
                    None if v is None else enc(v)
                    for enc, v in zip(buf.encoders, sample.values, strict=True)
                ],
            )
        except (TypeError, ValueError, OverflowError):
            return self._encode_slow(buf, sample)

    def _encode_slow(self, buf: _GroupBuffer, sample: Sample) -> tuple[Any, ...]:
        """A value that does not fit its channel's type is stored as a gap plus an error row."""
        out: list[Any] = [sample.sample_idx, sample.dt_s, sample.read_s]
        group = self._target.groups[sample.group_id]
        for enc, value, channel in zip(buf.encoders, sample.values, group.channels, strict=True):
            try:
                out.append(None if value is None else enc(value))
            except (TypeError, ValueError, OverflowError) as exc:
                out.append(None)
                self._pending_errors.append(
                    MonitorError(
                        sample.dt_s,
                        channel.label,
                        channel.instrument,
                        "bad_value",
                        f"{value!r} is not a {channel.value_type}: {exc}",
                    )
                )
        return tuple(out)

    def _encode_action(self, event: ActionEvent) -> tuple[Any, Any]:
        """Old and new value as the channel's column stores them; untyped if they do not fit."""
        enc = encoder_for(self._target.channel_types[event.channel_id])  # type: ignore[arg-type]
        try:
            return enc(event.old_value), enc(event.new_value)
        except (TypeError, ValueError, OverflowError):
            untyped = encoder_for("any")
            return untyped(event.old_value), untyped(event.new_value)

    async def _commit(self, items: Sequence[Item]) -> None:
        target = self._target
        run_id = target.run_id
        self._pending_errors = []
        actions: list[tuple[Any, ...]] = []
        encode, buffers = self._encode, self._buffers  # hoisted: this loop runs once per row
        for item in items:
            if type(item) is Sample:
                buf = buffers[item.group_id]
                buf.rows.append(encode(buf, item))
            elif type(item) is ActionEvent:
                old, new = self._encode_action(item)
                actions.append(
                    (
                        run_id,
                        item.action_idx,
                        item.dt_s,
                        item.sample_idx,
                        item.prev_dt_s,
                        item.detected_at_utc,
                        item.spec_label,
                        item.channel_id,
                        old,
                        new,
                        item.delta,
                        item.window_start_s,
                        item.window_end_s,
                    )
                )
            elif type(item) is MonitorError:
                self._pending_errors.append(item)
        errors = []
        for err in self._pending_errors:
            errors.append(
                (
                    run_id,
                    target.next_error_idx,
                    err.dt_s,
                    err.channel,
                    err.instrument,
                    err.error_type,
                    err.message,
                )
            )
            target.next_error_idx += 1
        try:
            await self._write(actions, errors)
        except sqlite3.Error as exc:
            for buf in self._buffers.values():
                buf.rows.clear()
            raise StorageError(f"cannot write to the database: {exc}") from exc
        target.actions += len(actions)
        target.errors += len(errors)

    async def _write(self, actions: list[tuple[Any, ...]], errors: list[tuple[Any, ...]]) -> None:
        target, conn = self._target, self._conn
        run_id, rotate = target.run_id, target.rotate_entries
        now = self._clock.monotonic()
        wall = self._clock.wall()
        await conn.execute("BEGIN IMMEDIATE")
        try:
            committed: dict[int, int] = {}
            for gid, buf in self._buffers.items():
                if not buf.rows:
                    continue
                await conn.executemany(buf.sql, buf.rows)
                await conn.executemany(SEGMENT_UPSERT, segment_spans(run_id, gid, buf.rows, rotate))
                committed[gid] = len(buf.rows)
            if actions:
                await conn.executemany(ACTION_INSERT, actions)
            if errors:
                await conn.executemany(ERROR_INSERT, errors)
            group_rows = []
            for gid, stats in target.stats.items():
                buf = self._buffers[gid]
                done = stats.samples_committed + committed.get(gid, 0)
                group_rows.append(
                    (
                        done,
                        stats.samples_read,
                        stats.missed_ticks,
                        stats.failed_reads,
                        stats.read_s_sum,
                        stats.read_s_max,
                        stats.lateness_max_s,
                        buf.rows[0][1] if buf.rows else None,
                        buf.rows[-1][1] if buf.rows else None,
                        run_id,
                        gid,
                    )
                )
            await conn.executemany(GROUP_UPDATE, group_rows)
            await conn.execute(
                RUN_BEAT,
                (
                    utc_iso(wall),
                    wall,
                    now - target.t0_mono,
                    target.actions + len(actions),
                    target.errors + len(errors),
                    run_id,
                ),
            )
            await conn.execute("COMMIT")
        except BaseException:
            try:
                with anyio.CancelScope(shield=True):
                    await conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass
            raise
        for gid, count in committed.items():
            target.stats[gid].samples_committed += count
            self._buffers[gid].rows.clear()
        self._last_beat = now
        self.commits += 1
        self._committed.set()
        self._committed = anyio.Event()

    async def wait_commits(self, count: int) -> None:
        """Wait until ``count`` transactions have been committed in total (for tests and tools)."""
        while self.commits < count:
            await self._committed.wait()


class QueueSink:
    """The pollers' side of the bounded queue.

    A full queue makes ``send`` wait — the pollers then fall behind their schedule and count
    missed ticks — so memory is bounded by ``queue_size`` however slow the disk gets.
    """

    def __init__(self, send: MemoryObjectSendStream[Item], writer: Writer, wake_at: int) -> None:
        self._send = send
        self._writer = writer
        self._wake_at = wake_at
        self.sent = 0

    @property
    def depth(self) -> int:
        return self._send.statistics().current_buffer_used

    def send_nowait(self, item: Item) -> bool:
        """Enqueue without waiting; False (nothing sent) when the queue is full.

        The pollers' fast path: a plain call — no checkpoint, no cancel scope per item.
        """
        try:
            self._send.send_nowait(item)
        except anyio.WouldBlock:
            return False
        self._sent_one()
        return True

    async def send(self, item: Item) -> None:
        if not self.send_nowait(item):
            self._writer.wake()
            await self._send.send(item)
            self._sent_one()

    def _sent_one(self) -> None:
        self.sent += 1
        if self.sent - self._writer.taken >= self._wake_at:  # the queue's depth, counted
            self._writer.wake()

    def close(self) -> None:
        self._send.close()
        self._writer.wake()


async def open_connection(path: Path) -> aiosqlite.Connection:
    """The writer's connection: WAL so readers never block it, explicit transactions."""
    conn = await aiosqlite.connect(path, isolation_level=None)
    try:
        await conn.execute("PRAGMA busy_timeout = 2000")
        cursor = await conn.execute("PRAGMA journal_mode = WAL")
        row = await cursor.fetchone()
        if row is None or str(row[0]).lower() != "wal":
            raise StorageError(f"{path}: cannot switch the database to WAL mode (got {row!r})")
        await conn.execute("PRAGMA synchronous = NORMAL")
    except BaseException:
        await conn.close()
        raise
    return conn
