"""Action events as a scientist reads them afterwards: a ``bool`` spec's column holds only what
its driver answered as a boolean (a raw ``b"0"`` is not "on"), and a spec read that failed
with the driver's own ``TimeoutError`` says so — then is a gap, not a phantom change."""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import anyio
import numpy as np
import pytest
from qcodes.instrument import Instrument
from qcodes.validators import Bool, Ints, Numbers

from trajmon import (
    ChannelSpec,
    FakeClock,
    MonitorConfig,
    Recorder,
    connect_readonly,
    list_actions,
    resolve_run,
)
from trajmon.channels import canonical_for, encoder_for


class Switch(Instrument):
    """A signal and one ``Bool`` spec whose answer the test sets, as a driver returns it."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.answer: Any = True
        self.add_parameter("sig", get_cmd=lambda: 1.0, set_cmd=False, vals=Numbers())
        self.add_parameter("on", get_cmd=lambda: self.answer, set_cmd=False, vals=Bool())
        self.count_answer: Any = 3
        self.add_parameter("count", get_cmd=lambda: self.count_answer, set_cmd=False, vals=Ints())


@pytest.fixture
def switch() -> Iterator[Switch]:
    instrument = Switch("switch")
    yield instrument
    instrument.close()


async def _record(recorder: Recorder, clock: FakeClock, steps: list[Callable[[], None]]) -> None:
    """The first sample, then one tick after each step (every group reads it); then stop."""

    def read(n: int) -> Callable[[], bool]:
        return lambda: min(s.samples_read for s in recorder.stats) >= n

    async with anyio.create_task_group() as tg:
        tg.start_soon(recorder.run)
        with anyio.fail_after(10):
            await recorder.wait_until(read(1))
            for step in steps:
                step()
                target = min(s.samples_read for s in recorder.stats) + 1
                await clock.advance(0.1)
                await recorder.wait_until(read(target))
        recorder.request_stop()


# --------------------------------------------------------------------------------------------
# a bool spec takes booleans (and a 0/1 flag), not whatever is truthy


NOT_BOOLEANS = [
    pytest.param(b"0", id="bytes-0"),
    pytest.param(b"1", id="bytes-1"),
    pytest.param(b"", id="empty-bytes"),
    pytest.param(2, id="two"),
    pytest.param(-1, id="minus-one"),
    pytest.param(0.5, id="half"),
    pytest.param(math.nan, id="nan"),
    pytest.param(np.float64(math.nan), id="numpy-nan"),
    pytest.param([0], id="list"),
    pytest.param({"on": False}, id="dict"),
]


@pytest.mark.parametrize("value", NOT_BOOLEANS)
def test_a_bool_column_refuses_what_is_not_a_boolean_instead_of_storing_its_truth(
    value: Any,
) -> None:
    """``1 if value else 0`` stored a raw answer ``b"0"`` (off) as 1 (on), NaN as on, and a
    flag read as 1 then 2 as on twice: a wrong value in the table and a change that was never
    an action. Such a read is a ``bad_value`` (NULL, a gap for detection), like text."""
    with pytest.raises(ValueError, match="not a boolean"):
        encoder_for("bool")(value)
    with pytest.raises(ValueError, match="not a boolean"):
        canonical_for("bool")(value)


@pytest.mark.parametrize(
    ("value", "stored"),
    [
        (True, 1),
        (False, 0),
        (np.bool_(True), 1),
        (1, 1),
        (0, 0),
        (np.int64(1), 1),
        (1.0, 1),
        (-0.0, 0),
    ],
)
def test_a_bool_column_still_takes_booleans_and_a_0_or_1_flag(value: Any, stored: int) -> None:
    assert encoder_for("bool")(value) == stored
    assert canonical_for("bool")(value) is bool(stored)


async def test_a_bool_spec_answering_raw_bytes_is_a_bad_value_not_on(
    db_path: Path, switch: Switch
) -> None:
    """End to end: the driver answers ``b"0"`` (off), then ``2``, then ``False``. The table used
    to read on, on, on, off with one action; now it has gaps where the answers were no
    booleans, their ``bad_value`` rows, and the one real change, against the last good read."""
    config = MonitorConfig(
        run_name="switch",
        db=db_path,
        source="instruments",
        interval_s=0.1,
        channels=[
            ChannelSpec(label="Sig", source="switch.sig", kind="signal"),
            ChannelSpec(label="On", source="switch.on", kind="spec"),
        ],
    )
    clock = FakeClock()
    steps = [lambda v=v: setattr(switch, "answer", v) for v in (b"0", 2, False)]
    await _record(Recorder(config, {"switch": switch}, clock=clock), clock, steps)
    with closing(sqlite3.connect(db_path)) as conn:
        stored = [r[0] for r in conn.execute('SELECT "On" FROM "switch/specs" ORDER BY sample_idx')]
        errors = conn.execute("SELECT error_type, reads FROM monitor_errors").fetchall()
        dts = [r[0] for r in conn.execute('SELECT dt_s FROM "switch/specs" ORDER BY sample_idx')]
    assert stored[:4] == [1, None, None, 0]
    assert errors == [("bad_value", 2)]
    with closing(connect_readonly(db_path)) as conn:
        actions = list_actions(conn, resolve_run(conn, None))
    assert [(a["old_value"], a["new_value"], a["prev_dt_s"]) for a in actions] == [
        (True, False, dts[0])
    ]


# --------------------------------------------------------------------------------------------
# a driver's own TimeoutError is the driver's error, and a gap for detection


class Controller(Instrument):
    """A spec read through ``get_many`` (as the Nanonis driver reads), which raises what the
    test queues instead of answering: a driver whose socket gave up on its own."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.bias = 0.25
        self.raises: list[BaseException] = []
        self.add_parameter("bias_v", get_cmd=lambda: self.bias, set_cmd=False, vals=Numbers())

    def get_many(self, params: Any) -> list[Any]:
        if self.raises:
            raise self.raises.pop(0)
        return [p.get() for p in params]


@pytest.fixture
def controller() -> Iterator[Controller]:
    instrument = Controller("ctl")
    yield instrument
    instrument.close()


async def test_a_drivers_own_timeout_keeps_its_words_and_is_a_gap_not_an_action(
    db_path: Path, controller: Controller, switch: Switch
) -> None:
    """A spec group reading two instruments: the controller's ``get_many`` raised its socket's
    ``TimeoutError`` at once, and the row said ``timeout`` / "no answer within 2.0 s" — a hang
    that never was, the driver's words (which request, which host, its own 0.5 s) lost. The
    same value read after it is no action; a new one is, against the read before the gap."""
    config = MonitorConfig(
        run_name="two",
        db=db_path,
        source="instruments",
        interval_s=0.1,
        read_timeout_s=2.0,
        channels=[
            ChannelSpec(label="Sig", source="switch.sig", kind="signal"),
            ChannelSpec(label="Bias", source="ctl.bias_v", kind="spec"),
            ChannelSpec(label="On", source="switch.on", kind="spec"),
        ],
    )
    said = "Bias.Get: no reply from 10.0.0.2:6501 within 0.5 s; connection closed"

    def fail_once() -> None:
        controller.raises.append(TimeoutError(said))

    def turn() -> None:
        controller.bias = 0.5

    clock = FakeClock()
    await _record(
        Recorder(config, {"ctl": controller, "switch": switch}, clock=clock),
        clock,
        [fail_once, lambda: None, turn],
    )
    with closing(sqlite3.connect(db_path)) as conn:
        errors = conn.execute(
            "SELECT channel, error_type, message, reads FROM monitor_errors"
        ).fetchall()
        rows = conn.execute('SELECT dt_s, "Bias" FROM "two/specs" ORDER BY sample_idx').fetchall()
    assert errors == [("Bias", "TimeoutError", said, 1)]
    assert [bias for _, bias in rows[:4]] == [0.25, None, 0.25, 0.5]
    with closing(connect_readonly(db_path)) as conn:
        actions = list_actions(conn, resolve_run(conn, None))
    assert [(a["spec_label"], a["old_value"], a["new_value"]) for a in actions] == [
        ("Bias", 0.25, 0.5)
    ]
    assert actions[0]["prev_dt_s"] == rows[2][0] and actions[0]["dt_s"] == rows[3][0]


async def test_a_spec_value_whose_conversion_raises_anything_is_a_gap_not_the_runs_end(
    db_path: Path, switch: Switch
) -> None:
    """``np.ma.masked`` on an int spec: numpy's MaskError is no TypeError or ValueError. The
    writer stored it as a gap, but the detector let it out and the run ended ``failed``."""
    config = MonitorConfig(
        run_name="masked",
        db=db_path,
        source="instruments",
        interval_s=0.1,
        channels=[
            ChannelSpec(label="Sig", source="switch.sig", kind="signal"),
            ChannelSpec(label="Count", source="switch.count", kind="spec"),
        ],
    )
    clock = FakeClock()
    recorder = Recorder(config, {"switch": switch}, clock=clock)
    steps = [lambda v=v: setattr(switch, "count_answer", v) for v in (np.ma.masked, 3, 4)]
    await _record(recorder, clock, steps)
    with closing(sqlite3.connect(db_path)) as conn:
        status = conn.execute("SELECT status FROM runs").fetchone()[0]
        stored = [
            r[0] for r in conn.execute('SELECT "Count" FROM "masked/specs" ORDER BY sample_idx')
        ]
    assert status == "interrupted"
    assert stored[:4] == [3, None, 3, 4]
    with closing(connect_readonly(db_path)) as conn:
        actions = list_actions(conn, resolve_run(conn, None))
    assert [(a["old_value"], a["new_value"]) for a in actions] == [(3, 4)]
