"""Values of real QCoDeS parameters as an operator meets them: typed, stored, decoded and
turned into actions the way the stored data says — no spurious action from a type change, no
action from a read stored as NULL, tolerances on ints too, and no value that fails a run."""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Iterator
from contextlib import closing
from itertools import cycle
from pathlib import Path
from typing import Any

import anyio
import numpy as np
import pytest
from pydantic import ValidationError
from qcodes.instrument import Instrument
from qcodes.instrument_drivers.mock_instruments import DummyChannelInstrument
from qcodes.parameters import DelegateParameter
from qcodes.validators import Ints, Numbers, Strings
from test_detection import one_channel, spec
from test_station import channels_yaml, dac_station, invoke

from trajmon import ChannelSpec, MonitorConfig, Recorder, channels
from trajmon.channels import check_label, decode_value, encoder_for, numeric_delta
from trajmon.config import ConfigError
from trajmon.detection import values_equal
from trajmon.queries import connect_readonly, list_actions, resolve_run
from trajmon.resolve import build_groups
from trajmon.station import load_channels_file
from trajmon.windows import window_rows

# --------------------------------------------------------------------------------------------
# Detection compares what is stored
# --------------------------------------------------------------------------------------------


def test_an_int_specs_tolerance_applies() -> None:
    """A tolerance on an Ints spec was ignored: 10 -> 11 within tolerance_abs 5 was an action."""
    feed = one_channel(spec("Points", "int", tolerance_abs=5.0))
    feed(0.0, 10)
    assert feed(0.1, 11) == []
    assert feed(0.2, np.int64(15)) == []
    (event,) = feed(0.3, 16)
    assert (event.old_value, event.new_value, event.delta) == (10, 16, 6.0)
    rel = one_channel(spec("Points", "int", tolerance_rel=0.1))
    rel(0.0, 100)
    assert rel(0.1, 109) == []
    assert len(rel(0.2, 120)) == 1


def test_int_tolerance_is_exact_beyond_float_precision() -> None:
    assert not values_equal(2**60, 2**60 + 1, 0.5)  # as floats they are the same number
    assert values_equal(2**60, 2**60 + 1, 1.0)
    assert values_equal(10**400, 10**400 + 1, None, 1e-9)


def test_a_huge_int_against_a_float_is_a_change_not_a_crash() -> None:
    """float(10**400) raised OverflowError out of the detector (and out of numeric_delta)."""
    assert not values_equal(10**400, 1.5)
    assert numeric_delta(1, 10**400) is None
    assert numeric_delta(2**60, 2**60 + 1) == 1.0  # exact, not float(2**60+1) - float(2**60)
    feed = one_channel(spec("Counter", "any"))
    feed(0.0, 10**400)
    (event,) = feed(0.1, 1.5)
    assert (event.old_value, event.new_value, event.delta) == (10**400, 1.5, None)
    ints = one_channel(spec("Counter", "int"))
    ints(0.0, 1)
    (event,) = ints(0.1, 10**400)
    assert event.delta is None


@pytest.mark.parametrize(
    ("value_type", "first", "same"),
    [
        pytest.param("str", 5, "5", id="int-then-its-text-in-a-str-column"),
        pytest.param("str", b"idle", "idle", id="bytes-then-str-in-a-str-column"),
        pytest.param("bool", 1, True, id="int-then-bool-in-a-bool-column"),
        pytest.param("int", 3.0, 3, id="float-then-int-in-an-int-column"),
        pytest.param("any", {"a": 1, "b": 2}, {"b": 2, "a": 1}, id="dict-in-another-order"),
    ],
)
def test_a_value_that_only_changed_its_python_type_is_no_action(
    value_type: Any, first: Any, same: Any
) -> None:
    feed = one_channel(spec("Mode", value_type))
    feed(0.0, first)
    assert feed(0.1, same) == []


def test_a_read_stored_as_null_is_a_gap_for_detection_too() -> None:
    """Text from a float spec is stored as NULL (bad_value); it was also compared, so 1.0,
    "1.0", 1.0 gave two actions whose values the sample table does not have."""
    feed = one_channel(spec("Bias", "float"))
    feed(0.0, 1.0)
    assert feed(0.1, "1.0") == []
    assert feed(0.2, 1.0) == []
    assert feed(0.3, "nan") == []
    (event,) = feed(0.4, 2.0)
    assert (event.old_value, event.new_value, event.prev_dt_s) == (1.0, 2.0, 0.2)


# --------------------------------------------------------------------------------------------
# Encodings
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("value_type", ["str", "any"])
def test_text_that_is_not_unicode_is_a_bad_value_not_a_failed_commit(value_type: Any) -> None:
    """A lone surrogate (bytes decoded with surrogateescape) made sqlite3 raise at commit time,
    which failed the whole run; the encoder now refuses it like any value that does not fit."""
    with pytest.raises(ValueError, match="not valid Unicode"):
        encoder_for(value_type)("bad \udcff")
    assert encoder_for(value_type)("µm Å ✓") == "µm Å ✓"


def test_bytes_in_a_str_column_are_their_utf8_text() -> None:
    assert encoder_for("str")(b"constant current") == "constant current"
    with pytest.raises(ValueError):
        encoder_for("str")(b"\xff\xfe")


def test_arrays_of_different_shapes_round_trip_as_a_tuple() -> None:
    """A MultiParameter returning arrays of different shapes was a bad_value on every read."""
    value = (np.zeros((5, 3)), np.arange(14).reshape(2, 7))
    stored = encoder_for("any")(value)
    back = decode_value("any", stored)
    assert isinstance(back, tuple) and len(back) == 2
    for got, want in zip(back, value, strict=True):
        assert got.dtype == want.dtype and np.array_equal(got, want)
    assert channels.canonical_for("any")(value)[1].shape == (2, 7)
    assert values_equal(back, value)
    assert not values_equal(back, (value[0], value[1] + 1))
    with pytest.raises(ValueError):
        encoder_for("any")((np.zeros(2), np.array([object()])))


@pytest.mark.parametrize("label", ["bad \udcff", "two\u2028lines", "para\u2029graph"])
def test_labels_that_cannot_be_a_column_or_one_line_are_refused(label: str) -> None:
    with pytest.raises(ValueError, match="invalid channel label"):
        check_label(label)


# --------------------------------------------------------------------------------------------
# Channels files
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("tolerance", [math.inf, math.nan, True])
def test_a_channel_spec_refuses_a_tolerance_that_is_not_a_size(tolerance: Any) -> None:
    """Staged configurations and the Python API get the channels file's check too."""
    with pytest.raises(ValidationError):
        ChannelSpec(label="Bias", source="stm.bias", kind="spec", tolerance_abs=tolerance)


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("tolerance_abs: .inf", "tolerance_abs: Input should be a finite number"),
        ("tolerance_rel: '1e999'", "tolerance_rel: Input should be a finite number"),
        ("tolerance_abs: true", "tolerance_abs: expected a number"),
        ('label: "bad \\udcff"', "invalid channel label"),
    ],
)
def test_bad_tolerances_and_labels_are_one_line_exit_2(
    entry: str, message: str, tmp_path: Path
) -> None:
    """An infinite tolerance made a spec that never gives an action; a surrogate in a label
    was a traceback from pydantic's JSON serialiser."""
    station_file = dac_station(tmp_path)
    channels = channels_yaml(tmp_path, f"  - {{parameter: dac.ch1, kind: spec, {entry}}}\n")
    with pytest.raises(ConfigError, match=message):
        load_channels_file(channels)
    db = tmp_path / "never.db"
    result = invoke(
        "run", "--run-name", "x", "--station", str(station_file), "--channels", str(channels),
        "--duration", "1", "--db", str(db),
    )  # fmt: skip
    assert result.exit_code == 2
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("trajmon: error:") and message in line
    assert not db.exists()


# --------------------------------------------------------------------------------------------
# End to end on QCoDeS parameters
# --------------------------------------------------------------------------------------------

ODD_MODULE = """
from itertools import cycle
from qcodes.instrument import Instrument
from qcodes.validators import Ints, Strings


class Odd(Instrument):
    def __init__(self, name, **kwargs):
        super().__init__(name, **kwargs)
        raw = cycle([10, 25, 25, 40])
        self.add_parameter("scaled", get_cmd=lambda: next(raw), set_cmd=None, scale=10,
                           vals=Ints())
        text = cycle(["ok", "bad \\udcff", "ok", "fine"])
        self.add_parameter("text", get_cmd=lambda: next(text), set_cmd=None, vals=Strings())
        mode = cycle([5, "5"])
        self.add_parameter("mode", get_cmd=lambda: next(mode), set_cmd=None, vals=Strings())
"""


@pytest.fixture
def odd_station(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A station with a driver of our own (in a module on the path) and QCoDeS's channels."""
    (tmp_path / "odd_values_driver.py").write_text(ODD_MODULE, encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "odd_values_driver", raising=False)
    return dac_station(
        tmp_path,
        "  odd:\n    type: odd_values_driver.Odd\n"
        "  chan:\n    type: qcodes.instrument_drivers.mock_instruments.DummyChannelInstrument\n",
    )


def test_station_values_are_stored_and_compared_as_the_column_holds_them(
    odd_station: Path, tmp_path: Path
) -> None:
    """Before: a scaled Ints parameter (2.5) was a bad_value on most reads, a lone surrogate
    failed the run (everything after the last commit lost), ``5`` then ``"5"`` in a Strings
    spec was an action on every read, and a MultiParameter with arrays of two shapes was a
    bad_value on every read."""
    channels = channels_yaml(
        tmp_path,
        "  - {parameter: odd.scaled, kind: spec}\n"
        "  - {parameter: odd.text, kind: spec}\n"
        "  - {parameter: odd.mode, kind: spec}\n"
        "  - {parameter: chan.A.dummy_2d_multi_parameter_2, kind: spec, label: multi}\n",
    )
    db = tmp_path / "runs.db"
    result = invoke(
        "run", "--run-name", "odd", "--station", str(odd_station), "--channels", str(channels),
        "--duration", "2", "--interval-s", "0.02", "--db", str(db), "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["status"] == "completed"
    with closing(connect_readonly(db)) as conn:
        ref = resolve_run(conn, "odd")
        types = dict(conn.execute("SELECT label, value_type FROM channels").fetchall())
        errors = [tuple(r) for r in conn.execute("SELECT channel, error_type FROM monitor_errors")]
        (rows,) = [g["rows"] for g in window_rows(conn, ref, "spec", -1.0, 1e9)]
        actions = list_actions(conn, ref)
    # The cycles below need four reads; start-up counts against the duration, and under a
    # loaded full suite 0.5 s once left fewer (no bad text read at all).
    assert len(rows) >= 4, f"only {len(rows)} spec samples"
    assert types["odd.scaled"] == "float"
    assert errors and set(errors) == {("odd.text", "bad_value")}
    scaled = {row["values"]["odd.scaled"] for row in rows}
    assert scaled <= {1.0, 2.5, 4.0} and 2.5 in scaled
    assert {row["values"]["odd.mode"] for row in rows} == {"5"}
    texts = [row["values"]["odd.text"] for row in rows]
    assert None in texts and {"ok", "fine"} <= set(texts)
    for row in rows:
        first, second = row["values"]["multi"]
        assert first.shape == (5, 3) and second.shape == (2, 7)
    changed = {a["spec_label"] for a in actions}
    assert changed == {"odd.scaled", "odd.text"}
    for act in actions:
        assert act["old_value"] != act["new_value"]
        assert None not in (act["old_value"], act["new_value"])


@pytest.fixture
def scaled() -> Iterator[Instrument]:
    instrument = DummyChannelInstrument("scaled_inst")
    raw = cycle([15, 20])
    instrument.add_parameter(
        "gate", get_cmd=lambda: next(raw), set_cmd=None, offset=0.5, vals=Ints()
    )
    instrument.add_parameter("via", parameter_class=DelegateParameter, source=instrument.gate)
    instrument.add_parameter("plain", get_cmd=lambda: 3, set_cmd=None, vals=Ints())
    instrument.add_parameter("volts", get_cmd=lambda: 0.5, set_cmd=None, vals=Numbers())
    instrument.add_parameter("name", get_cmd=lambda: "x", set_cmd=None, vals=Strings())
    yield instrument
    instrument.close()


def test_a_scaled_or_offset_ints_parameter_is_a_float_channel(scaled: Instrument) -> None:
    """``(raw - offset) / scale`` is a fraction whatever the (set-side) validator says; also
    through a DelegateParameter whose source is offset."""
    labels = ["gate", "via", "plain", "volts", "name"]
    config = MonitorConfig(
        run_name="t",
        channels=[ChannelSpec(label=x, source=f"scaled_inst.{x}", kind="spec") for x in labels],
    )
    (group,) = build_groups(config, {"scaled_inst": scaled})
    assert [c.value_type for c in group.channels] == ["float", "float", "int", "float", "str"]


async def test_an_offset_ints_spec_records_every_read_and_its_actions(
    db_path: Path, scaled: Instrument
) -> None:
    config = MonitorConfig(
        run_name="offset",
        db=db_path,
        interval_s=0.01,
        channels=[ChannelSpec(label="gate", source="scaled_inst.gate", kind="spec")],
    )
    recorder = Recorder(config, {"scaled_inst": scaled})
    # Until four reads, not for 0.1 s: on a loaded machine that once held no read at all.
    async with anyio.create_task_group() as tg:
        tg.start_soon(recorder.run)
        with anyio.fail_after(20):
            assert await recorder.wait_until(lambda: recorder.stats[0].samples_read >= 4)
        recorder.request_stop()
    assert recorder.stats[0].failed_reads == 0
    with closing(connect_readonly(db_path)) as conn:
        ref = resolve_run(conn, "offset")
        (rows,) = [g["rows"] for g in window_rows(conn, ref, "spec", -1.0, 1e9)]
        actions = list_actions(conn, ref)
    assert {row["values"]["gate"] for row in rows} == {14.5, 19.5}
    assert actions and {(a["old_value"], a["new_value"]) for a in actions} <= {
        (14.5, 19.5),
        (19.5, 14.5),
    }


def test_export_writes_arrays_of_different_shapes_as_a_json_list() -> None:
    """They were numpy's printed form: "(array([[0., …]]), array(…))" with line breaks."""
    from trajmon.export_sinks import text_value

    value = (np.zeros((2, 2)), np.arange(3.0))
    assert json.loads(text_value(value) or "") == [[[0.0, 0.0], [0.0, 0.0]], [0.0, 1.0, 2.0]]
    assert text_value(np.array([1j])) == "[1j]"  # complex: no JSON, still one line
