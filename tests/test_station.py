"""Station files and channels files on stock QCoDeS drivers nobody here wrote.

The mock instruments come from ``qcodes.instrument_drivers.mock_instruments``; the VISA
instrument is QCoDeS's Lakeshore 336 driver on the pyvisa-sim file QCoDeS ships for its own tests.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import anyio
import pytest
from typer.testing import CliRunner

from trajmon import MonitorConfig, Recorder
from trajmon.cli import app
from trajmon.config import ConfigError
from trajmon.queries import connect_readonly, list_actions, resolve_run
from trajmon.station import (
    check_channels,
    close_station,
    iter_parameters,
    load_channels_file,
    load_station,
    starter_channels_yaml,
)

STATION_YAML = """\
instruments:
  dac:
    type: qcodes.instrument_drivers.mock_instruments.DummyInstrument
    init:
      gates: ["ch1", "ch2"]
  dmm:
    type: qcodes.instrument_drivers.mock_instruments.DummyInstrumentWithMeasurement
    init:
      setter_instr: dac
  ls:
    type: qcodes.instrument_drivers.Lakeshore.LakeshoreModel336
    address: GPIB::2::INSTR
    init:
      pyvisa_sim_file: "qcodes.instrument.sims:lakeshore_model336.yaml"
"""

CHANNELS_YAML = """\
channels:
  - parameter: dmm.v1
    label: Drain Voltage
    kind: signal
  - parameter: ls.A.temperature
    label: Sample Temperature
    kind: signal
    group: temperatures
    interval_s: 0.1
  - parameter: dac.ch1
    label: Gate 1
    kind: spec
    tolerance_abs: 1.0e-9
  - parameter: ls.output_1.setpoint
    kind: spec
"""

runner = CliRunner()


@pytest.fixture
def station_file(tmp_path: Path) -> Path:
    path = tmp_path / "station.yaml"
    path.write_text(STATION_YAML, encoding="utf-8")
    return path


@pytest.fixture
def channels_file(tmp_path: Path) -> Path:
    path = tmp_path / "channels.yaml"
    path.write_text(CHANNELS_YAML, encoding="utf-8")
    return path


@pytest.fixture
def station(station_file: Path) -> Iterator[tuple[Any, dict[str, Any]]]:
    loaded = load_station(station_file)
    yield loaded
    close_station(loaded[0])


def invoke(*args: str) -> Any:
    return runner.invoke(app, list(args), catch_exceptions=False)


def test_station_loads_every_instrument_with_references(
    station: tuple[Any, dict[str, Any]],
) -> None:
    _, instruments = station
    assert list(instruments) == ["dac", "dmm", "ls"]
    # ``setter_instr: dac`` became the dac instrument, so the measurement follows the gate.
    # v1 = 5·exp(-0.2·ch1) + noise with σ = 0.1: 6σ bounds tell "follows the gate" apart.
    instruments["dac"].ch1.set(0.0)
    assert instruments["dmm"].v1.get() > 4.4
    instruments["dac"].ch1.set(20.0)
    assert instruments["dmm"].v1.get() < 0.7
    assert isinstance(instruments["ls"].A.temperature.get(), float)


def test_channels_file_defaults_and_validation(channels_file: Path) -> None:
    specs = load_channels_file(channels_file)
    assert [s.label for s in specs] == [
        "Drain Voltage",
        "Sample Temperature",
        "Gate 1",
        "ls.output_1.setpoint",  # no label: the parameter path
    ]
    assert specs[1].group == "temperatures" and specs[1].interval_s == 0.1
    assert specs[2].tolerance_abs == pytest.approx(1e-9)


async def test_run_over_a_station_records_samples_actions_snapshot_and_catalog(
    station: tuple[Any, dict[str, Any]], channels_file: Path, db_path: Path
) -> None:
    qc_station, instruments = station
    specs = load_channels_file(channels_file)
    check_channels(specs, instruments, channels_file)
    instruments["dac"].ch1.set(0.0)
    config = MonitorConfig(
        run_name="station-run", db=db_path, channels=specs, interval_s=0.02, source="station"
    )
    recorder = Recorder(config, instruments, snapshot=qc_station.snapshot(update=True))
    result: dict[str, Any] = {}
    spec_group = next(i for i, g in enumerate(recorder.groups) if g.kind == "spec")
    async with anyio.create_task_group() as tg:

        async def run() -> None:
            result["summary"] = await recorder.run()

        tg.start_soon(run)
        await recorder.started.wait()
        with anyio.fail_after(20):
            await recorder.wait_until(lambda: recorder.stats[spec_group].samples_read >= 3)
        await anyio.to_thread.run_sync(instruments["dac"].ch1.set, 1.25)
        with anyio.fail_after(20):
            await recorder.wait_until(lambda: recorder.detector_actions >= 1)
            await recorder.wait_until(lambda: all(s.samples_read >= 2 for s in recorder.stats))
        recorder.request_stop()
    summary = result["summary"]
    assert summary.status == "interrupted"
    assert summary.errors == 0 and summary.lost_samples == 0
    assert {g.name for g in summary.groups} == {"signals", "temperatures", "specs"}
    assert all(g.samples > 0 for g in summary.groups)
    with closing(connect_readonly(db_path)) as conn:
        actions = list_actions(conn, resolve_run(conn, "station-run"))
    (action,) = actions
    assert action["spec_label"] == "Gate 1"
    assert action["old_value"] == pytest.approx(0.0)
    assert action["new_value"] == pytest.approx(1.25)
    with closing(sqlite3.connect(db_path)) as conn:
        snapshot = json.loads(conn.execute("SELECT snapshot_json FROM runs").fetchone()[0])
        catalog = conn.execute(
            "SELECT label, kind, unit, value_type, source FROM channels ORDER BY channel_id"
        ).fetchall()
        temps = conn.execute('SELECT "Sample Temperature" FROM "station-run/temperatures"')
        temperatures = [row[0] for row in temps]
    assert set(snapshot["instruments"]) == {"dac", "dmm", "ls"}
    ls_snapshot = snapshot["instruments"]["ls"]
    assert ls_snapshot["submodules"]["A"]["parameters"]["temperature"]["unit"] == "K"
    assert ("Gate 1", "spec", "V", "float", "dac.ch1") in catalog
    assert ("Drain Voltage", "signal", "V", "float", "dmm.v1") in catalog
    assert ("ls.output_1.setpoint", "spec", "", "float", "ls.output_1.setpoint") in catalog
    assert temperatures and all(isinstance(t, float) for t in temperatures)


def test_starter_file_lists_every_gettable_parameter_and_loads_back(
    station: tuple[Any, dict[str, Any]], tmp_path: Path
) -> None:
    _, instruments = station
    text = starter_channels_yaml(instruments, Path("station.yaml"))
    path = tmp_path / "starter.yaml"
    path.write_text(text, encoding="utf-8")
    specs = load_channels_file(path)
    check_channels(specs, instruments, path)
    MonitorConfig(channels=specs)  # labels unique, every entry valid
    by_source = {s.source: s for s in specs}
    assert len(specs) == len(list(iter_parameters(instruments)))
    assert by_source["dac.ch1"].kind == "spec"  # settable
    assert by_source["ls.A.temperature"].kind == "signal"  # read-only
    assert "ls.output_1.setpoint" in by_source  # channels of a submodule
    assert "dac.IDN" not in by_source
    assert "unit: K" in text and "vals: <Numbers -800<=v<=400>" in text


def test_channels_init_command_refuses_to_overwrite(station_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "channels.yaml"
    first = invoke("channels", "init", "--station", str(station_file), "-o", str(out))
    assert first.exit_code == 0, first.stderr
    written = out.read_bytes()
    assert b"- parameter:" in written
    again = invoke("channels", "init", "--station", str(station_file), "-o", str(out))
    assert again.exit_code == 2
    assert "--force" in again.stderr and len(again.stderr.strip().splitlines()) == 1
    assert out.read_bytes() == written
    forced = invoke("channels", "init", "--station", str(station_file), "-o", str(out), "--force")
    assert forced.exit_code == 0
    assert load_channels_file(out)


BAD_CHANNELS = {
    "unknown parameter": (
        "channels:\n  - {parameter: dac.nope, kind: signal}\n",
        "entry 1 ('dac.nope'): dac has no parameter or submodule 'nope'",
    ),
    "unknown instrument": (
        "channels:\n  - {parameter: dmm.v1, kind: signal}\n  - {parameter: scope.x, kind: spec}\n",
        "entry 2 ('scope.x'): instrument 'scope' is not in",
    ),
    "duplicate label": (
        "channels:\n  - {parameter: dmm.v1, label: V, kind: signal}\n"
        "  - {parameter: dmm.v2, label: v, kind: signal}\n",
        "entry 2: duplicate label 'v' (entry 1 has it too)",
    ),
    "bad kind": (
        "channels:\n  - {parameter: dmm.v1, kind: sensor}\n",
        "entry 1 (dmm.v1): kind: Input should be 'signal' or 'spec'",
    ),
    "malformed yaml": ("channels:\n  - {parameter: dmm.v1, kind: signal\n", "malformed YAML"),
    "no parameter": ("channels:\n  - {kind: signal}\n", "entry 1: 'parameter'"),
    "tolerance on a signal": (
        "channels:\n  - {parameter: dmm.v1, kind: signal, tolerance_abs: 0.1}\n",
        "tolerances apply to specs only",
    ),
    "not a list": ("channels: dmm.v1\n", "expected a 'channels:' list"),
}


@pytest.mark.parametrize("case", list(BAD_CHANNELS))
def test_bad_channels_file_is_one_line_exit_2_and_writes_nothing(
    case: str, station_file: Path, tmp_path: Path
) -> None:
    text, message = BAD_CHANNELS[case]
    bad = tmp_path / "bad.yaml"
    bad.write_text(text, encoding="utf-8")
    db = tmp_path / "never.db"
    result = invoke(
        "run",
        "--run-name",
        "x",
        "--station",
        str(station_file),
        "--channels",
        str(bad),
        "--duration",
        "1",
        "--db",
        str(db),
    )
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("trajmon: error:")
    assert str(bad) in lines[0] and message in lines[0]
    assert not db.exists()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("instruments: {}\n", "needs an 'instruments:' mapping"),
        ("instruments:\n  ls: {init: {}}\n", "instrument 'ls' needs a 'type:'"),
        ("instruments:\n  ls: {type: nowhere.Driver}\n", "cannot import 'nowhere.Driver'"),
        (  # the driver itself refuses (pyvisa-sim answers any address, so no VISA case)
            "instruments:\n  ls:\n    type: qcodes.instrument_drivers.mock_instruments."
            "DummyInstrument\n    init: {gates: [A], no_such_argument: 1}\n",
            "cannot load instrument 'ls'",
        ),
        ("instruments: [\n", "malformed YAML"),
    ],
)
def test_bad_station_file_is_one_line_exit_2(text: str, message: str, tmp_path: Path) -> None:
    station_file = tmp_path / "bad-station.yaml"
    station_file.write_text(text, encoding="utf-8")
    channels_file = tmp_path / "channels.yaml"
    channels_file.write_text("- {parameter: ls.A.temperature, kind: signal}\n", encoding="utf-8")
    db = tmp_path / "never.db"
    result = invoke(
        "run", "--run-name", "x", "--station", str(station_file), "--channels",
        str(channels_file), "--duration", "1", "--db", str(db),
    )  # fmt: skip
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert not db.exists()


def test_load_station_closes_what_it_loaded_when_a_later_instrument_fails(tmp_path: Path) -> None:
    from qcodes.instrument import Instrument

    path = tmp_path / "station.yaml"
    path.write_text(
        STATION_YAML + "  broken:\n    type: qcodes.instrument_drivers.mock_instruments.Nope\n",
        encoding="utf-8",
    )
    with pytest.raises(ConfigError, match="cannot import"):
        load_station(path)
    assert not Instrument.exist("dac")


def test_station_without_channels_file_refuses_and_says_how(
    station_file: Path, tmp_path: Path
) -> None:
    db = tmp_path / "never.db"
    result = invoke("run", "--run-name", "x", "--station", str(station_file), "--db", str(db))
    assert result.exit_code == 2
    assert "trajmon channels init" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not db.exists()


def test_cli_run_from_a_station_file(
    station_file: Path, channels_file: Path, tmp_path: Path
) -> None:
    """A real process: the drivers' "Connected to" lines must not spoil --json output."""
    db = tmp_path / "runs.db"
    proc = subprocess.run(
        [
            sys.executable, "-m", "trajmon", "run", "--run-name", "cli-station",
            "--station", str(station_file), "--channels", str(channels_file),
            "--duration", "1", "--interval-s", "0.05", "--db", str(db), "--json",
        ],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["status"] == "completed" and summary["errors"] == 0
    assert summary["signal_samples"] > 0 and summary["spec_samples"] > 0
    with closing(sqlite3.connect(db)) as conn:
        (config_json,) = conn.execute("SELECT config_json FROM runs").fetchone()
    stored = json.loads(config_json)
    assert stored["source"] == "station"
    assert Path(stored["station"]) == station_file
