"""Station files and channels files on stock QCoDeS drivers nobody here wrote.

The mock instruments come from ``qcodes.instrument_drivers.mock_instruments``; the VISA
instrument is QCoDeS's Lakeshore 336 driver on the pyvisa-sim file QCoDeS ships for its own tests.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import stat
import subprocess
import sys
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import anyio
import pytest
import yaml
from procs import ENV, TRAJMON, committed_samples, query, run_cli, wait_for
from typer.testing import CliRunner

from trajmon import DEFAULT_CHANNELS, MonitorConfig, Recorder
from trajmon.cli import app
from trajmon.config import ConfigError
from trajmon.queries import connect_readonly, list_actions, resolve_run
from trajmon.starter import iter_parameters, starter_channels_yaml
from trajmon.station import check_channels, close_station, load_channels_file, load_station

DAC_STATION = """\
instruments:
  dac:
    type: qcodes.instrument_drivers.mock_instruments.DummyInstrument
    init:
      gates: ["ch1", "ch2"]
"""


STATION_YAML = (
    DAC_STATION
    + """\
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
)

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


def test_channels_init_into_a_directory_says_so_without_suggesting_force(
    station_file: Path, tmp_path: Path
) -> None:
    """``-o DIR`` said "already exists; pass --force", and with --force "is a directory"."""
    result = invoke("channels", "init", "--station", str(station_file), "-o", str(tmp_path))
    assert result.exit_code == 2
    assert "is a directory; give a file name" in result.stderr and "--force" not in result.stderr


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
    "a repeated key": (  # safe_load kept the second silently: dmm.v2 recorded as a spec
        "channels:\n  - {parameter: dmm.v1, kind: signal, kind: spec}\n",
        "malformed YAML at line 2, column 39: duplicate key 'kind'",
    ),
    "no parameter": ("channels:\n  - {kind: signal}\n", "entry 1: 'parameter'"),
    "tolerance on a signal": (
        "channels:\n  - {parameter: dmm.v1, kind: signal, tolerance_abs: 0.1}\n",
        "tolerances apply to specs only",
    ),
    "not a list": ("channels: dmm.v1\n", "expected a 'channels:' list"),
    "two intervals in a group": (
        "channels:\n  - {parameter: dmm.v1, label: a, kind: signal, group: t}\n"
        "  - {parameter: dmm.v2, label: b, kind: signal, group: t, interval_s: 1.0}\n"
        "  - {parameter: dac.ch1, label: c, kind: signal, group: t, interval_s: 0.5}\n",
        "entries 2 ('b') and 3 ('c'): group 't' has two intervals (1.0 s and 0.5 s)",
    ),
    "groups differing only in case": (
        "channels:\n  - {parameter: dmm.v1, label: a, kind: signal, group: temps}\n"
        "  - {parameter: dmm.v2, label: b, kind: signal, group: Temps}\n",
        "entries 1 ('a') and 2 ('b'): group 'Temps' differs from group 'temps' only in case",
    ),
    "signals and specs in one group": (
        "channels:\n  - {parameter: dmm.v1, label: a, kind: signal, group: g}\n"
        "  - {parameter: dac.ch1, label: b, kind: spec, group: g}\n",
        "entries 1 ('a') and 2 ('b'): group 'g' mixes signals and specs",
    ),
    "interval too short": (
        "channels:\n  - {parameter: dmm.v1, kind: signal, interval_s: 1.0e-19}\n",
        "entry 1 (dmm.v1): interval_s must be at least 1e-06 s",
    ),
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


def dac_station(tmp_path: Path, more: str = "") -> Path:
    """station.yaml with the DAC (and ``more`` instruments after it) in ``tmp_path``."""
    path = tmp_path / "station.yaml"
    path.write_text(DAC_STATION + more, encoding="utf-8")
    return path


def channels_yaml(tmp_path: Path, entries: str) -> Path:
    """channels.yaml in ``tmp_path`` with ``entries`` (YAML list items) under ``channels:``."""
    path = tmp_path / "channels.yaml"
    path.write_text("channels:\n" + entries, encoding="utf-8")
    return path


def test_a_groups_interval_may_be_on_a_later_entry(tmp_path: Path) -> None:
    """Entry order does not matter: the first entry takes the interval the second one gives."""
    station_file = dac_station(tmp_path)
    channels = channels_yaml(
        tmp_path,
        "  - {parameter: dac.ch1, label: a, kind: signal, group: temps}\n"
        "  - {parameter: dac.ch2, label: b, kind: signal, group: temps, interval_s: 1.0}\n",
    )
    result = invoke(
        "list-signals", "--json", "--station", str(station_file), "--channels", str(channels)
    )
    assert result.exit_code == 0, result.stderr
    rows = json.loads(result.stdout)["channels"]
    assert [(r["label"], r["group"], r["interval_s"]) for r in rows] == [
        ("a", "temps", 1.0),
        ("b", "temps", 1.0),
    ]


def test_deselecting_the_entry_with_the_interval_keeps_the_groups_rate(tmp_path: Path) -> None:
    """The docs' temperatures: recording only Shield Temperature still polls the group at 1 s."""
    station_file = dac_station(tmp_path)
    channels = channels_yaml(
        tmp_path,
        "  - {parameter: dac.ch1, label: Sample Temperature, kind: signal, group: temperatures,"
        " interval_s: 1.0}\n"
        "  - {parameter: dac.ch2, label: Shield Temperature, kind: signal, group: temperatures}\n",
    )
    db = tmp_path / "runs.db"
    proc = subprocess.run(
        [
            sys.executable, "-m", "trajmon", "run", "--run-name", "shield", "--station",
            str(station_file), "--channels", str(channels), "--signals", "Shield Temperature",
            "--duration", "0.5", "--db", str(db), "--json",
        ],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    groups = {g["name"]: g["interval_s"] for g in json.loads(proc.stdout)["groups"]}
    assert groups["temperatures"] == 1.0


def test_groups_differing_only_in_case_refuse_the_run_before_the_database(
    tmp_path: Path,
) -> None:
    station_file = dac_station(tmp_path)
    channels = channels_yaml(
        tmp_path,
        "  - {parameter: dac.ch1, label: a, kind: signal, group: temps}\n"
        "  - {parameter: dac.ch2, label: b, kind: signal, group: Temps}\n",
    )
    db = tmp_path / "never.db"
    result = invoke(
        "run", "--run-name", "x", "--station", str(station_file), "--channels", str(channels),
        "--duration", "1", "--db", str(db),
    )  # fmt: skip
    assert result.exit_code == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and str(channels) in lines[0] and "only in case" in lines[0]
    assert not db.exists()


def test_channels_init_writes_through_a_symlink_to_its_target(tmp_path: Path) -> None:
    station_file = dac_station(tmp_path)
    (tmp_path / "real").mkdir()
    target = tmp_path / "real" / "channels.yaml"
    target.write_text("old\n", encoding="utf-8")
    link = tmp_path / "link.yaml"
    link.symlink_to(target)
    refused = invoke("channels", "init", "--station", str(station_file), "-o", str(link))
    assert refused.exit_code == 2 and "--force" in refused.stderr
    result = invoke("channels", "init", "--station", str(station_file), "-o", str(link), "--force")
    assert result.exit_code == 0, result.stderr
    assert link.is_symlink() and link.resolve() == target
    assert load_channels_file(target)
    assert sorted(p.name for p in target.parent.iterdir()) == ["channels.yaml"]  # no temp left
    dangling = tmp_path / "dangling.yaml"
    dangling.symlink_to(tmp_path / "real" / "new.yaml")
    made = invoke("channels", "init", "--station", str(station_file), "-o", str(dangling))
    assert made.exit_code == 0, made.stderr
    assert dangling.is_symlink() and load_channels_file(tmp_path / "real" / "new.yaml")


def test_channels_init_refuses_an_output_that_is_not_a_regular_file(tmp_path: Path) -> None:
    station_file = dac_station(tmp_path)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    link = tmp_path / "fifo-link.yaml"
    link.symlink_to(fifo)
    for output in (fifo, link):
        result = invoke(
            "channels", "init", "--station", str(station_file), "-o", str(output), "--force"
        )
        assert result.exit_code == 2
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and "not a regular file" in lines[0]
    assert stat.S_ISFIFO(fifo.lstat().st_mode) and link.is_symlink()


def _docs_station_yaml() -> str:
    """The station example of docs/drivers.md, as the operator would copy it."""
    text = (Path(__file__).parents[1] / "docs" / "drivers.md").read_text(encoding="utf-8")
    block = text.split("In a QCoDeS `station.yaml`:", 1)[1].split("```yaml\n", 1)[1]
    return block.split("```", 1)[0]


async def test_the_drivers_doc_station_example_loads(tmp_path: Path) -> None:
    """QCoDeS's schema refuses unknown instrument-level keys (a bare ``timeout:``)."""
    from simulators.serve import run_simulator

    async with run_simulator(port=0, start_operator=False) as sim:
        text = _docs_station_yaml()
        assert "type: trajmon.drivers.nanonis.NanonisSTM" in text
        text = text.replace("192.168.1.20", sim.host).replace("port: 6502", f"port: {sim.port}")
        text = text.replace("timeout: 2.0", "timeout: 3.5")  # not the default: it reaches init
        station_file = tmp_path / "station.yaml"
        station_file.write_text(text, encoding="utf-8")
        station, instruments = await anyio.to_thread.run_sync(load_station, station_file)
        try:
            assert instruments["stm"].timeout == 3.5
            assert isinstance(await anyio.to_thread.run_sync(instruments["stm"].bias.get), float)
        finally:
            await anyio.to_thread.run_sync(close_station, station)


async def test_a_starter_file_for_the_nanonis_driver_has_its_settings_as_specs(
    tmp_path: Path,
) -> None:
    """Every NanonisSTM parameter is get-only, so "settable -> spec" made all 14 signals and a
    run from the starter file detected no action; the driver now declares each one's kind."""
    from simulators.serve import run_simulator

    async with run_simulator(port=0, start_operator=False) as sim:
        text = _docs_station_yaml().replace("192.168.1.20", sim.host)
        station_file = tmp_path / "station.yaml"
        station_file.write_text(text.replace("port: 6502", f"port: {sim.port}"), encoding="utf-8")
        station, instruments = await anyio.to_thread.run_sync(load_station, station_file)
        try:
            starter = starter_channels_yaml(instruments, station_file)
        finally:
            await anyio.to_thread.run_sync(close_station, station)
    entries = yaml.safe_load(starter)["channels"]
    kinds = {e["parameter"]: e["kind"] for e in entries}
    assert len(kinds) == 14
    assert {p for p, kind in kinds.items() if kind == "signal"} == {"stm.current", "stm.z_position"}
    assert "# unit: V; vals: <Numbers>; label: Bias; read-only; spec by its driver" in starter
    defaults = {c.source: c.kind for c in DEFAULT_CHANNELS}
    assert all(kinds[source] == kind for source, kind in defaults.items())


def test_a_delegate_instruments_parameters_can_be_recorded(tmp_path: Path) -> None:
    """QCoDeS's DelegateInstrument (named in docs/drivers.md) exposes GroupedParameters, which
    carry their sources in ``.parameters``: they are parameters, not containers."""
    station_file = dac_station(
        tmp_path,
        "  field:\n    type: qcodes.instrument.delegate.DelegateInstrument\n"
        "    init:\n      parameters: {X: dac.ch1}\n      set_initial_values_on_load: false\n",
    )
    starter = tmp_path / "starter.yaml"
    made = invoke("channels", "init", "--station", str(station_file), "-o", str(starter))
    assert made.exit_code == 0, made.stderr
    assert '"field.X"' in starter.read_text(encoding="utf-8")
    listed = invoke(
        "list-specs", "--json", "--station", str(station_file), "--channels", str(starter)
    )
    assert listed.exit_code == 0, listed.stderr
    assert "field.X" in [r["parameter"] for r in json.loads(listed.stdout)["channels"]]


def test_starter_labels_stay_unique_when_parameter_names_differ_only_in_case(
    tmp_path: Path,
) -> None:
    from qcodes.instrument_drivers.mock_instruments import DummyInstrument

    dac = DummyInstrument("casedac", gates=["Gate", "gate"])
    try:
        path = tmp_path / "starter.yaml"
        path.write_text(starter_channels_yaml({"casedac": dac}, Path("s.yaml")), encoding="utf-8")
        specs = load_channels_file(path)
        check_channels(specs, {"casedac": dac}, path)
        MonitorConfig(channels=specs)  # labels unique up to case: loads back as it is
    finally:
        dac.close()
    labels = {s.source: s.label for s in specs}
    assert (labels["casedac.Gate"], labels["casedac.gate"]) == ("casedac.Gate", "casedac.gate (2)")


def _record_until_interrupted(db: Path, *args: str) -> None:
    """A run (or resume) in its own process, stopped by Ctrl-C once samples are committed."""
    before = committed_samples(db, "cut")
    proc = subprocess.Popen(
        [*TRAJMON, "run", *args, "--db", str(db), "--quiet"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV,
    )  # fmt: skip
    try:
        wait_for(lambda: committed_samples(db, "cut") >= before + 3, what="samples")
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err


def test_a_station_run_resumes_with_its_stored_channels_when_the_file_changed_or_moved(
    tmp_path: Path,
) -> None:
    """The channels file was read again on resume: edited, it was checked and then ignored (a
    bad entry refused the resume); moved, the resume failed. Now neither matters."""
    station = dac_station(tmp_path)
    channels = channels_yaml(tmp_path, "  - {parameter: dac.ch1, label: Gate, kind: signal}\n")
    db = tmp_path / "runs.db"
    _record_until_interrupted(
        db, "--run-name", "cut", "--station", str(station), "--channels", str(channels)
    )
    channels.write_text("channels:\n  - {parameter: dac.nope, kind: signal}\n", encoding="utf-8")
    _record_until_interrupted(db, "--resume", "cut")
    channels.rename(tmp_path / "elsewhere.yaml")
    moved = run_cli("run", "--resume", "cut", "--duration", "0.3", "--db", str(db), "--json")
    assert moved.returncode == 0, moved.stderr
    assert json.loads(moved.stdout)["status"] == "completed"
    assert query(db, "SELECT sessions FROM runs WHERE run_name = 'cut'") == [(3,)]
    assert query(db, 'SELECT count(DISTINCT "Gate") FROM "cut/signals"') == [(1,)]


def test_resume_refuses_a_channels_file(tmp_path: Path) -> None:
    db = tmp_path / "runs.db"
    refused = run_cli("run", "--resume", "cut", "--channels", "c.yaml", "--db", str(db))
    assert refused.returncode == 2
    assert "--channels: a resumed run keeps its stored configuration" in refused.stderr


def test_clearing_a_staged_station_clears_its_channels_and_selections(
    station_file: Path, channels_file: Path, tmp_path: Path
) -> None:
    """The station's channels file and selections stayed staged without it: `config set --sim`
    and `run --sim` were then refused ("instrument 'dmm' is not in the simulator")."""
    staged = ["--config-path", str(tmp_path / "config.json")]
    given = ["--station", str(station_file), "--channels", str(channels_file), "--specs", "Gate 1"]
    assert invoke("config", "set", *staged, *given).exit_code == 0
    assert invoke("config", "clear", *staged, "--field", "station").exit_code == 0
    result = invoke("config", "set", *staged, "--sim")
    assert result.exit_code == 0, result.stderr
    shown = json.loads(invoke("config", "show", *staged, "--json").stdout)
    assert shown["staged"].get("channels") is None and shown["staged"].get("specs") is None


def test_channels_init_force_keeps_the_replaced_files_permissions(
    station_file: Path, tmp_path: Path
) -> None:
    """Files are replaced through files.replace_text_file, which keeps a file's mode."""
    out = tmp_path / "channels.yaml"
    out.write_text("channels: []\n", encoding="utf-8")
    out.chmod(0o600)
    forced = invoke("channels", "init", "--station", str(station_file), "-o", str(out), "--force")
    assert forced.exit_code == 0, forced.stderr
    assert b"- parameter:" in out.read_bytes() and (out.stat().st_mode & 0o777) == 0o600
