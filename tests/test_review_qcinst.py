"""Review of recording generic QCoDeS instruments from a station: channels reachable only
through a channel list, validator text that changed from run to run, a MultiParameter of a
scalar and a trace, and the error line of a QCoDeS parameter that raises. Each runs on a
simulated clock (tests/recordings.py)."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from qcodes import validators as vals
from qcodes.instrument import ChannelList, Instrument, InstrumentChannel
from qcodes.parameters import ManualParameter, MultiParameter
from recordings import record_every_tick

from trajmon import ChannelSpec, ConfigError, MonitorConfig
from trajmon.channels import decode_value, encoder_for
from trajmon.resolve import describe_vals, resolve_parameter
from trajmon.starter import starter_channels_yaml
from trajmon.station import check_channels, load_channels_file

TRACE = np.arange(2000.0) / 7  # past numpy's 1000-element summary threshold


class _Channel(InstrumentChannel):
    def __init__(self, parent: Instrument, name: str) -> None:
        super().__init__(parent, name)
        self.add_parameter("level", unit="V", parameter_class=ManualParameter, initial_value=0.5)


class _XTrace(MultiParameter):
    """A lock-in's (X, trace): a scalar beside an array."""

    def __init__(self, name: str, **kwargs: Any) -> None:
        super().__init__(
            name,
            names=("x", "trace"),
            shapes=((), (len(TRACE),)),
            setpoints=((), (tuple(range(len(TRACE))),)),
            **kwargs,
        )

    def get_raw(self) -> tuple[float, np.ndarray]:
        return (1.25, TRACE.copy())


class Scope(Instrument):
    """Channels added only as a list, as the Rigol DS1074Z does: ``scope.channels`` is the
    only submodule that reaches them."""

    def __init__(self, name: str, **kwargs: Any) -> None:
        super().__init__(name, **kwargs)
        channels = ChannelList(self, "channels", _Channel)
        for i in (1, 2):
            channels.append(_Channel(self, f"ch{i}"))
        self.add_submodule("channels", channels.to_channel_tuple())
        self.add_parameter("xtrace", parameter_class=_XTrace)
        self.add_parameter("broken", get_cmd=self._broken, unit="K")

    def _broken(self) -> float:
        raise RuntimeError("sensor unplugged")

    def get_idn(self) -> dict[str, str | None]:
        return {"vendor": "test", "model": "scope", "serial": None, "firmware": None}


@pytest.fixture
def scope() -> Iterator[Scope]:
    instrument = Scope("scope")
    try:
        yield instrument
    finally:
        instrument.close()


def test_a_channel_only_in_a_channel_list_is_in_the_starter_file_and_resolves(
    scope: Scope, tmp_path: Path
) -> None:
    """Before: the starter file skipped channel lists ("their channels are submodules of their
    own" — not a Rigol DS1074Z's), and no path reached them: ``scope.channels.ch1.level`` was
    "scope.channels has no parameter or submodule 'ch1'", and ``scope.channels`` suggested
    ``scope.ch1.<parameter>``, which does not exist either."""
    text = starter_channels_yaml({"scope": scope}, Path("station.yaml"))
    assert '- parameter: "scope.channels.ch1.level"' in text
    assert '- parameter: "scope.channels.ch2.level"' in text
    path = tmp_path / "channels.yaml"
    path.write_text(text, encoding="utf-8")
    check_channels(load_channels_file(path), {"scope": scope}, path)  # loads back as it is
    name, param = resolve_parameter("scope.channels.ch2.level", {"scope": scope})
    assert (name, param) == ("scope", scope.channels[1].level)
    with pytest.raises(ConfigError) as caught:
        resolve_parameter("scope.channels", {"scope": scope})
    assert str(caught.value).endswith(
        "(name a parameter of one channel, e.g. scope.channels.ch1.<parameter>)"
    )


def test_an_enum_validator_reads_the_same_however_its_set_is_ordered() -> None:
    """QCoDeS prints an Enum's members as a set: strings in another order in every process
    (hash randomisation), so the catalog and starter file said ``<Enum: {'on', 'off'}>`` in one
    run and ``<Enum: {'off', 'on'}>`` in the next. 1 and 9 share a slot of a small set, so
    their order follows insertion: the same members declared in two orders show it here."""
    assert describe_vals(vals.Enum(1, 9)) == describe_vals(vals.Enum(9, 1)) == "<Enum: {1, 9}>"
    assert describe_vals(vals.Enum("on", "off", "auto")) == "<Enum: {'auto', 'off', 'on'}>"
    inner = vals.MultiType(vals.Ints(), vals.Enum(9, 1))
    assert describe_vals(inner) == "<MultiType: Ints, Enum: {1, 9}>"


def test_a_scalar_beside_a_trace_round_trips_exactly(scope: Scope, tmp_path: Path) -> None:
    """Before: a MultiParameter's (scalar, array) could not be one array, so it was kept as its
    text — ``(1.25, array([0., 0.14285714, ..., 285.57142857]))``: 1996 of the 2000 points and
    the full precision of the rest were lost on every read, with no error."""
    db = tmp_path / "runs.db"
    config = MonitorConfig(
        run_name="xt",
        db=db,
        source="instruments",
        interval_s=0.1,
        duration_s=0.3,
        channels=[ChannelSpec(label="XT", source="scope.xtrace", kind="signal")],
    )
    summary = record_every_tick(config, {"scope": scope})
    assert summary.status == "completed" and summary.errors == 0
    with closing(sqlite3.connect(db)) as conn:
        stored = [row[0] for row in conn.execute('SELECT "XT" FROM "xt/signals"')]
    assert len(stored) == 3
    for value in stored:
        x, trace = decode_value("any", value)
        assert float(x) == 1.25
        np.testing.assert_array_equal(trace, TRACE)
    x, trace = decode_value("any", encoder_for("any")([np.float32(2.5), TRACE]))
    assert x.dtype == np.float32 and float(x) == 2.5 and np.array_equal(trace, TRACE)


def test_a_qcodes_parameter_error_is_one_plain_line(scope: Scope, tmp_path: Path) -> None:
    """QCoDeS appends ``'getting scope_broken'`` to the exception's args; ``str()`` of two args
    is their tuple, so every error line (status, live view, errors export) read
    ``RuntimeError: ('sensor unplugged', 'getting scope_broken')``."""
    db = tmp_path / "runs.db"
    config = MonitorConfig(
        run_name="err",
        db=db,
        source="instruments",
        interval_s=0.1,
        duration_s=0.2,
        channels=[ChannelSpec(label="T", source="scope.broken", kind="signal")],
    )
    summary = record_every_tick(config, {"scope": scope})
    assert summary.status == "completed"
    with closing(sqlite3.connect(db)) as conn:
        rows = set(conn.execute("SELECT channel, error_type, message FROM monitor_errors"))
    assert rows == {("T", "RuntimeError", "sensor unplugged (getting scope_broken)")}
