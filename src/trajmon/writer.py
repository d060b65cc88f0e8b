"""The single writer: drains the bounded queue into SQLite in batched transactions.

One aiosqlite connection (one thread) owns every write, so there is never a second writer to
wait for. Items are committed every ``commit_interval_s`` — or sooner when ``commit_rows`` are
waiting — which bounds what a SIGKILL can lose to one interval. Each commit also beats the run's
heartbeat and copies the live counters onto the run, so another process can tell a running run
from a crashed one and see exactly what was read and what was committed.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import aiosqlite
import anyio
from anyio.streams.memory import MemoryObjectReceiveStream

from .channels import PollGroup, encoder_for
from .checkpoint import Checkpoints, checkpoints_beside
from .clock import Clock, utc_iso
from .connection import StorageError, on_connection_thread, write_transaction
from .files import FileWatch, save_database_copy
from .records import ActionEvent, FlaggedSample, GroupStats, MonitorError, Sample, SampleBatch
from .schema import group_counters, insert_sql, segment_spans
from .streaks import ErrorStreaks, Streak

__all__ = ["Item", "Writer", "WriterTarget"]

Item = Sample | SampleBatch | FlaggedSample


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
    #: This process's session of the run (0 for a new run): commits stop if a newer one exists.
    session_idx: int = 0
    #: Samples the run lost in earlier sessions: the end records, and reports, the run's total.
    lost_before: int = 0


class _GroupBuffer:
    __slots__ = ("all_float", "encoders", "rows", "sql", "width")

    def __init__(self, group: PollGroup, table: str) -> None:
        self.sql = insert_sql(table, group)
        self.encoders = tuple(encoder_for(c.value_type) for c in group.channels)
        self.width = len(self.encoders)
        # Every column REAL: a row of plain floats can be bound as it is (see _plain_floats).
        self.all_float = all(c.value_type == "float" for c in group.channels)
        self.rows: list[tuple[Any, ...]] = []


def _plain_floats(values: Sequence[Any]) -> bool:
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
        self._wake_requested = False
        self._last_beat = -float("inf")
        self.commits = 0
        #: Samples taken off the queue so far (a batch counts its samples, anything else one);
        #: with the sink's count of sends this is the queue's depth, for free.
        self.taken = 0
        #: Set once the writer has stopped taking items (done or failed): nobody makes room any
        #: more, so a sender waiting for room must give up.
        self.stopped = False
        self._took: anyio.Event | None = None
        #: Called on the loop before each take from the queue. A source that holds samples back
        #: (an instrument thread's batch of a signal group, see :mod:`trajmon.threaded`) hands
        #: them over now, so they make this commit without waking the loop on a timer of their
        #: own; each returns True when it had something to hand over.
        self.pullers: list[Callable[[], bool]] = []
        #: (group id, sample index, error) of the commit being built, in queue order.
        self._pending_errors: list[tuple[int, int, MonitorError]] = []
        self._streaks = ErrorStreaks()
        #: A reader's backlog of the log, checkpointed beside the commits (trajmon.checkpoint).
        self.checkpoints: Checkpoints | None = None
        self._committed = anyio.Event()
        #: The database file as it was when the writer started.
        self._file: FileWatch | None = None

    def wake(self) -> None:
        """Commit now rather than at the next interval (queue filling up, or shutting down)."""
        self._wake_requested = True
        if self._wake_scope is not None:
            self._wake_scope.cancel()

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Commit until the queue is closed and empty; raises :class:`StorageError` on failure."""
        task_status.started()
        try:
            with self._receive:  # owned here: closed when done, so blocked senders never hang
                async with checkpoints_beside(self._conn) as self.checkpoints:
                    if self.checkpoints is not None:  # else in memory: no file
                        self._file = FileWatch(self.checkpoints.path)
                    await self._loop()
        finally:
            self.stopped = True
            self._made_room()

    def room(self) -> anyio.Event:
        """Set at the next take (or when the writer stops): what a sender facing a full queue
        waits for."""
        if self._took is None:
            self._took = anyio.Event()
        return self._took

    def _made_room(self) -> None:
        if self._took is not None:
            self._took.set()
            self._took = None

    async def _loop(self) -> None:
        next_commit = self._clock.monotonic()
        while True:
            self._wake_requested = False
            if any([pull() for pull in self.pullers]):
                await anyio.lowlevel.checkpoint()  # the pollers just woken enqueue first
            items, taken, ended = self._take(self._rows)
            # Due as the sleep below computes it: ``now - last >= hb`` can round below (1000.3 -
            # 1000.0 < 0.3), and woken at that deadline the writer neither beat nor slept: a spin.
            if items or ended or self._clock.monotonic() >= self._last_beat + self._heartbeat_s:
                await self._commit(items)
                await self._check_file()
            if ended:
                return
            if taken >= self._rows or self._wake_requested:
                # A backlog, or a wake that came during the commit (it found no sleep to cut
                # short): take again at once rather than sleep a whole interval on a full queue.
                continue
            next_commit = max(next_commit + self._interval, self._clock.monotonic())
            # Beat on time even with a long commit interval: a late beat reads as a crash.
            deadline = min(next_commit, self._last_beat + self._heartbeat_s)
            with anyio.CancelScope() as scope:
                self._wake_scope = scope
                await self._clock.sleep_until(deadline)
            self._wake_scope = None

    async def _check_file(self) -> None:
        """Fail once the database file is deleted or replaced (:class:`FileWatch`; one ``stat``
        after each commit): the run ended ``completed`` with nothing left to read. The open
        connection still holds every committed page: they are copied to a new file beside the
        old name first."""
        if self._file is None or not self._file.replaced():
            return
        path, self._file = self._file.path, None
        try:
            with anyio.CancelScope(shield=True):
                copy = await on_connection_thread(self._conn, save_database_copy, path)
        except (sqlite3.Error, OSError) as exc:
            saved = f"copying what it held elsewhere failed too ({exc})"
        else:
            saved = f"what it held is saved in {copy}"
        raise StorageError(
            f"the database file {path} was deleted or replaced while recording; {saved}"
        )

    def _take(self, limit: int) -> tuple[list[Item], int, bool]:
        """Items worth up to ``limit`` samples (a batch may go over), their sample count, and
        whether the queue has ended."""
        items: list[Item] = []
        receive = self._receive
        ended = False
        taken = 0
        while taken < limit:
            try:
                item = receive.receive_nowait()
            except anyio.WouldBlock:
                break
            except anyio.EndOfStream:
                ended = True
                break
            items.append(item)
            taken += len(item.samples) if type(item) is SampleBatch else 1
        if taken:
            self.taken += taken
            self._made_room()
        return items, taken, ended

    def _encode_batch(self, buf: _GroupBuffer, samples: list[Sample]) -> None:
        """Rows for ``samples``: a row of plain floats as it is (the common case, checked in a
        loop that runs once per row), anything else through the per-value encoders."""
        rows, encode = buf.rows, self._encode
        if not buf.all_float:
            rows.extend([encode(buf, s) for s in samples])
            return
        width = buf.width
        for s in samples:
            values = s.values
            if len(values) == width and _plain_floats(values):
                rows.append((s.sample_idx, s.dt_s, s.read_s, *values))
            else:
                rows.append(encode(buf, s))

    def _encode(self, buf: _GroupBuffer, sample: Sample) -> tuple[Any, ...]:
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
        except Exception:  # what a driver's object raises is its own (numpy's MaskError, ...)
            return self._encode_slow(buf, sample)

    def _encode_slow(self, buf: _GroupBuffer, sample: Sample) -> tuple[Any, ...]:
        """A value that does not fit its channel's type is stored as a gap plus an error row,
        whatever its conversion raised: a driver fault never ends the run."""
        out: list[Any] = [sample.sample_idx, sample.dt_s, sample.read_s]
        group = self._target.groups[sample.group_id]
        for enc, value, channel in zip(buf.encoders, sample.values, group.channels, strict=True):
            try:
                out.append(None if value is None else enc(value))
            except Exception as exc:
                out.append(None)
                error = MonitorError(
                    sample.dt_s,
                    channel.label,
                    channel.instrument,
                    "bad_value",
                    f"{value!r} is not a {channel.value_type}: {exc}",
                )
                self._pending_errors.append((sample.group_id, sample.sample_idx, error))
        return tuple(out)

    def _encode_action(self, run_id: int, event: ActionEvent) -> tuple[Any, ...]:
        """The ``actions`` row, old and new value as the channel's column stores them (untyped
        if they do not fit)."""
        enc = encoder_for(self._target.channel_types[event.channel_id])  # type: ignore[arg-type]
        try:
            old, new = enc(event.old_value), enc(event.new_value)
        except (TypeError, ValueError, OverflowError):
            untyped = encoder_for("any")
            old, new = untyped(event.old_value), untyped(event.new_value)
        return (
            run_id,
            event.action_idx,
            event.dt_s,
            event.sample_idx,
            event.prev_dt_s,
            event.detected_at_utc,
            event.spec_label,
            event.channel_id,
            old,
            new,
            event.delta,
            event.window_start_s,
            event.window_end_s,
        )

    async def _commit(self, items: Sequence[Item]) -> None:
        target = self._target
        run_id = target.run_id
        self._pending_errors = []
        actions: list[tuple[Any, ...]] = []
        buffers = self._buffers
        for item in items:
            if type(item) is SampleBatch:
                self._encode_batch(buffers[item.group_id], item.samples)
            elif type(item) is Sample:
                self._encode_batch(buffers[item.group_id], [item])
            elif type(item) is FlaggedSample:
                sample = item.sample
                self._encode_batch(buffers[sample.group_id], [sample])
                gid, idx = sample.group_id, sample.sample_idx
                self._pending_errors.extend([(gid, idx, err) for err in item.errors])
                actions.extend([self._encode_action(run_id, e) for e in item.events])
        touched, new_rows = self._streak_rows()
        errors = [streak.row(run_id) for streak in touched]
        try:
            await self._write(actions, errors, new_rows)
        except sqlite3.Error as exc:
            for buf in self._buffers.values():
                buf.rows.clear()
            raise StorageError(f"cannot write to the database: {exc}") from exc
        target.actions += len(actions)
        target.errors += new_rows

    def _streak_rows(self) -> tuple[list[Streak], int]:
        """The streaks this commit's errors start or continue (each one row to upsert), and
        how many of them are new rows."""
        target = self._target
        touched: dict[int, Streak] = {}
        new_rows = 0
        for gid, idx, err in self._pending_errors:
            streak = self._streaks.extend(gid, idx, err)
            if streak is None:
                streak = self._streaks.start(gid, idx, err, target.next_error_idx)
                target.next_error_idx += 1
                new_rows += 1
            touched[streak.error_idx] = streak
        return list(touched.values()), new_rows

    async def _write(
        self, actions: list[tuple[Any, ...]], errors: list[tuple[Any, ...]], new_errors: int
    ) -> None:
        target = self._target
        run_id, rotate = target.run_id, target.rotate_entries
        now = self._clock.monotonic()
        wall = self._clock.wall()
        inserts: list[tuple[str, list[tuple[Any, ...]], list[tuple[Any, ...]]]] = []
        committed: dict[int, int] = {}
        for gid, buf in self._buffers.items():
            if buf.rows:
                inserts.append((buf.sql, buf.rows, segment_spans(run_id, gid, buf.rows, rotate)))
                committed[gid] = len(buf.rows)
        group_rows = []
        for gid, stats in target.stats.items():
            rows = self._buffers[gid].rows
            first, last = (rows[0][1], rows[-1][1]) if rows else (None, None)
            samples = stats.samples_committed + committed.get(gid, 0)
            group_rows.append(group_counters(run_id, gid, stats, samples, first, last))
        beat = (
            utc_iso(wall),
            wall,
            now - target.t0_mono,
            target.actions + len(actions),
            target.errors + new_errors,
            run_id,
        )
        # The whole transaction is one call on the connection's thread: one hop instead of one
        # per statement, so a busy event loop delays a commit once, not six times. Shielded:
        # once submitted the transaction completes, and the counters below must match it.
        with anyio.CancelScope(shield=True):
            await on_connection_thread(
                self._conn,
                write_transaction,
                (run_id, target.session_idx),
                inserts,
                actions,
                errors,
                group_rows,
                beat,
            )
        for gid, count in committed.items():
            target.stats[gid].samples_committed += count
            self._buffers[gid].rows.clear()
        self._last_beat = now
        self.commits += 1
        if self.checkpoints is not None:
            autocheckpoint = self.checkpoints.after_commit(now)
            if autocheckpoint is not None:  # a backlog begins or ends (trajmon.checkpoint)
                with anyio.CancelScope(shield=True):
                    await self._conn.execute(f"PRAGMA wal_autocheckpoint = {autocheckpoint}")
        self._committed.set()
        self._committed = anyio.Event()

    async def wait_commits(self, count: int) -> None:
        """Wait until ``count`` transactions have been committed in total (for tests and tools)."""
        while self.commits < count:
            await self._committed.wait()
