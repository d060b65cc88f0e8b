"""One recording, start to finish: pollers -> detector -> bounded queue -> writer.

The recorder's promise is the run's final state: whether the duration ends, the operator presses
Ctrl-C or the disk fills, sampling stops first, the queue is drained and committed, and the run
row says what happened. Stopping never cancels a read in flight — a sample the instrument
answered is a sample the database gets.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import anyio

from .channels import Channel, PollGroup
from .clock import Clock, SystemClock
from .config import ConfigError, MonitorConfig
from .connection import RunTakenOverError, StorageError, open_connection
from .detection import ChangeDetector
from .gcpause import gc_recording
from .recorder_args import check_arguments, running
from .records import ActionEvent, GroupStats
from .resolve import build_groups
from .resume import ResumeState, resume_run
from .runstore import NewRun, RunExistsError, create_run, finish_run, prepare_db
from .sampling import GroupReader
from .scheduling import Poller, Schedule
from .sink import EventTap, QueueSink, Waiters, open_queue
from .summary import RunFailedError, RunSummary, group_summaries
from .workers import SHARED_WORKERS, InstrumentWorker, require_asyncio
from .writer import Writer, WriterTarget

_log = logging.getLogger(__name__)

__all__ = ["Recorder"]


class Recorder:
    """Records one run of ``config`` from already-connected ``instruments``."""

    def __init__(
        self,
        config: MonitorConfig,
        instruments: Mapping[str, Any],
        *,
        clock: Clock | None = None,
        snapshot: dict[str, Any] | None = None,
        resume: bool = False,
    ) -> None:
        if not config.run_name:
            raise ConfigError("config.run_name is required to record")
        check_arguments(instruments, clock)
        self.config = config
        self.clock = clock or SystemClock()
        self.instruments = dict(instruments)
        self.snapshot = snapshot
        self.resume = resume
        self.groups: list[PollGroup] = build_groups(config, instruments)
        self.stats: list[GroupStats] = []
        self.recent_actions: deque[ActionEvent] = deque(maxlen=20)
        self.started = anyio.Event()
        #: Set once :meth:`run` has returned or raised, however the run ended (or never began).
        self.ended = anyio.Event()
        #: The ended run's summary (a failed run's too) and the failure :meth:`run` raised, or
        #: would have: a cancellation of :meth:`run` goes on in its place (and is logged).
        self.summary: RunSummary | None = None
        self.error: Exception | None = None
        self._changed = Waiters()
        self.t0_mono: float | None = None
        self._pollers: list[Poller] = []
        self._stop_requested = False
        self._sink: QueueSink | None = None
        self._detector: ChangeDetector | None = None
        self._end_wait: anyio.CancelScope | None = None
        self._claimed = False  # run() was called: a Recorder records one run
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def queue_depth(self) -> int:
        return 0 if self._sink is None else self._sink.depth

    @property
    def detector_actions(self) -> int:
        return 0 if self._detector is None else self._detector.next_action_idx

    @property
    def stop_requested(self) -> bool:
        return self._stop_requested

    @property
    def state(self) -> Literal["new", "starting", "running", "stopping", "ended"]:
        """Where the one run of this recorder is: ``run()`` not called yet, opening the
        database, recording, draining after a stop (or a cancellation), or over however it
        ended — the question a notebook asks of a recorder started as a background task."""
        if self.ended.is_set():
            return "ended"
        if not self._claimed:
            return "new"
        if self._stop_requested:
            return "stopping"
        return "running" if self.started.is_set() else "starting"

    async def wait_until(self, predicate: Callable[[], bool]) -> bool:
        """Wait until ``predicate()`` holds, re-checking after every sample or action; True then.

        For tests and tools that react to progress without polling on a timer. The predicate is
        first called once the run has started. A run that ends — or fails to start — before it
        holds makes this return False rather than wait forever (like
        ``threading.Condition.wait_for``).
        """
        while True:
            if self.started.is_set() and predicate():
                return True
            if self.ended.is_set():
                return False
            await self._changed.wait()

    def request_stop(self) -> None:
        """Stop sampling and let the writer drain; idempotent (a second Ctrl-C changes nothing).

        Safe from any thread (a GUI's button, a watchdog): from outside the run's event loop
        the stop is handed to it. Cancel scopes are not thread-safe; cancelled from another
        thread, a poller's sleep raised there, was then marked cancelled but never woken, and
        the run did not stop — not even when cancelled later.
        """
        self._stop_requested = True
        loop = self._loop
        if loop is not None and not running(loop):
            with contextlib.suppress(RuntimeError):  # the loop is closed: the run is over
                loop.call_soon_threadsafe(self.request_stop)
            return
        for poller in self._pollers:
            poller.stop()
        if self._end_wait is not None:
            self._end_wait.cancel()

    async def run(self) -> RunSummary:
        """Record until the duration ends, :meth:`request_stop` is called or storage fails.

        Cancelling the task that awaits this (a timeout around it, a failing task beside it in
        a task group, Ctrl-C under ``anyio.run``) stops the run as :meth:`request_stop` does —
        no new read starts, what was read is committed, the run is marked ``interrupted`` — and
        then the cancellation goes on; the run's :attr:`summary` (or :attr:`error`) stays on the
        recorder. Raises :class:`RunFailedError` if the run failed.
        """
        try:
            require_asyncio()
        except RuntimeError:  # under trio: the run never begins, and wait_until must say so
            self._end()
            raise
        if self._claimed:  # also while the first run() records: leave its events alone
            raise RunExistsError(
                f"run name {self.config.run_name!r} is already used by this Recorder:"
                " a Recorder records one run; make a new one for the next"
            )
        self._claimed = True
        self._loop = asyncio.get_running_loop()
        cancelled = False
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._run_to_end)
                try:
                    await self.ended.wait()
                except anyio.get_cancelled_exc_class():
                    self.request_stop()  # the recording drains and records its end, shielded
                    cancelled = True
                    raise
        finally:
            self._end()
            if cancelled and self.error is not None:  # the cancellation goes on: say it failed
                _log.error(
                    "run %r failed while run() was cancelled: %s", self.config.run_name, self.error
                )
        if self.error is not None:
            raise self.error
        assert self.summary is not None
        return self.summary

    def _end(self) -> None:
        self.ended.set()
        self._changed.wake()

    async def _run_to_end(self) -> None:
        """The recording, shielded: a cancellation of :meth:`run` reaches it as a stop. Its
        outcome is kept before :attr:`ended` is set, for whoever waits on that."""
        with anyio.CancelScope(shield=True):
            try:
                self.summary = await self._run()
            except Exception as exc:
                self.error = exc
                if isinstance(exc, RunFailedError):
                    self.summary = exc.summary
            finally:
                self._end()

    async def _run(self) -> RunSummary:
        cfg = self.config
        assert cfg.run_name is not None
        await anyio.to_thread.run_sync(prepare_db, cfg, self.resume)
        try:
            conn = await open_connection(cfg.db)
        except sqlite3.Error as exc:
            raise StorageError(f"cannot open database {cfg.db} for writing: {exc}") from exc
        workers: dict[str, InstrumentWorker] = {}
        try:
            now_wall, now = self.clock.wall(), self.clock.monotonic()
            try:
                if self.resume:
                    state = await resume_run(
                        conn,
                        cfg.run_name,
                        self.groups,
                        now_mono=now,
                        now_wall=now_wall,
                        duration_s=cfg.duration_s,
                    )
                else:
                    new = NewRun(cfg.run_name, now_wall, now, cfg, self.groups, self.snapshot)
                    target = await create_run(conn, new)
                    state = ResumeState(target, dict.fromkeys(target.stats, 0), {}, 0, self.groups)
            except sqlite3.Error as exc:
                raise StorageError(f"cannot start the run in {cfg.db}: {exc}") from exc
            self.groups = state.groups
            self.t0_mono = state.target.t0_mono
            self.stats = [state.target.stats[gid] for gid in sorted(state.target.stats)]
            with gc_recording():  # samples in flight would keep the collector busy (gcpause)
                return await self._record(conn, state, workers, now)
        finally:
            with anyio.CancelScope(shield=True):
                # Off the loop and all at once: a hung driver's thread is waited for, but
                # neither the loop (other tasks of the program) nor the other threads wait.
                async with anyio.create_task_group() as closing:
                    for name in workers:
                        # shared with other recorders reading the same instrument (SHARED_WORKERS)
                        if (worker := SHARED_WORKERS.release(self.instruments[name])) is not None:
                            closing.start_soon(
                                anyio.to_thread.run_sync, worker.close, cfg.read_timeout_s + 1
                            )
                await conn.close()

    async def _record(
        self,
        conn: Any,
        state: ResumeState,
        workers: dict[str, InstrumentWorker],
        session_start: float,
    ) -> RunSummary:
        cfg, clock = self.config, self.clock
        target = state.target
        t0 = target.t0_mono
        for group in self.groups:
            for ch in group.channels:
                if ch.instrument not in workers:
                    instrument = self.instruments[ch.instrument]
                    workers[ch.instrument] = SHARED_WORKERS.acquire(instrument, ch.instrument)
        spec_channels: dict[int, Sequence[tuple[int, Channel]]] = {}
        cid = 0
        for gid, group in enumerate(self.groups):
            for ch in group.channels:
                if group.kind == "spec":
                    spec_channels.setdefault(gid, []).append((cid, ch))  # type: ignore[attr-defined]
                cid += 1
        detector = ChangeDetector(
            spec_channels,
            window_before_s=cfg.window_before_s,
            window_after_s=cfg.window_after_s,
            wall=clock.wall,
            next_action_idx=state.next_action_idx,
        )
        detector.prime(state.last_spec_values)
        self._detector = detector
        writer, sink = open_queue(
            conn,
            target,
            clock=clock,
            commit_interval_s=cfg.commit_interval_s,
            commit_rows=cfg.commit_rows,
            queue_size=cfg.queue_size,
            heartbeat_s=cfg.heartbeat_s,
        )
        self._sink = sink
        tap = EventTap(sink, self.recent_actions, self._changed)
        end_at = None if cfg.duration_s is None else session_start + cfg.duration_s
        self._pollers = [
            Poller(
                target.stats[gid],
                GroupReader(
                    group,
                    self.instruments,
                    workers,
                    # A driver with its own timeout reports it first; this is the safety net
                    # for drivers that have none.
                    cfg.read_timeout_s + 1.0,
                ),
                tap,
                clock=clock,
                schedule=Schedule.resuming(t0, group.interval_s, session_start),
                next_sample_idx=state.next_idx[gid],
                end_at=end_at,
                detector=detector if group.kind == "spec" else None,
            )
            for gid, group in enumerate(self.groups)
        ]
        if self._stop_requested:
            self.request_stop()
        status, message, taken_over = "completed", None, False
        ran_to_end = False  # a stop after the duration's end changes nothing: the run completed
        self.started.set()
        self._changed.wake()
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._write, writer)
                # A failing writer stops the pollers (_write), never cancels them: a read in
                # flight on an instrument's thread is counted before the run's end is recorded.
                with anyio.CancelScope(shield=True):
                    async with anyio.create_task_group() as pollers:
                        for poller in self._pollers:
                            pollers.start_soon(poller.run)
                if end_at is not None:  # the last tick is before end_at; the run lasts until it
                    with anyio.CancelScope() as self._end_wait:
                        if not self._stop_requested:
                            await clock.sleep_until(end_at)
                            ran_to_end = True
                sink.close()
        except* StorageError as failures:
            status, message = "failed", str(failures.exceptions[0])
            taken_over = isinstance(failures.exceptions[0], RunTakenOverError)
        except* Exception as failures:  # a bug: the run's end is still recorded, as failed
            exc = failures.exceptions[0]
            _log.error("recording stopped by an unexpected error", exc_info=exc)
            status, message = "failed", f"unexpected error: {type(exc).__name__}: {exc}"
        finally:
            sink.close()  # also when the writer failed: nothing may be left half-open
        if status != "failed" and self._stop_requested and not ran_to_end:
            status = "interrupted"
        if status == "completed" and cfg.duration_s is None:
            status = "interrupted"
        end_mono = clock.monotonic()
        end_dt = end_mono - t0
        if end_at is not None and status == "completed":
            end_dt = min(end_dt, end_at - t0)
        lost = sum(s.samples_read - s.samples_committed for s in target.stats.values())
        lost += target.lost_before
        if not taken_over:  # else the run's record belongs to the process that resumed it
            status, message = await self._finish(conn, target, status, message, end_dt, lost)
        summary = RunSummary(
            run_name=cfg.run_name or "",
            run_id=target.run_id,
            db=str(cfg.db),
            status=status,
            duration_s=end_dt,
            groups=group_summaries(self.groups, target.stats),
            actions=target.actions,
            errors=target.errors,
            lost_samples=lost,
            message=message,
        )
        if status == "failed":
            raise RunFailedError(summary)
        return summary

    async def _finish(
        self,
        conn: Any,
        target: WriterTarget,
        status: str,
        message: str | None,
        end_dt: float,
        lost: int,
    ) -> tuple[str, str | None]:
        """Record the run's end; the status and message to report, changed if that failed."""
        try:
            with anyio.CancelScope(shield=True):
                await finish_run(
                    conn,
                    target,
                    status=status,
                    end_dt_s=end_dt,
                    end_epoch=self.clock.wall(),
                    lost_samples=lost,
                    message=message,
                )
        except RunTakenOverError as exc:  # resumed elsewhere while this one was suspended
            return "failed", str(exc)
        except Exception as exc:  # the file itself refuses writes: report, keep what is there
            return "failed", f"{message or 'run ended'}; could not record the final status: {exc}"
        return status, message

    async def _write(self, writer: Writer) -> None:
        try:
            await writer.run()  # closes the receive side when it ends, however it ends
        except BaseException:
            self.request_stop()  # nobody drains the queue any more: stop sampling
            raise
