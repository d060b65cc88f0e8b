"""Long unattended operation, compressed: what resources do over many faults and long readers.

Measured with real processes before these tests were written (figures in the helper's report):
``trajmon run`` against ``trajmon sim serve --faults`` with hundreds of outages, drops, error
replies and hangs keeps a flat count of file descriptors, sockets and threads, and its RSS
levels off (~87 MB after 4 min, then flat to 10 min); a reader holding one read transaction
for minutes neither blocks nor fails the recorder.

Two faults were found (and fixed, src/trajmon/checkpoint.py), both in the write-ahead log
after a long reader (a DB browser, a notebook, a long export) lets go of its snapshot:

- the ``-wal`` file grows for as long as the reader holds it (~87 KB/s at the default 10 Hz,
  some 300 MB an hour) and then kept that size until the run ended: SQLite reuses a WAL from
  its start but only truncates it when ``journal_size_limit`` is set, and the writer set none;
- the whole backlog was checkpointed inside one of the writer's commits (SQLite's
  autocheckpoint), and the heartbeat, written by the commits, waited for it: long enough and the
  live run read as ``crashed``, and a ``--resume`` took it over.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, closing
from pathlib import Path

import anyio
import pytest

from simulators.qcodes_sim import SimulatedSTM
from simulators.stm_model import STMModel
from simulators.threaded_server import ThreadedNanonisServer
from trajmon import MonitorConfig, Recorder, RunSummary
from trajmon.drivers.nanonis import NanonisSTM

PROC_FD = Path("/proc/self/fd")
needs_proc = pytest.mark.skipif(not PROC_FD.is_dir(), reason="needs Linux /proc")

#: What the WAL file may keep once the reader that held it is gone: the autocheckpoint runs at
#: 1000 pages (~4 MiB), so a log that keeps growing past a few times that is a held snapshot.
WAL_WORKING_SIZE = 16 * 1024 * 1024
#: How large the tests let the log grow while a reader holds it (stands in for hours of commits).
WAL_GROWN = 48 * 1024 * 1024


def _size(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


async def _until(recorder: Recorder, predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    """Re-checked after every sample (the recorder samples at 100-200 Hz): no timer polling."""
    with anyio.fail_after(timeout):
        await recorder.wait_until(predicate)


async def _run(recorder: Recorder, outcome: list[RunSummary]) -> None:
    outcome.append(await recorder.run())


# -- 1. sockets and threads over many outage / reconnect cycles -------------------------------


@pytest.fixture
def server() -> Iterator[ThreadedNanonisServer]:
    with ThreadedNanonisServer(STMModel(seed=3, drift=False, noise=False)) as srv:
        yield srv


@needs_proc
async def test_outage_cycles_leave_no_sockets_or_threads_behind(
    server: ThreadedNanonisServer, db_path: Path
) -> None:
    """25 outages (server gone, connections closed, reconnects refused, then back) plus a
    dropped connection and error replies in each cycle: the recorder reconnects every time, and
    the process's file descriptors and threads are the same after the last cycle as after the
    first. (A CLI recording through 100 outages and ~300 drops in 5 min: 11-12 fds, 5 threads.)"""
    stm = NanonisSTM("stm", port=server.port, timeout=0.5, reconnect_backoff=(0.002, 0.01))
    config = MonitorConfig(run_name="cycles", db=db_path, interval_s=0.005)
    recorder = Recorder(config, {"stm": stm})
    fds: list[int] = []
    threads: list[int] = []
    outcome: list[RunSummary] = []
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(_run, recorder, outcome)
            await recorder.started.wait()
            signals = recorder.stats[0]
            await _until(recorder, lambda: signals.samples_committed > 0)
            for cycle in range(25):
                failed = signals.failed_reads
                server.stop()
                await _until(recorder, lambda f=failed: signals.failed_reads > f + 3)
                reconnects = stm.reconnect_count
                server.faults.drop_next(command="Signals.ValsGet")
                server.faults.error_next(2, command="Bias.Get")
                server.start()
                await _until(recorder, lambda r=reconnects: stm.reconnect_count >= r + 2)
                read = signals.samples_read
                failed = signals.failed_reads
                # reading again: samples without a failure since the last reconnect
                await _until(
                    recorder,
                    lambda r=read, f=failed: (
                        signals.samples_read - r >= 5 and signals.failed_reads == f
                    ),
                )
                fds.append(len(os.listdir(PROC_FD)))
                threads.append(threading.active_count())
                assert stm.connected, cycle
            recorder.request_stop()
    finally:
        stm.close()
    assert [o.status for o in outcome] == ["interrupted"]
    assert max(fds) <= fds[0] + 2 and fds[-1] <= fds[0] + 1, fds
    assert set(threads) == {threads[0]}, threads


# -- 2. the write-ahead log under a long reader ------------------------------------------------


@asynccontextmanager
async def _recording(db: Path, outcome: list[RunSummary]) -> AsyncIterator[Recorder]:
    stm = SimulatedSTM("stm", seed=4)
    recorder = Recorder(MonitorConfig(run_name="long", db=db, interval_s=0.01), {"stm": stm})
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(_run, recorder, outcome)
            await recorder.started.wait()
            await _until(recorder, lambda: recorder.stats[0].samples_committed > 0)
            yield recorder
            recorder.request_stop()
    finally:
        stm.close()


def _grow_wal_under_a_reader(db: Path) -> sqlite3.Connection:
    """Open a reader's snapshot (as a DB browser, a notebook or a long export holds one), then
    let the log grow past what any checkpoint can take back while it is held. The growth is
    written here in one go (a side table) instead of by hours of commits: the frames are the
    same to the checkpointer and to the file."""
    reader = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True)
    reader.execute("BEGIN")
    reader.execute("SELECT count(*) FROM runs").fetchone()
    with closing(sqlite3.connect(db, timeout=5, isolation_level=None)) as other:
        other.execute("CREATE TABLE scratch (b BLOB)")
        other.execute("INSERT INTO scratch VALUES (zeroblob(?))", (WAL_GROWN,))
    return reader


async def _backlog_then_release(db: Path, recorder: Recorder) -> int:
    """A reader's backlog as hours of it look to the writer: the log grows past the backlog
    size while the reader holds it, and the writer (it looks once a second) sees that before
    the reader lets go. Returns the log's size at its largest."""
    reader = _grow_wal_under_a_reader(db)
    try:
        grown = _size(db.with_name(db.name + "-wal"))
        committed = recorder.stats[0].samples_committed
        # 1.5 s of samples at 100 Hz: at least one of the writer's looks at the log
        await _until(recorder, lambda: recorder.stats[0].samples_committed >= committed + 150)
    finally:
        reader.close()
    return grown


async def test_a_long_reader_neither_stalls_nor_fails_the_recorder(db_path: Path) -> None:
    """While a reader holds its snapshot the recorder keeps committing (its counters rise, no
    'database is locked'); once it lets go, the writer's checkpoints copy the whole log into
    the database."""
    wal = db_path.with_name(db_path.name + "-wal")
    outcome: list[RunSummary] = []
    async with _recording(db_path, outcome) as recorder:
        reader = _grow_wal_under_a_reader(db_path)
        try:
            assert _size(wal) > WAL_GROWN and _size(db_path) < WAL_GROWN
            committed = recorder.stats[0].samples_committed
            await _until(recorder, lambda: recorder.stats[0].samples_committed >= committed + 50)
            assert _size(db_path) < WAL_GROWN, "nothing past the reader's snapshot is moved"
        finally:
            reader.close()
        committed = recorder.stats[0].samples_committed
        await _until(
            recorder,
            lambda: _size(db_path) > WAL_GROWN and recorder.stats[0].samples_committed > committed,
        )
    assert [o.status for o in outcome] == ["interrupted"]
    assert not wal.exists() or _size(wal) == 0, "the last connection's close empties the log"


async def test_the_wal_file_shrinks_once_a_long_reader_lets_go(db_path: Path) -> None:
    """An overnight run with a reader left open for an hour kept a WAL of hundreds of MB for
    the rest of the night, though the log's content was checkpointed long ago. With
    ``PRAGMA journal_size_limit`` on the writer's connection SQLite truncates the file to the
    limit at the first commit after the log restarts."""
    wal = db_path.with_name(db_path.name + "-wal")
    async with _recording(db_path, []) as recorder:
        grown = await _backlog_then_release(db_path, recorder)
        # Checkpointed within a second or two (a 48 MiB copy on a loaded machine); the next
        # commit restarts the log and cuts its file back. Before the fix this timed out.
        await _until(recorder, lambda: _size(wal) <= WAL_WORKING_SIZE, timeout=20)
        committed = recorder.stats[0].samples_committed
        # and it stays cut back while the commits write into it again
        await _until(recorder, lambda: recorder.stats[0].samples_committed >= committed + 100)
        size = _size(wal)
    assert grown > WAL_GROWN and size <= WAL_WORKING_SIZE, f"-wal still {size / 2**20:.1f} MiB"


async def test_no_commit_waits_for_the_checkpoint_of_a_long_readers_backlog(
    db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The heartbeat is written by the writer's commits, so whatever a commit waits for, the
    heartbeat waits for too; past ``stale_after_s`` ``runs``/``status`` reported the live run
    as ``crashed`` and ``trajmon run --resume`` accepted it. Measured (before the fix) with a
    reader held while ~800 MB of new pages were written, then released (``trajmon run --sim
    --interval-s 0.01 --stale-after-s 3``): ``status`` said ``crashed`` for ~4.5 s, a resume
    started from it took the run over and the healthy recorder stopped with exit 1 ("another
    process resumed this run"). Timing is not deterministic, the mechanism is: before the fix
    the database file took in the whole backlog during one commit call; with checkpoints on a
    thread and connection of their own it grows beside the commits, which never wait."""
    import trajmon.writer

    calls: list[tuple[int, float]] = []  # (database growth during the call, seconds)
    commit = trajmon.writer.write_transaction

    def measured(db: sqlite3.Connection, *args: object) -> None:
        before, start = _size(db_path), time.monotonic()
        try:
            commit(db, *args)  # type: ignore[arg-type]
        finally:
            calls.append((_size(db_path) - before, time.monotonic() - start))

    monkeypatch.setattr(trajmon.writer, "write_transaction", measured)
    async with _recording(db_path, []) as recorder:
        await _backlog_then_release(db_path, recorder)
        await _until(recorder, lambda: _size(db_path) > WAL_GROWN)  # checkpointed
        committed = recorder.stats[0].samples_committed
        await _until(recorder, lambda: recorder.stats[0].samples_committed > committed)
    grown, seconds = max(calls)
    assert grown < WAL_GROWN // 2, (
        f"one commit took in {grown / 2**20:.0f} MiB of checkpoint ({seconds * 1000:.0f} ms)"
    )
