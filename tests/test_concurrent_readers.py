"""Readers in other threads never see "database is locked" and do not hold up the writer."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import anyio
import pytest
from anyio.streams.buffered import BufferedByteReceiveStream

from simulators.qcodes_sim import SimulatedSTM
from trajmon import MonitorConfig, Recorder
from trajmon.queries import connect_readonly, list_runs


@pytest.fixture
def stm() -> Iterator[SimulatedSTM]:
    instrument = SimulatedSTM("stm", seed=6)
    yield instrument
    instrument.close()


READER = """
import sys, pathlib, time
from contextlib import closing
from trajmon.queries import connect_readonly, list_actions, list_runs, resolve_run
from trajmon.windows import window_rows
db, stop = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
while not stop.exists():
    with closing(connect_readonly(db)) as conn:
        ref = resolve_run(conn, "busy")
        (run,) = list_runs(conn)
        list_actions(conn, ref)
        (last,) = conn.execute("SELECT max(last_dt_s) FROM poll_groups").fetchone()
        window_rows(conn, ref, "signal", (last or 0.0) - 2.5, (last or 0.0) + 2.5)
    print(run["status"], run["signal_samples"], flush=True)  # what this read saw
    time.sleep(0.02)  # 50 queries a second: far more than status --watch and actions together
"""


async def test_readers_in_another_process_while_recording(
    db_path: Path, stm: SimulatedSTM, tmp_path: Path
) -> None:
    """The reader reads in a loop while the run records; the run stops once the reader has
    seen three different commits while it ran — the writer committed between its reads. No
    timing is asserted (a loaded machine misses ticks whoever reads): what would show a
    reader holding the writer up is a locked database, a failed run or lost samples."""
    config = MonitorConfig(run_name="busy", db=db_path, interval_s=0.01)
    recorder = Recorder(config, {"stm": stm})
    stop = tmp_path / "stop"
    seen: set[int] = set()
    cmd = [sys.executable, "-c", READER, str(db_path), str(stop)]

    async with anyio.create_task_group() as tg:
        tg.start_soon(recorder.run)
        with anyio.fail_after(60):
            await recorder.wait_until(lambda: recorder.stats[0].samples_committed > 0)
            async with await anyio.open_process(cmd) as reader:
                assert reader.stdout is not None and reader.stderr is not None
                lines = BufferedByteReceiveStream(reader.stdout)
                while len(seen) < 3:  # a writer held up commits nothing new: fail_after
                    try:
                        status, committed = (await lines.receive_until(b"\n", 200)).split()
                    except anyio.IncompleteRead:  # the reader died (a locked database, say)
                        await reader.wait()
                        said = b"".join([chunk async for chunk in reader.stderr])
                        pytest.fail(f"the reader failed: {said.decode()}")
                    if status == b"running":
                        seen.add(int(committed))
                await anyio.Path(stop).touch()
                recorder.request_stop()
                await reader.wait()
                errors = b"".join([chunk async for chunk in reader.stderr])
            assert reader.returncode == 0, errors.decode()
    with closing(connect_readonly(db_path)) as conn:
        (run,) = list_runs(conn)
    assert run["status"] == "interrupted", run
    assert run["errors"] == 0 and run["lost_samples"] == 0, run
