"""Readers in other threads never see "database is locked" and do not hold up the writer."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import anyio
import pytest

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
count = 0
while not stop.exists():
    with closing(connect_readonly(db)) as conn:
        ref = resolve_run(conn, "busy")
        assert list_runs(conn)[0]["status"] in ("running", "completed")
        list_actions(conn, ref)
        (last,) = conn.execute("SELECT max(last_dt_s) FROM poll_groups").fetchone()
        window_rows(conn, ref, "signal", (last or 0.0) - 2.5, (last or 0.0) + 2.5)
        count += 1
    time.sleep(0.02)  # 50 queries a second: far more than status --watch and actions together
print(count)
"""


async def test_readers_in_another_process_while_recording(
    db_path: Path, stm: SimulatedSTM, tmp_path: Path
) -> None:
    config = MonitorConfig(run_name="busy", db=db_path, interval_s=0.01, duration_s=3.0)
    recorder = Recorder(config, {"stm": stm})
    stop = tmp_path / "stop"
    result: list[subprocess.CompletedProcess[bytes]] = []

    async def read_concurrently() -> None:
        cmd = [sys.executable, "-c", READER, str(db_path), str(stop)]
        result.append(await anyio.run_process(cmd, check=False))

    async with anyio.create_task_group() as tg:
        tg.start_soon(recorder.run)
        await recorder.wait_until(lambda: recorder.stats[0].samples_committed > 0)
        tg.start_soon(read_concurrently)
        await recorder.wait_until(lambda: recorder.stats[0].samples_read >= 250)
        await anyio.Path(stop).touch()
    (reader,) = result
    assert reader.returncode == 0, reader.stderr.decode()
    assert int(reader.stdout.decode().strip()) > 5, "the reader kept reading during the run"
    with closing(connect_readonly(db_path)) as conn:
        (run,) = list_runs(conn)
    assert run["status"] == "completed"
    ticks = run["signal_samples"] + run["spec_samples"] + run["missed_ticks"]
    assert run["missed_ticks"] <= 0.05 * ticks, "readers do not hold up sampling or commits"
