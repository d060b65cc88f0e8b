"""Small recordings the read-side tests share: made once per module with the in-process
simulator, so that queries and the CLI have a real run to read."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any

import anyio

from simulators.qcodes_sim import SimulatedSTM
from trajmon import MonitorConfig, Recorder, RunSummary
from trajmon.channels import decode_value
from trajmon.clock import FakeClock
from trajmon.schema import quote_ident


def record_one_bias_change(
    db: Path, run: str, *, seed: int, window_before_s: float, before: int, after: int
) -> None:
    """A run of every default channel at 50 Hz in which the operator turns the bias once,
    after ``before`` spec reads; it stops (interrupted) once the action is detected and
    ``after`` signal samples were read."""
    stm = SimulatedSTM("stm", seed=seed)
    config = MonitorConfig(run_name=run, db=db, interval_s=0.02, window_before_s=window_before_s)
    recorder = Recorder(config, {"stm": stm})

    async def main() -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(recorder.run)
            with anyio.fail_after(30):
                await recorder.wait_until(lambda: recorder.stats[1].samples_read >= before)
                await anyio.to_thread.run_sync(stm.bias.set, 0.6)
                await recorder.wait_until(
                    lambda: (
                        recorder.detector_actions >= 1 and recorder.stats[0].samples_read >= after
                    )
                )
            recorder.request_stop()

    try:
        anyio.run(main)
    finally:
        stm.close()


def record_every_tick(
    config: MonitorConfig, instruments: dict[str, Any], *, resume: bool = False
) -> RunSummary:
    """Record ``config`` (which has a duration) to its end on a simulated clock that moves one
    interval only once every group has read the tick before.

    On real time a loaded machine misses ticks: a CI run once read 15 of 40, and the read in
    which a fixture's value changes never came. Here every tick of the duration is read.
    """
    assert config.duration_s is not None, "a run to its end needs a duration"
    clock = FakeClock()
    recorder = Recorder(config, instruments, clock=clock, resume=resume)
    end = clock.monotonic() + config.duration_s
    step = config.interval_s * (1 + 1e-9)  # past the tick however the sum rounds

    def reads() -> int:
        return min(s.samples_read for s in recorder.stats)

    async def main() -> RunSummary:
        summaries: list[RunSummary] = []

        async def record() -> None:
            summaries.append(await recorder.run())

        async with anyio.create_task_group() as tg:
            tg.start_soon(record)
            target = 1
            while not recorder.ended.is_set():
                with anyio.fail_after(10):  # past the end, no read is due: only time ends it
                    await recorder.wait_until(
                        lambda t=target: reads() >= t or clock.monotonic() >= end
                    )
                target = reads() + 1
                await clock.advance(step)
        return summaries[0]

    return anyio.run(main)


def decoded_table(db: Path, table: str, other_type: str) -> dict[str, list[Any]]:
    """A sample table's columns decoded straight from SQLite, in ``sample_idx`` order: what
    every export must reproduce. ``other_type`` decodes the columns that are not channels."""
    with closing(sqlite3.connect(db)) as conn:
        types = dict(conn.execute("SELECT label, value_type FROM channels").fetchall())
        cur = conn.execute(f"SELECT * FROM {quote_ident(table)} ORDER BY sample_idx")
        names = [d[0] for d in cur.description]
        rows = cur.fetchall()
    return {
        n: [decode_value(types.get(n, other_type), r[i]) for r in rows]
        for i, n in enumerate(names)
        if n != "segment_id"
    }
