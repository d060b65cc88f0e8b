"""Shared pieces: the run context, a 12-channel in-process instrument, trajmon run helpers.

Every benchmark reads and writes 12 float channels unless its target says otherwise, so all the
figures describe the same row shape. The instrument's values are non-integral random floats:
SQLite stores integral REALs as small integers, which would flatter the bytes-per-value figure.
"""

from __future__ import annotations

import contextlib
import itertools
import random
import resource
import sqlite3
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio

from trajmon import MonitorConfig, Recorder, RunSummary
from trajmon.channels import Channel, PollGroup
from trajmon.clock import SystemClock
from trajmon.config import ChannelSpec
from trajmon.connection import open_connection
from trajmon.gcpause import gc_recording
from trajmon.records import Sample, SampleBatch
from trajmon.runstore import NewRun, create_run
from trajmon.schema import migrate
from trajmon.sink import QueueSink, open_queue
from trajmon.writer import Writer, WriterTarget

__all__ = [
    "CHANNELS",
    "Ctx",
    "bench_instrument",
    "channel_specs",
    "float_group",
    "neighbour_ratios",
    "peak_rss_mb",
    "record",
    "rss_mb",
    "started_writer",
    "value_pool",
]

CHANNELS = 12
#: Samples per queue item when feeding the writer directly: what an instrument thread hands over
#: per batch at 1 kHz (``threaded.FLUSH_S`` = 50 ms), the common high-rate case.
FEED_BATCH = 50
#: The shortest duration a quick run at a small scale gets (:meth:`Ctx.seconds`): long enough
#: for a recording to start, commit rows and stop, so every figure is still computed.
QUICK_MIN_S = 0.2
_names = itertools.count()


@dataclass(frozen=True, slots=True)
class Ctx:
    """How big and how long: ``full`` uses the issue's real sizes, ``quick`` a fraction."""

    mode: str
    scale: float
    workdir: Path

    @property
    def quick(self) -> bool:
        return self.mode == "quick"

    def size(self, full: int, quick: int, minimum: int = 1) -> int:
        return max(minimum, int((quick if self.quick else full) * self.scale))

    def seconds(self, full: float, quick: float, minimum: float = 0.5) -> float:
        """``full`` or ``quick`` seconds times the scale, never under ``minimum``.

        In quick mode the minimum shrinks with a scale below 1 as well (never under
        :data:`QUICK_MIN_S`): quick figures are not comparable with the targets anyway, and a
        tiny-scale quick run is the test suite's check that the harness works
        (``tests/test_bench_smoke.py``), which needs every benchmark to run, not to run long.
        Full mode is untouched, and so is quick mode at scale 1 or more (``make bench-quick``):
        every minimum passed here is above :data:`QUICK_MIN_S`."""
        if self.quick:
            minimum = max(QUICK_MIN_S, minimum * min(1.0, self.scale))
        return max(minimum, (quick if self.quick else full) * self.scale)

    def path(self, name: str) -> Path:
        """A fresh file in the work directory (removed first, with its WAL)."""
        p = self.workdir / name
        for suffix in ("", "-wal", "-shm"):
            Path(f"{p}{suffix}").unlink(missing_ok=True)
        return p


def neighbour_ratios(rates: Sequence[float], bare: Sequence[float]) -> list[float]:
    """Rounds against a baseline run before the first run and after each: every run's rate ÷
    the mean of the baseline rates just before and after it. This VM's cores change speed
    within seconds, so a run is only compared with the baseline measured around it (targets 1
    and 3; docs/performance.md)."""
    if len(bare) != len(rates) + 1:
        raise ValueError(f"{len(rates)} runs need {len(rates) + 1} baseline runs, not {len(bare)}")
    return [rate / ((bare[i] + bare[i + 1]) / 2) for i, rate in enumerate(rates)]


def bench_instrument(name: str | None = None, seed: int = 0) -> Any:
    """A QCoDeS instrument with 12 float parameters ``ch00``..``ch11``, no I/O, no ``get_many``.

    Without ``get_many`` trajmon reads it exactly as the bare-get baseline does (one
    ``parameter.get()`` per channel), so the ratio isolates trajmon's own overhead.
    """
    from qcodes.instrument import Instrument
    from qcodes.validators import Numbers

    rng = random.Random(seed)
    inst = Instrument(name or f"bench{next(_names)}")
    for i in range(CHANNELS):
        inst.add_parameter(f"ch{i:02d}", get_cmd=rng.random, unit="V", vals=Numbers())
    return inst


def parameters(inst: Any) -> list[Any]:
    return [inst.parameters[f"ch{i:02d}"] for i in range(CHANNELS)]


def channel_specs(inst_name: str) -> list[ChannelSpec]:
    return [
        ChannelSpec(label=f"ch{i:02d}", source=f"{inst_name}.ch{i:02d}", kind="signal")
        for i in range(CHANNELS)
    ]


def float_group(interval_s: float = 0.001) -> PollGroup:
    """The 12-float signal group the writer benchmarks feed directly (no instrument)."""
    channels = tuple(
        Channel(f"ch{i:02d}", "signal", f"bench.ch{i:02d}", "bench", "signals", "V", "float")
        for i in range(CHANNELS)
    )
    return PollGroup("signals", "signal", interval_s, channels)


def value_pool(size: int = 4096, seed: int = 1) -> list[list[float]]:
    """Pre-built value lists: producing rows must cost the benchmarks next to nothing."""
    rng = random.Random(seed)
    return [[rng.random() for _ in range(CHANNELS)] for _ in range(size)]


@contextlib.asynccontextmanager
async def started_writer(
    db: Path, *, commit_rows: int = 5000, queue_size: int = 20000, rotate: int = 6000
) -> AsyncIterator[tuple[Writer, QueueSink, WriterTarget]]:
    """trajmon's real writer path (run row, typed table, queue, writer), as the recorder builds
    it, without pollers, under the collector setting a recording runs with
    (:func:`trajmon.gcpause.gc_recording`). The caller closes the sink; the writer drains and
    returns."""
    with gc_recording():
        cfg = MonitorConfig(
            run_name="bench", db=db, rotate_entries=rotate, commit_rows=commit_rows, channels=[]
        )
        with contextlib.closing(sqlite3.connect(db)) as setup:
            migrate(setup)
        conn = await open_connection(db)
        clock = SystemClock()
        try:
            target = await create_run(
                conn, NewRun("bench", clock.wall(), clock.monotonic(), cfg, [float_group()], None)
            )
            writer, sink = open_queue(
                conn,
                target,
                clock=clock,
                commit_interval_s=cfg.commit_interval_s,
                commit_rows=commit_rows,
                queue_size=queue_size,
            )
            yield writer, sink, target
        finally:
            await conn.close()


async def feed_writer(
    db: Path, rows: int, pool: list[list[float]], *, marks: list[tuple[float, int]] | None = None
) -> float:
    """Push ``rows`` pre-built samples through queue + writer, in batches of
    :data:`FEED_BATCH` as the instrument threads deliver them; returns seconds until all are
    committed. Building the samples is not timed (nor is building the bare baseline's rows).

    ``marks`` receives (time since start, rows committed) after every commit, for the
    flat-with-run-length figure.
    """
    n = len(pool)
    batches = [
        SampleBatch(
            0,
            [
                Sample(0, i, i * 1e-3, 1e-5, pool[i % n])
                for i in range(first, min(rows, first + FEED_BATCH))
            ],
        )
        for first in range(0, rows, FEED_BATCH)
    ]
    async with started_writer(db) as (writer, sink, target):
        stats = target.stats[0]
        start = time.perf_counter()

        async def watch() -> None:
            seen = 0
            while True:
                await writer.wait_commits(seen + 1)
                seen = writer.commits
                if marks is not None:
                    marks.append((time.perf_counter() - start, stats.samples_committed))
                if stats.samples_committed >= rows:
                    return

        async with anyio.create_task_group() as tg:
            tg.start_soon(writer.run)
            tg.start_soon(watch)
            for batch in batches:
                await sink.send(batch)
                stats.samples_read += len(batch.samples)
                # A poller task yields after each batch it hands over (it then waits for the
                # next one); so does this feeder.
                await anyio.lowlevel.checkpoint()
            sink.close()
        return time.perf_counter() - start


async def record(
    db: Path, run_name: str, inst: Any, *, interval_s: float, duration_s: float, **cfg: Any
) -> RunSummary:
    """One real trajmon run of the 12-channel instrument (all channels in one signal group)."""
    config = MonitorConfig(
        run_name=run_name,
        db=db,
        interval_s=interval_s,
        duration_s=duration_s,
        channels=channel_specs(inst.name),
        **cfg,
    )
    return await Recorder(config, {inst.name: inst}).run()


def rss_mb() -> float:
    import psutil

    return float(psutil.Process().memory_info().rss) / 2**20


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@contextlib.contextmanager
def closing_instrument(inst: Any) -> Iterator[Any]:
    try:
        yield inst
    finally:
        inst.close()


def committed_rate(db: Path, table: str, warmup_s: float) -> tuple[float, int]:
    """Samples/s over the committed rows after ``warmup_s`` (start-up is not the steady state)."""
    with contextlib.closing(sqlite3.connect(db)) as conn:
        n, first, last = conn.execute(
            f'SELECT count(*), min(dt_s), max(dt_s) FROM "{table}" WHERE dt_s >= ?', (warmup_s,)
        ).fetchone()
    if not n or last is None or last <= first:
        return 0.0, int(n or 0)
    return (n - 1) / (last - first), int(n)
