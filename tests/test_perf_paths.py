"""Fast paths added for performance (docs/performance.md) keep the exact behaviour of the slow ones.

- the writer's whole-row float fast path still stores NaN, -0.0, numpy scalars and junk exactly as
  the per-value encoders do;
- ``windows.window_rows`` (plain tuples, decoding only where needed) returns what the previous
  per-value implementation returned, blobs and bools included, and ``windows.window_columns``
  holds the same values column-wise;
- the poller's handoff to a thread clock keeps ``dt_s`` = the instant the read began, and the
  instrument worker's timer-based timeout still abandons a late call;
- the instrument thread's own check of a clean read (a full tuple of plain values) gives the
  values and failures ``GroupReader.parse`` gives for every other answer.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import sqlite3
import struct
import threading
import time
from contextlib import closing
from pathlib import Path
from typing import Any

import anyio
import numpy as np
import pytest

from trajmon.channels import Channel, PollGroup, decode_value
from trajmon.clock import FakeClock, SystemClock, ThreadClock
from trajmon.config import MonitorConfig
from trajmon.connection import open_connection
from trajmon.queries import RunRef, connect_readonly
from trajmon.records import GroupStats, Sample
from trajmon.runstore import NewRun, create_run
from trajmon.sampling import GroupReader, ReadFailure
from trajmon.scheduling import Poller, Schedule
from trajmon.schema import migrate, quote_ident
from trajmon.sink import open_queue
from trajmon.threaded import ThreadedGroup
from trajmon.windows import rows_of, window_columns, window_rows
from trajmon.workers import InstrumentWorker

FLOATS = PollGroup(
    "signals",
    "signal",
    0.1,
    (
        Channel("a", "signal", "i.a", "i", "signals", "V", "float"),
        Channel("b", "signal", "i.b", "i", "signals", "V", "float"),
    ),
)
MIXED = PollGroup(
    "specs",
    "spec",
    0.1,
    (
        Channel("f", "spec", "i.f", "i", "specs", "", "float"),
        Channel("n", "spec", "i.n", "i", "specs", "", "int"),
        Channel("on", "spec", "i.on", "i", "specs", "", "bool"),
        Channel("s", "spec", "i.s", "i", "specs", "", "str"),
        Channel("x", "spec", "i.x", "i", "specs", "", "any"),
    ),
)


async def _write(db: Path, samples: list[Sample]) -> None:
    """Push ``samples`` through the real queue + writer and drain."""
    clock = FakeClock()
    cfg = MonitorConfig(run_name="p", db=db, rotate_entries=4)
    with closing(sqlite3.connect(db)) as setup:
        migrate(setup)
    conn = await open_connection(db)
    try:
        target = await create_run(
            conn, NewRun("p", clock.wall(), clock.monotonic(), cfg, [FLOATS, MIXED], None)
        )
        writer, sink = open_queue(
            conn, target, clock=clock, commit_interval_s=0.25, commit_rows=7, queue_size=100
        )
        async with anyio.create_task_group() as tg:
            tg.start_soon(writer.run)
            for s in samples:
                await sink.send(s)
                target.stats[s.group_id].samples_read += 1
            sink.close()
    finally:
        await conn.close()


def _bits(value: Any) -> Any:
    return struct.pack(">d", value) if isinstance(value, float) else value


async def test_float_rows_store_special_values_exactly(tmp_path: Path) -> None:
    db = tmp_path / "p.db"
    rows = [
        [1.5, 2.5],  # the fast path
        [math.nan, 2.5],
        [-0.0, 2.5],
        [0.0, 2.5],
        [np.float64(0.25), 2.5],
        [np.float32(0.5), 2.5],
        [None, 2.5],
        [3, 2.5],
        [math.inf, -math.inf],
    ]
    await _write(db, [Sample(0, i, i * 0.1, 0.0, v) for i, v in enumerate(rows)])
    await _write(tmp_path / "junk.db", [Sample(0, 0, 0.0, 0.0, ["junk", 1.0])])
    with closing(sqlite3.connect(db)) as conn:
        stored = conn.execute('SELECT a, b FROM "p/signals" ORDER BY sample_idx').fetchall()
    got = [[decode_value("float", v) for v in row] for row in stored]
    want = [[None if v is None else float(v) for v in row] for row in rows]
    assert [[_bits(v) for v in row] for row in got] == [[_bits(v) for v in row] for row in want]
    assert math.copysign(1.0, got[2][0]) == -1.0 and math.copysign(1.0, got[3][0]) == 1.0
    with closing(sqlite3.connect(tmp_path / "junk.db")) as conn:
        assert conn.execute('SELECT a, b FROM "p/signals"').fetchone() == (None, 1.0)
        assert conn.execute("SELECT error_type FROM monitor_errors").fetchone() == ("bad_value",)


def _reference_window_rows(
    conn: sqlite3.Connection, run: RunRef, kind: str, start_s: float, end_s: float
) -> list[list[dict[str, Any]]]:
    """The rows of the previous window_rows: one decode_value per value, via sqlite3.Row."""
    out = []
    groups = conn.execute(
        "SELECT group_id, table_name FROM poll_groups WHERE run_id = ? AND kind = ?"
        " ORDER BY group_id",
        (run.run_id, kind),
    ).fetchall()
    for gid, table in groups:
        chans = conn.execute(
            "SELECT label, value_type FROM channels WHERE run_id = ? AND group_id = ?"
            " ORDER BY position",
            (run.run_id, gid),
        ).fetchall()
        cols = ", ".join(quote_ident(c["label"]) for c in chans)
        query = (
            f"SELECT sample_idx, dt_s, {cols} FROM {quote_ident(table)}"
            " WHERE dt_s BETWEEN ? AND ? ORDER BY sample_idx"
        )
        out.append(
            [
                {
                    "sample_idx": r[0],
                    "dt_s": r[1],
                    "values": {
                        c["label"]: decode_value(c["value_type"], r[i + 2])
                        for i, c in enumerate(chans)
                    },
                }
                for r in conn.execute(query, (start_s, end_s))
            ]
        )
    return out


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return type(a) is type(b) and bool(np.array_equal(a, b))
    if isinstance(a, float) and isinstance(b, float):
        return _bits(a) == _bits(b)
    return type(a) is type(b) and a == b


async def test_window_rows_match_the_per_value_decoding(tmp_path: Path) -> None:
    db = tmp_path / "p.db"
    mixed = [
        [1.5, 3, True, "x", 1.5],
        [math.nan, None, False, None, True],
        [-0.0, 2**70, None, "", b"raw"],
        [None, -4, True, "y", np.arange(3.0)],
        [2.0, 7, False, "z", 2**65],
    ]
    samples = [Sample(0, i, i * 0.1, 0.0, [i + 0.5, -(i + 0.25)]) for i in range(20)]
    samples += [Sample(1, i, i * 0.1, 0.0, v) for i, v in enumerate(mixed)]
    samples.append(Sample(0, 20, 2.0, 0.0, [math.nan, -0.0]))
    await _write(db, samples)
    with closing(connect_readonly(db)) as conn:
        run = RunRef(1, "p")
        for kind, (lo, hi) in itertools.product(
            ("signal", "spec"), [(0.0, 10.0), (0.25, 0.75), (5.0, 6.0)]
        ):
            got = [g["rows"] for g in window_rows(conn, run, kind, lo, hi)]
            want = _reference_window_rows(conn, run, kind, lo, hi)
            assert len(got) == len(want)
            for rows_got, rows_want in zip(got, want, strict=True):
                assert [(r["sample_idx"], r["dt_s"]) for r in rows_got] == [
                    (r["sample_idx"], r["dt_s"]) for r in rows_want
                ]
                for r_got, r_want in zip(rows_got, rows_want, strict=True):
                    assert list(r_got["values"]) == list(r_want["values"])
                    for label, value in r_want["values"].items():
                        assert _same(r_got["values"][label], value), (label, value)
            columnar = window_columns(conn, run, kind, lo, hi)
            for g_col, rows_want in zip(columnar, want, strict=True):
                assert g_col["dt_s"] == [r["dt_s"] for r in rows_want]
                assert g_col["sample_idx"] == [r["sample_idx"] for r in rows_want]
                for label, column in g_col["columns"].items():
                    assert len(column) == len(rows_want)
                    for v, r in zip(column, rows_want, strict=True):
                        assert _same(v, r["values"][label]), (label, v)
                assert len(rows_of(g_col)) == len(rows_want)


class _HandoffClock(FakeClock):
    """A simulated :class:`ThreadClock`: the thread-side wait jumps time to the deadline."""

    handoff_s = 0.0625

    def block_until(self, deadline: float) -> None:
        if deadline > self.monotonic():
            self.jump(deadline - self.monotonic())


class _TimedReader:
    """Starts each read ``late`` after the tick, on the 'thread' (here: the clock)."""

    def __init__(self, late: float) -> None:
        self.late = late
        self.handed_at: list[float] = []

    async def read(self) -> tuple[list[Any], list[ReadFailure]]:
        raise AssertionError("a poller on a thread clock hands its reads over")

    async def read_at(
        self, due: float, clock: ThreadClock
    ) -> tuple[list[Any], list[ReadFailure], float]:
        self.handed_at.append(clock.monotonic())
        clock.block_until(due + self.late)
        return [1.0], [], clock.monotonic()


async def test_handoff_keeps_dt_s_as_the_instant_the_read_began() -> None:
    clock = _HandoffClock(start=1000.0)
    assert isinstance(clock, ThreadClock) and isinstance(SystemClock(), ThreadClock)
    assert not isinstance(FakeClock(), ThreadClock)
    items: list[Any] = []

    class Sink:
        async def send(self, item: Any) -> None:
            items.append(item)

    reader = _TimedReader(late=0.125)
    stats = GroupStats(0, "signals", 0.25)
    poller = Poller(
        stats, reader, Sink(), clock=clock, schedule=Schedule(1000.0, 0.25), end_at=1001.0
    )
    async with anyio.create_task_group() as tg:
        tg.start_soon(poller.run)
        while clock.sleepers == 0:
            await anyio.lowlevel.checkpoint()
        await clock.advance(2.0)
    # Handed over handoff_s before each tick (tick 0 at once); each read began 0.125 s late,
    # and that start — not the hand-over — is the sample's dt_s and the schedule's instant.
    assert reader.handed_at == [1000.0, 1000.1875, 1000.4375, 1000.6875]
    assert [s.dt_s for s in items] == [0.125, 0.375, 0.625, 0.875]
    assert stats.missed_ticks == 0
    assert stats.lateness_max_s == 0.125


async def test_group_reader_timer_timeout_abandons_the_call() -> None:
    worker = InstrumentWorker("slow")
    release = threading.Event()
    try:
        with pytest.raises(TimeoutError):
            await worker.call(lambda: release.wait(5.0), timeout=0.05)
        release.set()
        assert await worker.call(lambda: 42, timeout=5.0) == 42
    finally:
        release.set()
        worker.close()


async def test_timed_read_on_the_worker_thread_reports_its_start() -> None:
    from trajmon.sampling import GroupReader

    class Param:
        def get(self) -> float:
            return 2.5

    channel = Channel("a", "signal", "i.a", "i", "signals", "V", "float", parameter=Param())
    group = PollGroup("signals", "signal", 0.01, (channel,))
    worker = InstrumentWorker("i")
    clock = SystemClock()
    try:
        reader = GroupReader(group, {"i": object()}, {"i": worker}, read_timeout_s=5.0)
        due = clock.monotonic() + 0.02
        values, failures, start = await reader.read_at(due, clock)
        assert (values, failures) == ([2.5], [])
        assert due <= start <= time.monotonic()
    finally:
        worker.close()


async def test_window_columns_exact_when_sample_idx_has_gaps_or_dt_steps_back(
    tmp_path: Path,
) -> None:
    """The fast path assumes one unbroken run of sample_idx; a gap in the index or a dt_s that
    steps back (a resumed session) must give exactly the rows a plain dt_s filter gives."""
    db = tmp_path / "p.db"
    dts = [i * 0.1 for i in range(10)] + [0.45 + i * 0.1 for i in range(10)]  # steps back
    idx = [*range(20), 21, 22, 24, 25]  # and two gaps
    dts += [2.0, 2.1, 2.2, 2.3]
    await _write(db, [Sample(0, i, t, 0.0, [t, -t]) for i, t in zip(idx, dts, strict=True)])
    with closing(connect_readonly(db)) as conn:
        run = RunRef(1, "p")
        for lo, hi in [(0.0, 10.0), (0.3, 0.8), (0.0, 0.35), (1.0, 1.5), (2.05, 2.25), (3, 4)]:
            (want,) = _reference_window_rows(conn, run, "signal", lo, hi)
            (got,) = window_columns(conn, run, "signal", lo, hi)
            assert got["sample_idx"] == [r["sample_idx"] for r in want], (lo, hi)
            assert got["dt_s"] == [r["dt_s"] for r in want], (lo, hi)


async def test_window_columns_report_gaps_and_coverage(tmp_path: Path) -> None:
    """Gaps (> 2 intervals between consecutive samples) come from the ``dt_s`` column."""
    db = tmp_path / "g.db"
    times = [0.0, 0.1, 0.2, 0.7, 0.8, 0.9, 1.0]  # one 0.5 s hole at a 0.1 s interval
    await _write(db, [Sample(0, i, t, 0.0, [t, -t]) for i, t in enumerate(times)])
    with closing(connect_readonly(db)) as conn:
        run = RunRef(1, "p")
        (hole,) = window_columns(conn, run, "signal", 0.0, 1.0)
        assert hole["gaps"] == [{"from_s": 0.2, "to_s": 0.7}] and not hole["complete"]
        assert hole["sample_idx"] == list(range(7)) and hole["columns"]["b"][3] == -0.7
        (whole,) = window_columns(conn, run, "signal", 0.7, 1.0)
        assert whole["gaps"] == [] and whole["complete"] and whole["dt_s"] == times[3:]
        (empty,) = window_columns(conn, run, "signal", 5.0, 6.0)
        assert empty["dt_s"] == [] and empty["columns"] == {"a": [], "b": []}
        assert rows_of(empty) == [] and not empty["complete"]


@pytest.mark.parametrize("enabled", [True, False])
def test_gc_paused_restores_the_collector_even_on_error(enabled: bool) -> None:
    import gc

    from trajmon.gcpause import gc_paused

    was = gc.isenabled()
    try:
        (gc.enable if enabled else gc.disable)()
        with pytest.raises(RuntimeError), gc_paused():
            assert not gc.isenabled()
            raise RuntimeError("boom")
        assert gc.isenabled() is enabled
    finally:
        (gc.enable if was else gc.disable)()


def test_gc_recording_raises_the_young_threshold_until_the_last_recording_ends() -> None:
    import gc

    from trajmon.gcpause import RECORDING_YOUNG_THRESHOLD, gc_recording

    before = gc.get_threshold()
    try:
        gc.set_threshold(700, 11, 12)
        with gc_recording():
            assert gc.get_threshold() == (RECORDING_YOUNG_THRESHOLD, 11, 12)
            with pytest.raises(RuntimeError), gc_recording():
                raise RuntimeError("the inner run failed")
            # The outer run still records: its threshold stays until it ends.
            assert gc.get_threshold() == (RECORDING_YOUNG_THRESHOLD, 11, 12)
        assert gc.get_threshold() == (700, 11, 12)
        # A higher threshold the application chose is never lowered.
        gc.set_threshold(RECORDING_YOUNG_THRESHOLD * 2, 10, 10)
        with gc_recording():
            assert gc.get_threshold()[0] == RECORDING_YOUNG_THRESHOLD * 2
        assert gc.get_threshold() == (RECORDING_YOUNG_THRESHOLD * 2, 10, 10)
        # A threshold of 0 (automatic collection off) is not turned back on.
        gc.set_threshold(0, 10, 10)
        with gc_recording():
            assert gc.get_threshold() == (0, 10, 10)
    finally:
        gc.set_threshold(*before)


class _Worker:
    """Stands in for the instrument worker: the tick only notes when its read is running."""

    name = "inst"
    running_since: float | None = None


class _GetMany:
    """An instrument whose ``get_many`` answers what the test queued (or raises it)."""

    def __init__(self) -> None:
        self.answers: list[Any] = []

    def get_many(self, params: Any) -> Any:
        answer = self.answers.pop(0)
        if isinstance(answer, BaseException):
            raise answer
        return answer


@pytest.mark.parametrize(
    ("answer", "values", "failed"),
    [
        ((0.5, 2, "s"), (0.5, 2, "s"), []),  # plain: taken as it is, on the thread
        ((np.float64(0.5), np.int64(2), None), (np.float64(0.5), np.int64(2), None), []),
        ([0.5, 2.0, 3.0], (0.5, 2.0, 3.0), []),  # the read makes any sequence a tuple
        ((0.5, ValueError("b"), 3.0), [0.5, None, 3.0], [("b", "ValueError")]),
        ((0.5, 2.0), [None] * 3, [(c, "ValueError") for c in "abc"]),  # wrong length
        (OSError("gone"), [None] * 3, [(c, "OSError") for c in "abc"]),  # the read raised
    ],
)
async def test_thread_read_fast_check_keeps_the_parse_rules(
    answer: Any, values: Any, failed: list[tuple[str, str]]
) -> None:
    """The instrument thread takes a full tuple of plain values without calling
    ``GroupReader.parse``; everything else still goes through it, with the same outcome."""
    channels = tuple(
        Channel(label, "signal", f"inst.{label}", "inst", label, "", "any") for label in "abc"
    )
    group = PollGroup("g", "signal", 0.01, channels)
    inst = _GetMany()
    inst.answers.append(answer)
    worker = _Worker()  # the reader only hands it back with the read: no thread needed
    reader = GroupReader(group, {"inst": inst}, {"inst": worker}, None)  # type: ignore[dict-item]
    _, read = reader.thread_plan()  # type: ignore[misc]
    clock = SystemClock()
    tg = ThreadedGroup(
        GroupStats(0, "g", 0.01),
        clock=clock,
        schedule=Schedule(clock.monotonic() - 1.0, 0.01),  # due already: no wait
        next_sample_idx=0,
        end_at=None,
        read=read,
        parse=reader.parse,
        failures=reader.failures,
        size=3,
        worker=worker,  # type: ignore[arg-type]
        loop=asyncio.get_running_loop(),
        timeout_s=None,
    )
    tg.tick()
    samples, failures = tg.take()
    assert len(samples) == 1
    got = samples[0].values
    assert type(got) is type(values) and list(got) == list(values)
    assert [type(v) for v in got] == [type(v) for v in values], "numpy scalars stay numpy"
    if type(answer) is tuple and not failed:
        assert got is answer, "a clean tuple is the sample's values, not a copy"
    assert [(f.channel, f.error_type) for f in failures.get(0, ())] == failed
    assert tg.stats.failed_reads == (1 if failed else 0)
