"""Review of watching the QCoDeS instruments a lab's station holds, beyond the Nanonis driver:
QCoDeS's own mock instruments (channel lists, val_mapping, parsers) loaded from a station file
or built in Python. Paths a QCoDeS user writes (``dci.channels[0]``, a station ``alias:``),
value types a user expects (an on/off mapping is a bool, a ``get_parser=float`` a float) and
the one-line error of a station parameter whose ``initial_value`` is refused. Recordings run
on a simulated clock (tests/recordings.py)."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from qcodes.instrument import Instrument
from qcodes.instrument_drivers.mock_instruments import DummyChannelInstrument
from qcodes.parameters import create_on_off_val_mapping
from recordings import record_every_tick

from trajmon import ChannelSpec, ConfigError, MonitorConfig
from trajmon.resolve import build_groups, resolve_parameter, value_type_of
from trajmon.station import check_channels, close_station, load_channels_file, load_station

DUMMY = "qcodes.instrument_drivers.mock_instruments"


@pytest.fixture
def dci() -> Iterator[DummyChannelInstrument]:
    """Channels ChanA…ChanF, each also a submodule under a key of its own (A…F), and all of
    them in the ``channels`` list."""
    instrument = DummyChannelInstrument("dci")
    try:
        yield instrument
    finally:
        instrument.close()


def test_a_channel_list_indexed_as_in_a_qcodes_station_file_resolves(
    dci: DummyChannelInstrument,
) -> None:
    """QCoDeS's station file names a channel of a list by position (``dac.channels[0]``, its
    ``getattr_indexed``); the same path in a channels file was refused: ``dci has no parameter
    or submodule 'channels[0]'``."""
    instruments = {"dci": dci}
    assert resolve_parameter("dci.channels[1].temperature", instruments) == (
        "dci",
        dci.B.temperature,
    )
    assert resolve_parameter("dci.channels[-1].temperature", instruments)[1] is dci.F.temperature
    with pytest.raises(ConfigError, match=r"dci.channels has 6 channel\(s\): \[6\] is out"):
        resolve_parameter("dci.channels[6].temperature", instruments)
    with pytest.raises(ConfigError, match=r"dci.A is not a list of channels to index with \[0\]"):
        resolve_parameter("dci.A[0].temperature", instruments)


def test_a_channel_list_error_names_paths_that_resolve(dci: DummyChannelInstrument) -> None:
    """The hint for a channel list suggested ``dci.channels.ChanA.<parameter>`` although the
    channel is the submodule ``A``; a name the list does not have said nothing of what it has."""
    instruments = {"dci": dci}
    with pytest.raises(ConfigError, match=r"e\.g\. dci\.A\.<parameter>") as listed:
        resolve_parameter("dci.channels", instruments)
    assert "ChanA" not in str(listed.value)
    with pytest.raises(ConfigError) as missing:
        resolve_parameter("dci.channels.A.temperature", instruments)
    message = str(missing.value)
    assert "its channels: ChanA, ChanB, ChanC, ChanD, ChanE, ChanF" in message
    assert "dci.channels[0]" in message
    assert resolve_parameter("dci.channels.ChanA.temperature", instruments)[1] is dci.A.temperature


def _station(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "station.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_a_station_alias_and_an_indexed_channel_name_their_parameters(tmp_path: Path) -> None:
    """``alias:`` is QCoDeS's station option to give a parameter the name the lab knows it
    by; QCoDeS sets it as an attribute of the instrument, not in its ``parameters``, and a
    channels file naming ``dac.gate1`` was refused: ``dac has no parameter or submodule``."""
    station_file = _station(
        tmp_path,
        "instruments:\n"
        "  dac:\n"
        f"    type: {DUMMY}.DummyInstrument\n"
        "    init: {gates: [ch1, ch2]}\n"
        "    parameters:\n"
        "      ch1: {alias: gate1}\n"
        "  dci:\n"
        f"    type: {DUMMY}.DummyChannelInstrument\n"
        "    parameters:\n"
        "      channels[1].temperature: {alias: shield}\n",
    )
    channels_file = tmp_path / "channels.yaml"
    channels_file.write_text(
        "channels:\n"
        "  - {parameter: dac.gate1, kind: spec}\n"
        "  - {parameter: 'dci.channels[0].temperature', kind: signal}\n"
        "  - {parameter: dci.B.shield, kind: signal}\n",
        encoding="utf-8",
    )
    station, instruments = load_station(station_file)
    try:
        specs = load_channels_file(channels_file)
        check_channels(specs, instruments, channels_file)
        config = MonitorConfig(run_name="r", source="station", channels=specs)
        params = {
            c.source: c.parameter for g in build_groups(config, instruments) for c in g.channels
        }
        assert params["dac.gate1"] is instruments["dac"].ch1
        assert params["dci.channels[0].temperature"] is instruments["dci"].A.temperature
        assert params["dci.B.shield"] is instruments["dci"].B.temperature
        # Only parameters, instruments and channel lists: other attributes name nothing.
        with pytest.raises(ConfigError, match="no parameter or submodule '_short_name'"):
            resolve_parameter("dac._short_name", instruments)
        with pytest.raises(ConfigError, match="no parameter or submodule 'log'"):
            resolve_parameter("dac.log", instruments)
    finally:
        close_station(station)


def test_a_station_parameter_refusing_its_initial_value_is_one_plain_line(
    tmp_path: Path,
) -> None:
    """QCoDeS appends ``'setting dac_ch1 to 1000'`` to the exception's args, and the refusal
    printed their tuple: ``cannot load instrument 'dac': ('1000 is invalid: …', 'setting …')``."""
    station_file = _station(
        tmp_path,
        "instruments:\n"
        "  dac:\n"
        f"    type: {DUMMY}.DummyInstrument\n"
        "    init: {gates: [ch1]}\n"
        "    parameters:\n"
        "      ch1: {initial_value: 1000}\n",
    )
    with pytest.raises(ConfigError) as refused:
        load_station(station_file)
    message = str(refused.value)
    assert "cannot load instrument 'dac': 1000 is invalid" in message, message
    assert message.endswith("(setting dac_ch1 to 1000)"), message
    assert "('" not in message


def test_an_instrument_refused_while_loading_is_closed_and_the_fixed_file_loads(
    tmp_path: Path,
) -> None:
    """QCoDeS made the instrument, then refused its ``initial_value`` before adding it to the
    station: nothing closed it, it kept its name (and a real driver its connection), and loading
    the corrected file in the same session (a notebook) failed with ``Another instrument has
    the name: dac``. An instrument of that name that was open before is not the file's to
    close."""
    text = (
        "instruments:\n"
        "  dac:\n"
        f"    type: {DUMMY}.DummyInstrument\n"
        "    init: {gates: [ch1]}\n"
        "    parameters:\n"
        "      ch1: {initial_value: %s}\n"
    )
    station_file = _station(tmp_path, text % 1000)
    with pytest.raises(ConfigError, match="1000 is invalid"):
        load_station(station_file)
    assert not Instrument.exist("dac")
    station_file.write_text(text % 100, encoding="utf-8")
    station, instruments = load_station(station_file)
    try:
        assert instruments["dac"].ch1.get() == 100
    finally:
        close_station(station)
    mine = DummyChannelInstrument("dac")
    try:
        with pytest.raises(ConfigError, match="Another instrument has the name"):
            load_station(station_file)
        assert Instrument.exist("dac") and Instrument.find_instrument("dac") is mine
    finally:
        mine.close()


class Heater(Instrument):
    """A heater output switched with QCoDeS's on/off mapping (raw "1"/"0", read back as
    ``True``/``False``), and a sensor read with ``get_parser=float`` and no validator, as a
    Lakeshore's temperatures are. Each read takes the next scripted raw answer."""

    def __init__(self, name: str, outputs: list[str], **kwargs: Any) -> None:
        super().__init__(name, **kwargs)
        self._outputs = iter(outputs)
        self._last = outputs[0]
        self.add_parameter(
            "output",
            get_cmd=self._next_output,
            set_cmd=False,
            val_mapping=create_on_off_val_mapping(on_val="1", off_val="0"),
        )
        self.add_parameter("temperature", unit="K", get_cmd=lambda: "4.25", get_parser=float)
        self.add_parameter("count", get_cmd=lambda: "7", get_parser=int)

    def _next_output(self) -> str:
        self._last = next(self._outputs, self._last)
        return self._last

    def get_idn(self) -> dict[str, str | None]:
        return {"vendor": "test", "model": "heater", "serial": None, "firmware": None}


def heater_config(db: Path) -> MonitorConfig:
    """Four ticks of a ``Heater`` keyed ``heater``: its output a spec, its temperature a signal."""
    return MonitorConfig(
        run_name="heat",
        db=db,
        source="instruments",
        interval_s=0.1,
        duration_s=0.4,
        channels=[
            ChannelSpec(label="Heater", source="heater.output", kind="spec"),
            ChannelSpec(label="T", source="heater.temperature", kind="signal"),
        ],
    )


def test_an_on_off_mapping_is_a_bool_spec_whose_switch_is_one_action(tmp_path: Path) -> None:
    """Every read of a ``create_on_off_val_mapping`` parameter is ``True`` or ``False``, but
    its validator also allows ``"on"``, ``"ON"``, ``"1"``…: the channel was untyped (``any``),
    its column held the blobs ``bool:1``/``bool:0`` instead of 1/0."""
    heater = Heater("heater", outputs=["1", "1", "0", "0"])
    assert value_type_of(heater.output) == "bool"
    db = tmp_path / "runs.db"
    summary = record_every_tick(heater_config(db), {"heater": heater})
    assert summary.status == "completed" and summary.errors == 0
    with closing(sqlite3.connect(db)) as conn:
        catalog = dict(conn.execute("SELECT label, value_type FROM channels"))
        stored = [
            r[0] for r in conn.execute('SELECT "Heater" FROM "heat/specs" ORDER BY sample_idx')
        ]
        actions = list(conn.execute("SELECT spec_label, old_value, new_value FROM actions"))
    assert catalog == {"Heater": "bool", "T": "float"}
    assert stored == [1, 1, 0, 0]
    assert actions == [("Heater", 1, 0)]


def test_a_get_parser_without_validator_types_the_channel() -> None:
    """A driver without a validator but with ``get_parser=float`` (every Lakeshore
    temperature) returns only floats: its channel was ``any``, an untyped column that
    Parquet and netCDF exports write as text."""
    heater = Heater("heater", outputs=["0"])
    assert value_type_of(heater.temperature) == "float"
    assert value_type_of(heater.count) == "int"
    heater.add_parameter("scaled", get_cmd=lambda: "7", get_parser=int, scale=2)
    assert value_type_of(heater.scaled) == "float"  # (raw - offset) / scale: a fraction
