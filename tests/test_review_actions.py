"""Action detection and action queries on values the other tests do not feed: untyped specs
(dicts, complex numbers, a MultiParameter's arrays) across a resume and when the driver changes
them in place or changes their shapes, ints against floats beyond 2**53, and the library's
``list_actions`` given counts and bounds SQLite would misread."""

from __future__ import annotations

import math
import struct
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import anyio
import numpy as np
import pytest
from qcodes.instrument import Instrument
from qcodes.validators import Numbers

from trajmon import (
    ChannelSpec,
    FakeClock,
    MonitorConfig,
    Recorder,
    RunFailedError,
    connect_readonly,
    list_actions,
    resolve_run,
)
from trajmon.channels import Channel, numeric_delta
from trajmon.detection import ChangeDetector, values_equal
from trajmon.records import Sample
from trajmon.resume import load_resume_config
from trajmon.windows import window_columns


class Knobs(Instrument):
    """A signal and one untyped spec (no validator) whose value the test sets."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.setting: Any = None
        self.add_parameter("sig", get_cmd=lambda: 1.0, set_cmd=False, vals=Numbers())
        self.add_parameter("setting", get_cmd=lambda: self.setting, set_cmd=False)


@pytest.fixture
def knobs() -> Iterator[Knobs]:
    instrument = Knobs("knobs")
    yield instrument
    instrument.close()


def _config(db: Path) -> MonitorConfig:
    return MonitorConfig(
        run_name="untyped",
        db=db,
        source="instruments",
        interval_s=0.1,
        channels=[
            ChannelSpec(label="Sig", source="knobs.sig", kind="signal"),
            ChannelSpec(label="Setting", source="knobs.setting", kind="spec"),
        ],
    )


async def _record(recorder: Recorder, clock: FakeClock, steps: list[Callable[[], None]]) -> Any:
    """Record the first sample, then one tick after each step; stop. Returns the summary, or
    the :class:`RunFailedError` the run ended with."""
    result: dict[str, Any] = {}

    async def run() -> None:
        try:
            result["summary"] = await recorder.run()
        except RunFailedError as exc:
            result["summary"] = exc

    def read(n: int) -> Callable[[], bool]:
        return lambda: min(s.samples_read for s in recorder.stats) >= n

    async with anyio.create_task_group() as tg:
        tg.start_soon(run)
        with anyio.fail_after(10):
            await recorder.wait_until(read(1))
            for step in steps:
                step()
                target = min(s.samples_read for s in recorder.stats) + 1
                await clock.advance(0.1)
                if not await recorder.wait_until(read(target)):
                    break
        recorder.request_stop()
    return result["summary"]


def _actions(db: Path) -> list[tuple[Any, Any]]:
    with closing(connect_readonly(db)) as conn:
        return [
            (a["old_value"], a["new_value"]) for a in list_actions(conn, resolve_run(conn, None))
        ]


def _set(knobs: Knobs, value: Any) -> Callable[[], None]:
    return lambda: setattr(knobs, "setting", value)


# --------------------------------------------------------------------------------------------
# untyped specs across a resume


@pytest.mark.parametrize(
    ("before", "after", "actions"),
    [
        pytest.param({"mode": "cc", "gain": 3}, {"mode": "cc", "gain": 3}, 0, id="same-dict"),
        pytest.param({"mode": "cc", "gain": 3}, {"gain": 3, "mode": "cc"}, 0, id="reordered"),
        pytest.param(1 + 2j, 1 + 2j, 0, id="same-complex"),
        pytest.param({"mode": "cc"}, {"mode": "ch"}, 1, id="changed-dict"),
    ],
)
async def test_an_untyped_spec_kept_as_text_is_compared_as_itself_across_a_resume(
    db_path: Path, knobs: Knobs, before: Any, after: Any, actions: int
) -> None:
    """An untyped column stores a dict or a complex as its text, and a resume primes detection
    from what is stored, while detection compares the objects themselves: every resume made an
    unchanged dict an action, "{'mode': 'cc', 'gain': 3}" -> "{'mode': 'cc', 'gain': 3}"."""
    knobs.setting = before
    clock = FakeClock()
    await _record(Recorder(_config(db_path), {"knobs": knobs}, clock=clock), clock, [])
    resumed = load_resume_config(db_path, "untyped")
    clock = FakeClock(wall_start=clock.wall() + 1.0)  # a second later, in a new process
    steps = [_set(knobs, after), _set(knobs, after)]
    summary = await _record(
        Recorder(resumed, {"knobs": knobs}, clock=clock, resume=True), clock, steps
    )
    assert summary.status == "interrupted"
    got = _actions(db_path)
    assert len(got) == actions, got
    if actions:
        assert got == [(str(before), str(after))]


# --------------------------------------------------------------------------------------------
# a MultiParameter's arrays changing shape


async def test_arrays_that_change_from_different_shapes_to_one_shape_are_an_action(
    db_path: Path, knobs: Knobs
) -> None:
    """Arrays of different shapes are one .npz (a tuple), arrays of one shape one array: the
    comparison asked numpy to make one array of the tuple, and its ValueError failed the run
    ("unexpected error"), the samples read since the last commit lost."""
    knobs.setting = (np.arange(2.0), np.arange(3.0))
    clock = FakeClock()
    recorder = Recorder(_config(db_path), {"knobs": knobs}, clock=clock)
    steps = [
        _set(knobs, (np.arange(3.0), np.arange(3.0))),
        _set(knobs, (np.arange(2.0), np.arange(3.0))),
    ]
    summary = await _record(recorder, clock, steps)
    assert not isinstance(summary, RunFailedError), summary
    assert summary.status == "interrupted" and summary.lost_samples == 0
    got = _actions(db_path)
    assert [(type(old), type(new)) for old, new in got] == [
        (tuple, np.ndarray),
        (np.ndarray, tuple),
    ]
    assert np.array_equal(got[0][1], [[0.0, 1.0, 2.0]] * 2)
    assert [a.shape for a in got[1][1]] == [(2,), (3,)]


@pytest.mark.parametrize(
    "other", [np.zeros((2, 3)), np.zeros(2)], ids=["one-array", "one-element-shape"]
)
def test_arrays_of_different_shapes_never_equal_one_array(other: np.ndarray) -> None:
    ragged = (np.zeros(2), np.zeros(3))
    assert not values_equal(ragged, other)
    assert not values_equal(other, ragged)


# --------------------------------------------------------------------------------------------
# objects the driver changes in place


def _untyped_detector() -> ChangeDetector:
    channel = Channel("Setting", "spec", "i.setting", "i", "specs", "", "any")
    return ChangeDetector(
        {1: [(0, channel)]}, window_before_s=2.5, window_after_s=2.5, wall=lambda: 0.0
    )


def test_a_dict_the_driver_changes_in_place_is_an_action_with_the_values_of_its_reads() -> None:
    """A driver that returns its own state dict every time: the known value was that very
    object, so it changed along with the reads and no change was ever an action."""
    detector = _untyped_detector()
    state = {"mode": "cc"}
    assert detector.feed(Sample(1, 0, 0.0, 0.0, [state])) == []
    state["mode"] = "ch"
    (event,) = detector.feed(Sample(1, 1, 0.1, 0.0, [state]))
    state["mode"] = "off"  # before the writer stores the event
    assert (event.old_value, event.new_value) == ({"mode": "cc"}, {"mode": "ch"})
    (event,) = detector.feed(Sample(1, 2, 0.2, 0.0, [state]))
    assert (event.old_value, event.new_value) == ({"mode": "ch"}, {"mode": "off"})


# --------------------------------------------------------------------------------------------
# numbers


def test_an_int_and_a_float_are_compared_exactly_without_a_tolerance() -> None:
    """``0`` equals ``0.0``, but ``2**53 + 1`` is not ``2.0**53``: the int was rounded to a
    float first, so in an untyped spec that change was no action."""
    assert values_equal(0, 0.0)
    assert not values_equal(2**53 + 1, 2.0**53)
    assert not values_equal(2.0**53, 2**53 + 1)
    assert values_equal(2**53 + 1, 2.0**53, tolerance_abs=1.0)
    detector = _untyped_detector()
    detector.feed(Sample(1, 0, 0.0, 0.0, [2.0**53]))
    (event,) = detector.feed(Sample(1, 1, 0.1, 0.0, [2**53 + 1]))
    assert (event.old_value, event.new_value) == (2.0**53, 2**53 + 1)


def test_complex_values_with_nan_parts_equal_themselves() -> None:
    """NaN equals NaN, so a spec reading the same complex with a NaN part has not changed."""
    nan_re = complex(math.nan, 1.0)
    assert values_equal(nan_re, complex(math.nan, 1.0))
    assert not values_equal(nan_re, complex(math.nan, 2.0))
    assert not values_equal(nan_re, 1j)
    detector = _untyped_detector()
    assert detector.feed(Sample(1, 0, 0.0, 0.0, [nan_re])) == []
    assert detector.feed(Sample(1, 1, 0.1, 0.0, [complex(math.nan, 1.0)])) == []


# --------------------------------------------------------------------------------------------
# list_actions


@pytest.fixture
async def two_actions(db_path: Path, knobs: Knobs) -> Path:
    knobs.setting = 1.0
    clock = FakeClock()
    recorder = Recorder(_config(db_path), {"knobs": knobs}, clock=clock)
    await _record(recorder, clock, [_set(knobs, 2.0), _set(knobs, 3.0)])
    return db_path


@pytest.mark.parametrize(
    ("keywords", "message"),
    [
        ({"last": -1}, "last must be 0 or more"),
        ({"limit": -1}, "limit must be 0 or more"),
        ({"since": math.nan}, "since must be a number"),
        ({"until": math.nan}, "until must be a number"),
    ],
)
def test_list_actions_refuses_what_sqlite_would_misread(
    two_actions: Path, keywords: dict[str, Any], message: str
) -> None:
    """A negative LIMIT is no limit to SQLite (``last=-1`` gave every action) and a NaN bound
    is NULL (no action at all): answers to another question, where ``actions list`` refuses."""
    with closing(connect_readonly(two_actions)) as conn:
        run = resolve_run(conn, None)
        assert len(list_actions(conn, run)) == 2
        assert list_actions(conn, run, last=0) == []
        with pytest.raises(ValueError, match=message):
            list_actions(conn, run, **keywords)


def test_the_delta_of_an_int_and_a_float_is_exact_before_rounding() -> None:
    """``int - float`` rounds the int to a float first: 2**53 + 1 after 2.0**53 had delta 0.0
    (an action with no size), where the values differ by 1."""
    assert numeric_delta(2.0**53, 2**53 + 1) == 1.0
    assert numeric_delta(2**53 + 1, 2.0**53) == -1.0
    assert numeric_delta(0, 0.5) == 0.5
    assert numeric_delta(1, math.inf) == math.inf
    assert numeric_delta(math.inf, math.inf) is None  # inf - inf is NaN: no size
    assert numeric_delta(10**400, 1.0) is None  # beyond every float


def _bits(value: Any) -> bytes:
    """A complex number's exact bits: NaN parts and the sign of -0.0 compare as themselves."""
    assert type(value) is complex, value
    return struct.pack(">dd", value.real, value.imag)


async def test_complex_values_round_trip_exactly(db_path: Path, knobs: Knobs) -> None:
    """A lock-in's complex reading was kept as its ``str()`` text, which does not round-trip
    (the design: non-numeric values round-trip exactly); it is a tagged blob of two doubles,
    NaN parts and the sign of -0.0 included, read back as the same complex."""
    values = [complex(1.5, -2.25), complex(math.nan, -0.0), complex(1e-300, math.inf)]
    knobs.setting = values[0]
    clock = FakeClock()
    steps = [_set(knobs, v) for v in values[1:]]
    await _record(Recorder(_config(db_path), {"knobs": knobs}, clock=clock), clock, steps)
    with closing(connect_readonly(db_path)) as conn:
        ref = resolve_run(conn, None)
        (group,) = window_columns(conn, ref, "spec", -1.0, 1e9)
        actions = list_actions(conn, ref)
    assert [_bits(v) for v in group["columns"]["Setting"]] == [_bits(v) for v in values]
    assert [(_bits(a["old_value"]), _bits(a["new_value"])) for a in actions] == [
        (_bits(values[0]), _bits(values[1])),
        (_bits(values[1]), _bits(values[2])),
    ]


def test_a_complex_kept_as_text_by_an_older_file_is_no_action_after_a_resume() -> None:
    """Files recorded before complex numbers had their tag hold ``"(1+2j)"``; a resume primes
    detection with that text, and the same complex read again is no change."""
    detector = _untyped_detector()
    detector.prime({"Setting": (0.0, "(1+2j)")})
    assert detector.feed(Sample(1, 0, 0.1, 0.0, [1 + 2j])) == []
    (event,) = detector.feed(Sample(1, 1, 0.2, 0.0, [1 + 3j]))
    assert (event.old_value, event.new_value) == (1 + 2j, 1 + 3j)
