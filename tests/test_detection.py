"""Change detection: which spec samples become action events, and what each event says."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from trajmon.channels import Channel, ValueType
from trajmon.clock import utc_iso
from trajmon.detection import ChangeDetector, values_equal
from trajmon.records import ActionEvent, Sample

WALL = 1_700_000_000.25
WALL_ISO = "2023-11-14T22:13:20.250000+00:00"


def spec(
    label: str,
    value_type: ValueType = "float",
    *,
    tolerance_abs: float | None = None,
    tolerance_rel: float | None = None,
) -> Channel:
    return Channel(
        label=label,
        kind="spec",
        source=f"stm.{label.lower().replace(' ', '_')}",
        instrument="stm",
        group="specs",
        value_type=value_type,
        tolerance_abs=tolerance_abs,
        tolerance_rel=tolerance_rel,
    )


def detector(
    *channels: Channel,
    before: float = 2.5,
    after: float = 2.5,
    group_id: int = 1,
    next_action_idx: int = 0,
) -> ChangeDetector:
    return ChangeDetector(
        {group_id: [(100 + i, ch) for i, ch in enumerate(channels)]},
        window_before_s=before,
        window_after_s=after,
        wall=lambda: WALL,
        next_action_idx=next_action_idx,
    )


class Feeder:
    """Feeds one group's samples with consecutive sample_idx and the given dt_s."""

    def __init__(self, det: ChangeDetector, group_id: int = 1) -> None:
        self.det = det
        self.group_id = group_id
        self.idx = 0

    def __call__(self, dt_s: float, *values: Any) -> list[ActionEvent]:
        sample = Sample(self.group_id, self.idx, dt_s, 0.001, list(values))
        self.idx += 1
        return self.det.feed(sample)


def one_channel(ch: Channel | None = None, **kw: Any) -> Feeder:
    return Feeder(detector(ch or spec("Bias"), **kw))


# --------------------------------------------------------------------------------------------
# values_equal
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("old", "new"),
    [
        pytest.param(1.0, 1.0, id="floats"),
        pytest.param(math.nan, math.nan, id="nan-nan"),
        pytest.param(math.nan, np.float32(np.nan), id="nan-np.nan"),
        pytest.param(math.inf, math.inf, id="inf"),
        pytest.param(0.0, -0.0, id="signed-zeros"),
        pytest.param(np.float64(2.5), 2.5, id="numpy-float"),
        pytest.param(3, 3, id="ints"),
        pytest.param(np.int64(3), 3, id="numpy-int"),
        pytest.param(True, True, id="bools"),
        pytest.param(np.bool_(True), True, id="numpy-bool"),
        pytest.param("constant current", "constant current", id="str"),
        pytest.param(np.array([1.0, np.nan]), np.array([1.0, np.nan]), id="array-nan"),
        pytest.param(np.array([[1, 2], [3, 4]]), np.array([[1, 2], [3, 4]]), id="array-2d"),
        pytest.param(np.array(["a", "b"]), np.array(["a", "b"]), id="array-str"),
    ],
)
def test_values_equal(old: Any, new: Any) -> None:
    assert values_equal(old, new)
    assert values_equal(new, old)


@pytest.mark.parametrize(
    ("old", "new"),
    [
        pytest.param(1.0, 1.0000000000000002, id="one-ulp"),
        pytest.param(math.nan, 1.0, id="nan-number"),
        pytest.param(math.inf, -math.inf, id="inf--inf"),
        pytest.param(math.nan, None, id="nan-none"),
        pytest.param(True, 1, id="bool-int"),
        pytest.param(False, 0, id="bool-zero"),
        pytest.param(True, 1.0, id="bool-float"),
        pytest.param(np.bool_(False), 0, id="numpy-bool-int"),
        pytest.param(1, 2, id="ints"),
        pytest.param("a", "A", id="str"),
        pytest.param("1", 1, id="str-int"),
        pytest.param(np.array([1.0, 2.0]), np.array([1.0, 2.5]), id="array-element"),
        pytest.param(np.array([1.0, 2.0]), np.array([[1.0, 2.0]]), id="array-shape"),
        pytest.param(np.array([1.0, 2.0]), np.array([1.0, 2.0, 3.0]), id="array-length"),
        pytest.param(np.array([1.0]), 1.0, id="array-scalar"),
        pytest.param(np.array(["a", "b"]), np.array(["a", "c"]), id="array-str"),
    ],
)
def test_values_differ(old: Any, new: Any) -> None:
    assert not values_equal(old, new)
    assert not values_equal(new, old)


def test_values_equal_abs_tolerance_boundary_is_inclusive() -> None:
    assert values_equal(1.0, 1.5, tolerance_abs=0.5)
    assert values_equal(-1.0, -1.5, tolerance_abs=0.5)
    assert not values_equal(1.0, 1.5000000000000002, tolerance_abs=0.5)
    assert not values_equal(1.0, 1.5)  # no tolerance: exact


def test_values_equal_rel_tolerance_boundary_is_inclusive() -> None:
    # 1.0 is exactly 1 % of both 100.0 and 101.0 (rounded), so the boundary holds whichever
    # value the tolerance is taken relative to.
    assert values_equal(100.0, 101.0, tolerance_rel=0.01)
    assert values_equal(101.0, 100.0, tolerance_rel=0.01)
    assert not values_equal(100.0, 101.5, tolerance_rel=0.01)


def test_values_equal_tolerances_never_make_nan_equal_to_a_number() -> None:
    assert not values_equal(math.nan, 1.0, tolerance_abs=1e300)
    assert values_equal(math.nan, math.nan, tolerance_abs=0.0)


# --------------------------------------------------------------------------------------------
# ChangeDetector: basics
# --------------------------------------------------------------------------------------------


def test_first_sample_primes_without_an_event_then_repeats_are_quiet() -> None:
    feed = one_channel()
    assert feed(0.0, 1.0) == []
    assert feed(0.1, 1.0) == []
    assert feed(0.2, 1.0) == []


def test_a_change_produces_one_complete_event() -> None:
    feed = one_channel(before=1.0, after=4.0)
    feed(8.5, 0.25)
    feed(9.0, 0.25)
    events = feed(10.0, np.float64(-0.75))
    assert events == [
        ActionEvent(
            action_idx=0,
            dt_s=10.0,
            sample_idx=2,
            prev_dt_s=9.0,
            detected_at_utc=WALL_ISO,
            spec_label="Bias",
            channel_id=100,
            old_value=0.25,
            new_value=-0.75,
            delta=-1.0,
            window_start_s=9.0,
            window_end_s=14.0,
        )
    ]
    assert utc_iso(WALL) == WALL_ISO
    assert type(events[0].new_value) is float  # numpy scalars are made plain
    assert feed(10.5, -0.75) == []


@pytest.mark.parametrize(("before", "after"), [(2.5, 2.5), (0.0, 0.0), (0.5, 7.25)])
def test_window_bounds_are_dt_minus_before_and_dt_plus_after(before: float, after: float) -> None:
    feed = one_channel(before=before, after=after)
    feed(100.0, 1.0)
    (event,) = feed(100.25, 2.0)
    assert event.window_start_s == 100.25 - before
    assert event.window_end_s == 100.25 + after
    assert event.dt_s == 100.25


def test_every_change_is_an_event_with_increasing_action_idx() -> None:
    feed = one_channel()
    feed(0.0, 1.0)
    got = [feed(0.1 * k, value) for k, value in enumerate([2.0, 2.0, 3.0, 1.0], start=1)]
    assert [[(e.action_idx, e.old_value, e.new_value, e.delta) for e in evs] for evs in got] == [
        [(0, 1.0, 2.0, 1.0)],
        [],
        [(1, 2.0, 3.0, 1.0)],
        [(2, 3.0, 1.0, -2.0)],
    ]


def test_changes_in_one_sample_are_reported_in_channel_order() -> None:
    feed = Feeder(detector(spec("Bias"), spec("Z Setpoint"), spec("Scan Status Code", "int")))
    feed(0.0, 1.0, 5e-11, 0)
    events = feed(0.5, 2.0, 5e-11, 1)
    assert [(e.action_idx, e.spec_label, e.channel_id) for e in events] == [
        (0, "Bias", 100),
        (1, "Scan Status Code", 102),
    ]
    events = feed(1.0, 2.0, 6e-11, 1)
    assert [(e.action_idx, e.spec_label, e.channel_id) for e in events] == [(2, "Z Setpoint", 101)]


def test_sample_of_an_unknown_group_is_ignored() -> None:
    det = detector(spec("Bias"), group_id=1)
    assert det.feed(Sample(7, 0, 0.0, 0.0, [1.0])) == []
    assert det.feed(Sample(7, 1, 0.1, 0.0, [2.0])) == []
    assert det.next_action_idx == 0


def test_sample_with_the_wrong_number_of_values_is_refused() -> None:
    det = detector(spec("Bias"), spec("Z Setpoint"))
    with pytest.raises(ValueError):
        det.feed(Sample(1, 0, 0.0, 0.0, [1.0]))


# --------------------------------------------------------------------------------------------
# Value semantics
# --------------------------------------------------------------------------------------------


def test_nan_to_nan_is_not_an_action() -> None:
    feed = one_channel()
    feed(0.0, math.nan)
    assert feed(0.1, math.nan) == []
    assert feed(0.2, np.float64(np.nan)) == []


def test_nan_to_number_and_back_are_actions_without_a_delta() -> None:
    feed = one_channel()
    feed(0.0, math.nan)
    (event,) = feed(0.1, 1.0)
    assert math.isnan(event.old_value)
    assert event.new_value == 1.0
    assert event.delta is None
    (event,) = feed(0.2, math.nan)
    assert event.old_value == 1.0
    assert math.isnan(event.new_value)
    assert event.delta is None


def test_bool_and_int_are_different_values() -> None:
    feed = one_channel(spec("Z Controller Enabled", "any"))
    feed(0.0, True)
    (event,) = feed(0.1, 1)
    assert (event.old_value, event.new_value, event.delta) == (True, 1, None)
    assert event.old_value is True
    (event,) = feed(0.2, False)
    assert event.new_value is False
    assert event.delta is None  # a flipped switch has no size


def test_bool_changes_have_no_delta_and_numpy_bools_are_plain() -> None:
    feed = one_channel(spec("Z Controller Enabled", "bool"))
    feed(0.0, np.bool_(True))
    assert feed(0.1, True) == []
    (event,) = feed(0.2, np.bool_(False))
    assert event.old_value is True
    assert event.new_value is False
    assert event.delta is None


def test_int_change_has_a_float_delta() -> None:
    feed = one_channel(spec("Scan Status Code", "int"))
    feed(0.0, np.int64(0))
    (event,) = feed(0.1, np.int64(2))
    assert (event.old_value, event.new_value) == (0, 2)
    assert type(event.old_value) is int
    assert type(event.delta) is float
    assert event.delta == 2.0


def test_string_change_has_no_delta() -> None:
    feed = one_channel(spec("Mode", "str"))
    feed(0.0, "constant current")
    assert feed(0.1, "constant current") == []
    (event,) = feed(0.2, "constant height")
    assert (event.old_value, event.new_value, event.delta) == (
        "constant current",
        "constant height",
        None,
    )


def test_array_change_is_compared_element_wise() -> None:
    feed = one_channel(spec("Scan Frame", "array"))
    feed(0.0, np.array([0.0, 1e-9, np.nan]))
    assert feed(0.1, np.array([0.0, 1e-9, np.nan])) == []
    (event,) = feed(0.2, np.array([0.0, 2e-9, np.nan]))
    np.testing.assert_array_equal(event.old_value, [0.0, 1e-9, np.nan])
    np.testing.assert_array_equal(event.new_value, [0.0, 2e-9, np.nan])
    assert event.delta is None
    (event,) = feed(0.3, np.array([[0.0, 2e-9, np.nan]]))  # same numbers, new shape
    assert event.action_idx == 1


# --------------------------------------------------------------------------------------------
# Failed reads
# --------------------------------------------------------------------------------------------


def test_none_between_equal_values_is_not_an_action() -> None:
    feed = one_channel()
    feed(0.0, 1.0)
    assert feed(0.1, None) == []
    assert feed(0.2, None) == []
    assert feed(0.3, 1.0) == []


def test_none_between_different_values_is_one_action_against_the_pre_gap_value() -> None:
    feed = one_channel()
    feed(0.0, 1.0)
    feed(0.5, 1.0)
    assert feed(1.0, None) == []
    assert feed(1.5, None) == []
    (event,) = feed(2.0, 3.0)
    assert (event.old_value, event.new_value, event.delta) == (1.0, 3.0, 2.0)
    assert event.prev_dt_s == 0.5  # the last good sample, not the failed ones
    assert event.dt_s == 2.0
    assert event.sample_idx == 4
    assert feed(2.5, 3.0) == []


def test_leading_failed_reads_do_not_prime() -> None:
    feed = one_channel()
    assert feed(0.0, None) == []
    assert feed(0.1, 1.0) == []  # first real value primes, no event against "None"
    (event,) = feed(0.2, 2.0)
    assert (event.old_value, event.prev_dt_s) == (1.0, 0.1)


def test_a_failed_read_of_one_spec_does_not_hide_a_change_of_another() -> None:
    feed = Feeder(detector(spec("Bias"), spec("Z Setpoint")))
    feed(0.0, 1.0, 5e-11)
    events = feed(0.1, None, 6e-11)
    assert [(e.spec_label, e.old_value, e.new_value) for e in events] == [
        ("Z Setpoint", 5e-11, 6e-11)
    ]


# --------------------------------------------------------------------------------------------
# Tolerances
# --------------------------------------------------------------------------------------------


def test_abs_tolerance_boundary() -> None:
    feed = one_channel(spec("Bias", tolerance_abs=0.5))
    feed(0.0, 1.0)
    assert feed(0.1, 1.5) == []  # |Δ| == tolerance: not an action, 1.0 stays the known value
    assert feed(0.2, 0.5) == []  # |Δ| == tolerance from 1.0, on the other side
    (event,) = feed(0.3, 1.5000000000000002)  # |Δ| just above tolerance from 1.0
    assert (event.old_value, event.new_value, event.prev_dt_s) == (1.0, 1.5000000000000002, 0.2)


def test_a_slow_ramp_within_tolerance_per_read_is_an_action_once_it_has_moved_enough() -> None:
    """Compared with the known value, not the previous read: a gate ramped by 0.25 V a read
    with a 1 V tolerance is an action each time it has moved more than 1 V (binary-exact steps,
    so the boundary is not decided by rounding)."""
    feed = one_channel(spec("Bias", tolerance_abs=1.0))
    events = [e for i in range(21) for e in feed(i * 0.1, i * 0.25)]
    assert [(e.sample_idx, e.old_value, e.new_value) for e in events] == [
        (5, 0.0, 1.25),
        (10, 1.25, 2.5),
        (15, 2.5, 3.75),
        (20, 3.75, 5.0),
    ]


def test_abs_tolerance_just_above_is_an_action() -> None:
    feed = one_channel(spec("Bias", tolerance_abs=0.5))
    feed(0.0, 1.0)
    (event,) = feed(0.1, 1.5000000000000002)
    assert event.old_value == 1.0


def test_rel_tolerance_boundary() -> None:
    feed = one_channel(spec("Z Setpoint", tolerance_rel=0.01))
    feed(0.0, 100.0)
    assert feed(0.1, 101.0) == []
    feed = one_channel(spec("Z Setpoint", tolerance_rel=0.01))
    feed(0.0, 100.0)
    (event,) = feed(0.1, 101.5)
    assert event.delta == 1.5


def test_without_tolerance_one_ulp_is_an_action() -> None:
    feed = one_channel()
    feed(0.0, 0.1)
    (event,) = feed(0.1, 0.10000000000000002)
    assert event.new_value == 0.10000000000000002


def test_tolerance_of_one_channel_does_not_apply_to_another() -> None:
    feed = Feeder(detector(spec("Bias", tolerance_abs=1.0), spec("Z Setpoint")))
    feed(0.0, 1.0, 1.0)
    events = feed(0.1, 1.5, 1.5)
    assert [e.spec_label for e in events] == ["Z Setpoint"]


# --------------------------------------------------------------------------------------------
# Several groups, resume
# --------------------------------------------------------------------------------------------


def test_action_idx_is_shared_across_groups() -> None:
    det = ChangeDetector(
        {
            1: [(11, spec("Bias")), (12, spec("Z Setpoint"))],
            2: [(21, spec("Scan Status Code", "int"))],
        },
        window_before_s=2.5,
        window_after_s=2.5,
        wall=lambda: WALL,
        next_action_idx=5,
    )
    fast, slow = Feeder(det, 1), Feeder(det, 2)
    fast(0.0, 1.0, 1e-10)
    slow(0.0, 0)
    got = []
    got += fast(0.1, 2.0, 1e-10)
    got += slow(1.0, 2)
    got += fast(1.1, 2.0, 2e-10)
    got += slow(2.0, 2)
    got += fast(1.2, 3.0, 3e-10)
    assert [(e.action_idx, e.spec_label, e.channel_id, e.sample_idx) for e in got] == [
        (5, "Bias", 11, 1),
        (6, "Scan Status Code", 21, 1),
        (7, "Z Setpoint", 12, 2),
        (8, "Bias", 11, 3),
        (9, "Z Setpoint", 12, 3),
    ]
    assert det.next_action_idx == 10


def test_prime_seeds_last_values_for_resume() -> None:
    det = detector(spec("Bias"), spec("Z Setpoint"), next_action_idx=3)
    det.prime({"Bias": (41.5, 1.0), "Unknown": (1.0, 9.0)})
    assert dict(det.last_values()) == {"Bias": 1.0}
    feed = Feeder(det)
    assert feed(42.0, 1.0, 5e-11) == []  # Bias unchanged since before the restart
    (event,) = feed(42.5, 2.0, 5e-11)
    assert (event.action_idx, event.old_value, event.prev_dt_s) == (3, 1.0, 42.0)


def test_prime_then_immediate_change_is_reported_against_the_primed_value() -> None:
    det = detector(spec("Bias"), spec("Z Setpoint"))
    det.prime({"Bias": (41.5, 1.0), "Z Setpoint": (41.5, 5e-11)})
    events = Feeder(det)(42.0, -1.0, 5e-11)
    assert [(e.spec_label, e.old_value, e.new_value, e.prev_dt_s, e.delta) for e in events] == [
        ("Bias", 1.0, -1.0, 41.5, -2.0)
    ]


def test_last_values_reports_only_specs_that_were_seen() -> None:
    det = detector(spec("Bias"), spec("Z Setpoint"))
    feed = Feeder(det)
    assert list(det.last_values()) == []
    feed(0.0, 1.0, None)
    assert dict(det.last_values()) == {"Bias": 1.0}
    feed(0.1, None, 5e-11)
    assert dict(det.last_values()) == {"Bias": 1.0, "Z Setpoint": 5e-11}
