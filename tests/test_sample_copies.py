"""A sample holds what the instrument answered at its read, even when the driver hands out the
same object every time and changes it in place (an array it reuses as its buffer, its state
dict): samples wait for the next commit before they are encoded, and every sample of a batch
was stored with what the object held at the commit."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import anyio
import numpy as np
import pytest
from qcodes.instrument import Instrument
from qcodes.validators import Arrays, Numbers

from trajmon import ChannelSpec, FakeClock, MonitorConfig, Recorder
from trajmon.channels import decode_value


class Buffered(Instrument):
    """Reuses one array and one dict for every read, as drivers with a receive buffer do."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.reads = 0
        self.buffer = np.zeros(3)
        self.state: dict[str, Any] = {"reads": 0}
        self.add_parameter("trace", get_cmd=self._trace, set_cmd=False, vals=Arrays(shape=(3,)))
        self.add_parameter("status", get_cmd=self._status, set_cmd=False)

    def _trace(self) -> np.ndarray:
        self.reads += 1
        self.buffer[:] = self.reads
        return self.buffer

    def _status(self) -> dict[str, Any]:
        self.state["reads"] += 1
        return self.state


class Plain(Instrument):
    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.add_parameter("level", get_cmd=lambda: 1.0, set_cmd=False, vals=Numbers())


@pytest.fixture
def instruments() -> Iterator[dict[str, Any]]:
    made = {"buf": Buffered("buf"), "plain": Plain("plain")}
    yield made
    for instrument in made.values():
        instrument.close()


async def _record(db: Path, instruments: dict[str, Any], sources: list[str], n: int) -> None:
    """``n`` samples of one signal group, all in one commit (1 s apart, commits every 10 s)."""
    config = MonitorConfig(
        run_name="buffered",
        db=db,
        source="instruments",
        interval_s=1.0,
        commit_interval_s=10.0,
        channels=[
            ChannelSpec(label=src.replace(".", "_"), source=src, kind="signal") for src in sources
        ],
    )
    clock = FakeClock()
    recorder = Recorder(config, instruments, clock=clock)
    async with anyio.create_task_group() as tg:
        tg.start_soon(recorder.run)
        with anyio.fail_after(10):
            for k in range(1, n + 1):
                assert await recorder.wait_until(lambda k=k: recorder.stats[0].samples_read >= k)
                if k < n:
                    await clock.advance(1.0)
        recorder.request_stop()


def _column(db: Path, label: str, value_type: str) -> list[Any]:
    with closing(sqlite3.connect(db)) as conn:
        rows = conn.execute(f'SELECT "{label}" FROM "buffered/signals" ORDER BY sample_idx')
        return [decode_value(value_type, r[0]) for r in rows]


@pytest.mark.parametrize(
    "sources",
    [
        pytest.param(["buf.trace", "buf.status"], id="one-instrument"),
        pytest.param(["buf.trace", "buf.status", "plain.level"], id="two-instruments"),
    ],
)
async def test_each_sample_keeps_the_values_of_its_own_read(
    db_path: Path, instruments: dict[str, Any], sources: list[str]
) -> None:
    await _record(db_path, instruments, sources, 3)
    traces = _column(db_path, "buf_trace", "array")
    assert [t.tolist() for t in traces] == [[1.0] * 3, [2.0] * 3, [3.0] * 3]
    assert _column(db_path, "buf_status", "any") == [str({"reads": k}) for k in (1, 2, 3)]
