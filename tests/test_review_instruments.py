"""Review of the instrument side for QCoDeS drivers other than Nanonis: station files that
fail to load, drivers with their own ``get_many``, values that do not fit their column, and the
validator text in a starter file. Drivers: tests/review_drivers.py."""

from __future__ import annotations

import os
import re
import sqlite3
import subprocess
from collections.abc import Iterator
from contextlib import closing
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
from procs import ENV, TRAJMON
from qcodes.instrument_drivers.mock_instruments import DummyInstrument, MockDAC
from review_drivers import GetManyParameter, Odd, ShortGetMany
from typer.testing import CliRunner

from trajmon import ChannelSpec, ConfigError, MonitorConfig, Recorder
from trajmon.channels import canonical_for, encoder_for
from trajmon.cli import app
from trajmon.queries import connect_readonly, resolve_run
from trajmon.resolve import build_groups, resolve_parameter
from trajmon.starter import starter_channels_yaml
from trajmon.windows import window_rows

TESTS = Path(__file__).resolve().parent
SUBPROCESS_ENV = {
    **ENV,
    "PYTHONPATH": os.pathsep.join(p for p in (str(TESTS), ENV.get("PYTHONPATH")) if p),
}


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def trajmon(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*TRAJMON, *args], capture_output=True, text=True, env=SUBPROCESS_ENV, timeout=60
    )


# -- station files that do not load ---------------------------------------------------------


def test_an_instrument_that_is_off_is_one_line_not_the_traceback_qcodes_logged(
    tmp_path: Path,
) -> None:
    """Before: QCoDeS's ``log.exception("Could not connect at …")`` went to stderr through
    Python's last-resort handler, a traceback above trajmon's one-line error."""
    station = write(
        tmp_path / "station.yaml",
        "instruments:\n"
        "  ok: {type: review_drivers.Chatty}\n"
        "  psu: {type: review_drivers.Unreachable, address: 'TCPIP::10.0.0.5::INSTR'}\n",
    )
    channels = write(tmp_path / "channels.yaml", "- {parameter: ok.x, kind: signal}\n")
    db = tmp_path / "never.db"
    result = trajmon(
        "run", "--run-name", "x", "--station", str(station), "--channels", str(channels),
        "--db", str(db), "--duration", "1",
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines() == [
        f"trajmon: error: {station}: cannot load instrument 'psu':"
        " connection refused at TCPIP::10.0.0.5::INSTR"
    ]
    assert not db.exists()


def test_what_a_driver_logs_while_loading_fine_is_still_shown_once(tmp_path: Path) -> None:
    station = write(
        tmp_path / "station.yaml", "instruments:\n  ok: {type: review_drivers.Chatty}\n"
    )
    out = tmp_path / "channels.yaml"
    result = trajmon("channels", "init", "--station", str(station), "-o", str(out))
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("ok: firmware 1.2 is old") == 1, result.stderr
    assert 'parameter: "ok.x"' in out.read_text(encoding="utf-8")


@pytest.mark.parametrize(("key", "shown"), [("true", "True"), ("1", "1"), ("null", "None")])
def test_an_instrument_name_yaml_does_not_read_as_text_is_refused_with_the_fix(
    key: str, shown: str, tmp_path: Path
) -> None:
    """Before: QCoDeS's "cannot load station file: expected string or bytes-like object, got
    'bool'", or, checked against the channels file first, "instrument 'true' is not in …
    (instruments: True)"."""
    station = write(
        tmp_path / "station.yaml",
        f"instruments:\n  {key}:\n"
        "    type: qcodes.instrument_drivers.mock_instruments.DummyInstrument\n",
    )
    channels = write(tmp_path / "channels.yaml", f"- {{parameter: {key}.dac1, kind: signal}}\n")
    db = tmp_path / "never.db"
    result = CliRunner().invoke(
        app,
        ["run", "--run-name", "x", "--station", str(station), "--channels", str(channels),
         "--db", str(db), "--duration", "1"],
        catch_exceptions=False,
    )  # fmt: skip
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        f"trajmon: error: {station}: instrument name {shown} is a YAML"
        f" {type(__import__('yaml').safe_load(key)).__name__}, not a name; put it in quotes"
    ]
    assert not db.exists()


# -- drivers with a get_many of their own ---------------------------------------------------


@pytest.fixture
def short() -> Iterator[ShortGetMany]:
    instrument = ShortGetMany("short")
    yield instrument
    instrument.close()


@pytest.fixture
def dac() -> Iterator[DummyInstrument]:
    instrument = DummyInstrument("dac", gates=["ch1"])
    yield instrument
    instrument.close()


def group_rows(db: Path, run: str, kind: str) -> dict[str, list[Any]]:
    with closing(connect_readonly(db)) as conn:
        ref = resolve_run(conn, run)
        return {
            g["group"]: [row["values"] for row in g["rows"]]
            for g in window_rows(conn, ref, kind, -1.0, 1e9)
        }


def errors(db: Path) -> set[tuple[str, str, str]]:
    with closing(sqlite3.connect(db)) as conn:
        rows = conn.execute("SELECT channel, error_type, message FROM monitor_errors")
        return {tuple(r) for r in rows}


async def test_a_get_many_answering_too_few_values_fails_its_channels_not_the_run(
    db_path: Path, short: ShortGetMany, dac: DummyInstrument
) -> None:
    """Before: in a group that reads two instruments (read on the event loop), the short
    answer raised zip()'s ValueError out of the read and the run *failed*; alone on its
    instrument's thread it was recorded, as zip()'s "argument 3 is shorter than argument 1"."""
    config = MonitorConfig(
        run_name="short",
        db=db_path,
        interval_s=0.05,
        duration_s=0.1,
        channels=[
            ChannelSpec(label="a", source="short.a", kind="signal", group="mixed"),
            ChannelSpec(label="b", source="short.b", kind="signal", group="mixed"),
            ChannelSpec(label="gate", source="dac.ch1", kind="signal", group="mixed"),
            ChannelSpec(label="a alone", source="short.a", kind="signal", group="alone"),
            ChannelSpec(label="b alone", source="short.b", kind="signal", group="alone"),
        ],
    )
    summary = await Recorder(config, {"short": short, "dac": dac}).run()
    assert summary.status == "completed"
    message = "get_many answered 1 values for 2 parameters"
    assert errors(db_path) == {
        (label, "ValueError", message) for label in ("a", "b", "a alone", "b alone")
    }
    rows = group_rows(db_path, "short", "signal")
    assert rows["mixed"] and all(r == {"a": None, "b": None, "gate": 0.0} for r in rows["mixed"])
    assert rows["alone"] and all(r == {"a alone": None, "b alone": None} for r in rows["alone"])


async def test_a_parameter_called_get_many_is_never_set_by_a_read(db_path: Path) -> None:
    """Before: ``instrument.get_many`` found the parameter through QCoDeS's ``__getattr__``
    and every read *set* it to the tuple of parameters to read — a command to the
    instrument from a program that promises only to read."""
    instrument = GetManyParameter("gmp")
    sets = instrument.sets  # close() takes the instrument's attributes away
    try:
        config = MonitorConfig(
            run_name="gmp",
            db=db_path,
            interval_s=0.05,
            duration_s=0.1,
            channels=[ChannelSpec(label="a", source="gmp.a", kind="signal")],
        )
        summary = await Recorder(config, {"gmp": instrument}).run()
    finally:
        instrument.close()
    assert sets == []
    assert summary.status == "completed" and summary.errors == 0
    (rows,) = group_rows(db_path, "gmp", "signal").values()
    assert rows and all(r == {"a": 1.0} for r in rows)


# -- values that do not fit -----------------------------------------------------------------


@pytest.mark.parametrize("value", [Decimal("2.5"), Fraction(5, 2), Decimal("-0.5")])
def test_an_int_channel_never_truncates_a_fraction(value: Any) -> None:
    """Before: int() made Decimal("2.5") and Fraction(5, 2) the integer 2, silently."""
    with pytest.raises(ValueError, match="is not an integer"):
        encoder_for("int")(value)
    with pytest.raises(ValueError, match="is not an integer"):
        canonical_for("int")(value)


@pytest.mark.parametrize(("value", "stored"), [(Decimal("3"), 3), (Fraction(8, 2), 4)])
def test_a_whole_decimal_or_fraction_is_its_integer(value: Any, stored: int) -> None:
    assert encoder_for("int")(value) == stored


@pytest.mark.parametrize(
    ("value", "text"),
    [
        ([1.0, None], "[1.0, None]"),
        ([{"ch": 1}], "[{'ch': 1}]"),
        ([1, [2, 3]], "[1, [2, 3]]"),
        ([2**70], "[1180591620717411303424]"),
    ],
)
def test_a_list_that_cannot_be_an_array_is_kept_as_its_text(value: Any, text: str) -> None:
    """Before: numpy made an object array of it, which cannot be saved without pickles: a
    bad_value (NULL) on every read, where a dict or a tuple with text is kept as its text."""
    assert encoder_for("any")(value) == text
    assert canonical_for("any")(value) == text


async def test_odd_values_from_a_driver_are_flagged_or_kept(db_path: Path) -> None:
    instrument = Odd("odd")
    try:
        config = MonitorConfig(
            run_name="odd",
            db=db_path,
            interval_s=0.05,
            duration_s=0.1,
            channels=[
                ChannelSpec(label="steps", source="odd.steps", kind="signal"),
                ChannelSpec(label="status", source="odd.status", kind="signal"),
            ],
        )
        summary = await Recorder(config, {"odd": instrument}).run()
    finally:
        instrument.close()
    assert summary.status == "completed"
    (rows,) = group_rows(db_path, "odd", "signal").values()
    assert rows and all(r == {"steps": None, "status": "[1.0, None, 3.0]"} for r in rows)
    ((channel, error_type, message),) = errors(db_path)
    assert (channel, error_type) == ("steps", "bad_value")
    assert message.startswith("Decimal('2.5') is not a int")


# -- validator text -------------------------------------------------------------------------


def test_a_starter_file_describes_validators_without_memory_addresses() -> None:
    """Before: ``<qcodes.validators.validators.OnOff object at 0x7f…>`` and an Arrays shape
    naming its parameter ``<qcodes.parameters.parameter.Parameter: n at 1403…>``."""
    instrument = Odd("odd")
    try:
        text = starter_channels_yaml({"odd": instrument}, Path("station.yaml"))
    finally:
        instrument.close()
    assert "vals: <OnOff>; label: relay" in text
    assert "vals: <Arrays, shape: (n,)>; label: trace" in text
    assert not re.search(r"0x[0-9a-fA-F]+| at \d+", text), text


def test_the_run_catalog_describes_validators_without_memory_addresses() -> None:
    """The channels table (and ``list-signals``) stored ``repr(vals)``: an address that changes
    from run to run, where the starter file already shows ``<OnOff>``."""
    instrument = Odd("odd")
    try:
        config = MonitorConfig(
            run_name="v",
            source="instruments",
            channels=[
                ChannelSpec(label="Relay", source="odd.relay", kind="spec"),
                ChannelSpec(label="Trace", source="odd.trace", kind="signal"),
            ],
        )
        vals = {
            c.label: c.vals for g in build_groups(config, {"odd": instrument}) for c in g.channels
        }
    finally:
        instrument.close()
    assert vals == {"Relay": "<OnOff>", "Trace": "<Arrays, shape: (n,)>"}


def test_a_channel_list_is_refused_as_a_source(tmp_path: Path) -> None:
    """``mdac.channels`` (a ChannelTuple) has a get() — the instrument's — so it was taken as a
    parameter and every read of it failed with a TypeError for the whole run."""
    dac = MockDAC("mdac", num_channels=2)
    try:
        with pytest.raises(ConfigError) as caught:
            resolve_parameter("mdac.channels", {"mdac": dac})
    finally:
        dac.close()
    assert str(caught.value) == (
        "'mdac.channels' is a list of channels, not a parameter"
        " (name a parameter of one channel, e.g. mdac.ch01.<parameter>)"
    )


def test_a_tolerance_on_a_spec_compared_exactly_is_refused() -> None:
    """Arrays, text and booleans are compared exactly whatever the tolerance: one configured
    on them was accepted and then silently ignored."""
    instrument = Odd("odd")

    def config(source: str) -> MonitorConfig:
        spec = ChannelSpec(label="S", source=source, kind="spec", tolerance_abs=0.5)
        return MonitorConfig(run_name="t", source="instruments", channels=[spec])

    try:
        with pytest.raises(ConfigError) as caught:
            build_groups(config("odd.trace"), {"odd": instrument})
        (group,) = build_groups(config("odd.n"), {"odd": instrument})  # an int: it applies
    finally:
        instrument.close()
    assert str(caught.value) == (
        "'S': a tolerance applies to numbers, and 'odd.trace' is array (compared exactly);"
        " remove its tolerance"
    )
    assert group.channels[0].tolerance_abs == 0.5


@pytest.mark.parametrize("value", [Decimal("1e400"), Decimal("-1e400")])
def test_a_float_channel_refuses_a_decimal_beyond_every_float(value: Decimal) -> None:
    """``float(Decimal("1e400"))`` is inf, stored as an infinity the instrument never answered,
    where the int 2**1100 was a bad_value; a real infinity is still stored as one."""
    encode = encoder_for("float")
    with pytest.raises(OverflowError, match="beyond every float"):
        encode(value)
    assert encode(Decimal("-Infinity")) == float("-inf")
