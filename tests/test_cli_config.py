"""``trajmon config``, the staged run name's lifecycle, and ``list-signals``/``list-specs``.

Every test stages into its own file: ``--config-path`` for in-process commands and
``TRAJMON_CONFIG`` (set per test by conftest) for subprocesses.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from procs import wait_for
from typer.testing import CliRunner

from trajmon.cli import app

runner = CliRunner()


def invoke(*args: str) -> Any:
    return runner.invoke(app, list(args), catch_exceptions=False)


def trajmon(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TRAJMON_CONFIG": str(config), "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "trajmon", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )


def staged(config: Path) -> dict[str, Any]:
    result = invoke("config", "show", "--json", "--config-path", str(config))
    assert result.exit_code == 0, result.stderr
    data: dict[str, Any] = json.loads(result.stdout)["staged"]
    return data


@pytest.fixture
def config(tmp_path: Path) -> Path:
    return tmp_path / "staged.json"


def test_set_show_clear_round_trip(config: Path, tmp_path: Path) -> None:
    result = invoke(
        "config", "set", "--config-path", str(config), "--run-name", "cool-1",
        "--signals", "Tunnel Current", "--specs", "Bias, Z Setpoint", "--specs", "Scan Frame Width",
        "--interval-s", "0.05", "--signal-interval-s", "0.02", "--spec-interval-s", "0.5",
        "--rotate-entries", "100", "--action-window-s", "1.5", "--window-after-s", "4",
        "--db", str(tmp_path / "runs.db"), "--sim",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert "cool-1" in result.stdout
    assert staged(config) == {
        "run_name": "cool-1",
        "db": str(tmp_path / "runs.db"),
        "interval_s": 0.05,
        "signal_interval_s": 0.02,
        "spec_interval_s": 0.5,
        "rotate_entries": 100,
        "window_before_s": 1.5,
        "window_after_s": 4.0,
        "signals": ["Tunnel Current"],
        "specs": ["Bias", "Z Setpoint", "Scan Frame Width"],
        "source": "sim",
    }
    table = invoke("config", "show", "--config-path", str(config))
    assert "Scan Frame Width" in table.stdout and "window_after_s" in table.stdout
    cleared = invoke("config", "clear", "--run-name", "--config-path", str(config))
    assert cleared.exit_code == 0 and "run_name" in cleared.stdout
    assert "run_name" not in staged(config) and staged(config)["interval_s"] == 0.05
    assert invoke("config", "clear", "--field", "signal-interval-s", "--config-path", str(config))
    assert "signal_interval_s" not in staged(config)
    assert invoke("config", "clear", "--config-path", str(config)).exit_code == 0
    assert staged(config) == {} and not config.exists()


@pytest.mark.parametrize(
    "args",
    [
        ("--interval-s", "0"),
        ("--interval-s", "nan"),
        ("--rotate-entries", "0"),
        ("--action-window-s", "-1"),
        ("--signals", "No Such Signal"),
        ("--specs", "Tunnel Current"),
        ("--signals", " , "),
        ("--run-name", "sqlite_master"),
        ("--host", "127.0.0.1"),
        ("--sim", "--station", "station.yaml"),
        ("--channels", "missing.yaml"),
        ("--interval-s", "1e-19"),
        ("--spec-interval-s", "1e5"),
        ("--rotate-entries", "9223372036854775808"),
        ("--db", ""),  # the current directory: every later run would fail on it
        ("--db", "."),
        ("--station", "no-such-station.yaml"),
    ],
)
def test_set_refuses_bad_values_in_one_line_and_keeps_the_file(
    config: Path, args: tuple[str, ...]
) -> None:
    assert (
        invoke("config", "set", "--config-path", str(config), "--run-name", "keep").exit_code == 0
    )
    before = config.read_bytes()
    result = invoke("config", "set", "--config-path", str(config), *args)
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("trajmon: error:")
    assert config.read_bytes() == before


def test_set_with_nothing_is_refused(config: Path) -> None:
    result = invoke("config", "set", "--config-path", str(config))
    assert result.exit_code == 2 and "nothing to set" in result.stderr


def test_run_without_any_name_refuses_and_says_how(config: Path, tmp_path: Path) -> None:
    db = tmp_path / "runs.db"
    result = invoke(
        "run", "--sim", "--duration", "1", "--db", str(db), "--config-path", str(config)
    )
    assert result.exit_code == 2
    assert "trajmon config set --run-name NAME" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not db.exists()


def test_run_uses_the_staged_name_and_configuration_then_clears_the_name(
    config: Path, tmp_path: Path
) -> None:
    db = tmp_path / "runs.db"
    assert invoke(
        "config", "set", "--config-path", str(config), "--run-name", "staged-1", "--sim",
        "--db", str(db), "--spec-interval-s", "0.25", "--signals", "Tunnel Current",
    ).exit_code == 0  # fmt: skip
    proc = trajmon(config, "run", "--duration", "1", "--json", "--interval-s", "0.05")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["run_name"] == "staged-1" and summary["status"] == "completed"
    intervals = {g["kind"]: g["interval_s"] for g in summary["groups"]}
    assert intervals == {"signal": 0.05, "spec": 0.25}  # command line, then staged
    with closing(sqlite3.connect(db)) as conn:
        labels = {r[0] for r in conn.execute("SELECT label FROM channels WHERE kind = 'signal'")}
    assert labels == {"Tunnel Current"}
    left = staged(config)
    assert "run_name" not in left, "the name is single-use"
    assert left["spec_interval_s"] == 0.25 and left["source"] == "sim"
    again = trajmon(config, "run", "--duration", "1")
    assert again.returncode == 2 and "config set --run-name" in again.stderr


def test_a_refused_run_leaves_the_name_staged(config: Path, tmp_path: Path) -> None:
    db = tmp_path / "runs.db"
    first = trajmon(
        config, "run", "--run-name", "taken", "--sim", "--duration", "1", "--db", str(db)
    )
    assert first.returncode == 0, first.stderr
    assert (
        invoke("config", "set", "--config-path", str(config), "--run-name", "taken").exit_code == 0
    )
    refused = invoke("run", "--sim", "--db", str(db), "--config-path", str(config))
    assert refused.exit_code == 2 and "already used" in refused.stderr
    assert staged(config)["run_name"] == "taken"


def test_an_interrupted_run_also_clears_the_name(config: Path, tmp_path: Path) -> None:
    db = tmp_path / "runs.db"
    assert invoke(
        "config", "set", "--config-path", str(config), "--run-name", "stopped", "--sim",
        "--db", str(db),
    ).exit_code == 0  # fmt: skip
    env = {**os.environ, "TRAJMON_CONFIG": str(config)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "trajmon", "run", "--quiet", "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:

        def samples() -> int:
            if not db.exists():
                return 0
            try:
                with closing(sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True)) as conn:
                    row = conn.execute("SELECT coalesce(sum(samples), 0) FROM poll_groups")
                    return int(row.fetchone()[0])
            except sqlite3.Error:
                return 0

        wait_for(lambda: samples() > 0, what="committed samples")
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, err
    assert json.loads(out)["status"] == "interrupted"
    assert "run_name" not in staged(config)
    # resumed with the database as a relative path: the summary names it as a new run's does
    again = subprocess.run(
        [sys.executable, "-m", "trajmon", "run", "--resume", "stopped", "--sim", "--db",
         "runs.db", "--duration", "0.3", "--json"],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60, check=False,
    )  # fmt: skip
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["db"] == json.loads(out)["db"] == str(db.resolve())


def test_list_signals_and_specs_default_to_the_simulator(config: Path) -> None:
    table = invoke("list-signals", "--config-path", str(config))
    assert table.exit_code == 0, table.stderr
    assert "Tunnel Current" in table.stdout and "Bias" not in table.stdout
    specs = invoke("list-specs", "--json", "--config-path", str(config))
    data = json.loads(specs.stdout)
    by_label = {c["label"]: c for c in data["channels"]}
    assert set(by_label) >= {"Bias", "Z Setpoint", "Z Controller Enabled", "Scan Status Code"}
    assert by_label["Bias"]["unit"] == "V" and by_label["Bias"]["value_type"] == "float"
    assert by_label["Z Controller Enabled"]["value_type"] == "bool"
    assert by_label["Bias"]["vals"] == "<Numbers>"
    assert all(c["kind"] == "spec" and c["selected"] for c in data["channels"])


def test_list_marks_the_staged_selection(config: Path) -> None:
    invoke("config", "set", "--config-path", str(config), "--signals", "Z Position")
    data = json.loads(invoke("list-signals", "--json", "--config-path", str(config)).stdout)
    selected = {c["label"]: c["selected"] for c in data["channels"]}
    assert selected == {"Z Position": True, "Tunnel Current": False}


def test_list_from_a_station_and_channels_file(config: Path, tmp_path: Path) -> None:
    station = tmp_path / "station.yaml"
    station.write_text(
        "instruments:\n  dac:\n    type: qcodes.instrument_drivers.mock_instruments."
        "DummyInstrument\n    init: {gates: [ch1, ch2]}\n",
        encoding="utf-8",
    )
    channels = tmp_path / "channels.yaml"
    channels.write_text(
        "channels:\n  - {parameter: dac.ch1, label: Gate 1, kind: spec, interval_s: 0.5,"
        " group: knobs}\n  - {parameter: dac.fixed_parameter, kind: spec, group: knobs}\n"
        "  - {parameter: dac.ch2, kind: signal}\n",
        encoding="utf-8",
    )
    args = ("--station", str(station), "--channels", str(channels), "--config-path", str(config))
    specs = json.loads(invoke("list-specs", "--json", *args).stdout)
    assert specs["source"] == str(station)
    gate, fixed = specs["channels"]
    assert (gate["label"], gate["parameter"], gate["unit"]) == ("Gate 1", "dac.ch1", "V")
    assert gate["vals"] == "<Numbers -800<=v<=400>" and gate["interval_s"] == 0.5
    assert (fixed["label"], fixed["group"]) == ("dac.fixed_parameter", "knobs")
    assert fixed["interval_s"] == 0.5, "a group is read on one schedule"
    table = invoke("list-signals", *args)
    assert table.exit_code == 0 and "dac.ch2" in table.stdout
    no_channels = invoke("list-signals", "--station", str(station), "--config-path", str(config))
    assert no_channels.exit_code == 2 and "trajmon channels init" in no_channels.stderr


def one_error_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("trajmon: error:"), stderr
    return lines[0]


def test_a_staged_file_that_is_not_utf8_is_one_line_and_clear_removes_it(
    config: Path, tmp_path: Path
) -> None:
    config.write_bytes('{"run_name": "x"}'.encode("utf-16"))
    db = tmp_path / "never.db"
    for args in (
        ("config", "show"),
        ("config", "set", "--run-name", "y"),
        ("config", "clear", "--field", "db"),
        ("list-signals",),
        ("run", "--sim", "--duration", "1", "--db", str(db)),
    ):
        proc = trajmon(config, *args)
        assert proc.returncode == 2, (args, proc.stderr)
        assert "not UTF-8" in one_error_line(proc.stderr) and "config clear" in proc.stderr
    assert not db.exists()
    cleared = trajmon(config, "config", "clear")
    assert cleared.returncode == 0, cleared.stderr
    assert not config.exists()


@pytest.mark.parametrize(
    ("set_args", "fields"),
    [
        (("--host", "127.0.0.1", "--port", "6501"), ("host", "port")),
        (("--host", "127.0.0.1", "--port", "6501"), ("port",)),
        (("--station", "station.yaml"), ("station",)),
    ],
)
def test_clearing_part_of_a_source_clears_the_source(
    config: Path, tmp_path: Path, set_args: tuple[str, ...], fields: tuple[str, ...]
) -> None:
    (tmp_path / "station.yaml").write_text(
        "instruments:\n  dac:\n    type: qcodes.instrument_drivers.mock_instruments."
        "DummyInstrument\n",
        encoding="utf-8",
    )
    args = [a if a != "station.yaml" else str(tmp_path / a) for a in set_args]
    assert (
        invoke("config", "set", "--config-path", str(config), "--db", "x.db", *args).exit_code == 0
    )
    clear_args = [arg for f in fields for arg in ("--field", f)]
    assert invoke("config", "clear", "--config-path", str(config), *clear_args).exit_code == 0
    left = staged(config)
    assert not set(left) & {"source", "host", "port", "station"}, left
    db = tmp_path / "never.db"
    run = trajmon(config, "run", "--run-name", "t", "--duration", "1", "--db", str(db))
    assert run.returncode == 2 and "choose one instrument source" in one_error_line(run.stderr)
    assert not db.exists()
    assert trajmon(config, "list-signals").returncode == 0


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"source": "tcp"}', "source 'tcp' has no --host H --port P"),
        ('{"source": "station"}', "source 'station' has no --station FILE"),
    ],
)
def test_a_source_without_its_fields_is_one_line_not_a_traceback(
    config: Path, tmp_path: Path, text: str, message: str
) -> None:
    """A file edited by hand (or by an older trajmon) is checked like a staged change."""
    config.write_text(text, encoding="utf-8")
    db = tmp_path / "never.db"
    for args in (("run", "--run-name", "t", "--duration", "1", "--db", str(db)), ("list-signals",)):
        proc = trajmon(config, *args)
        assert proc.returncode == 2, proc.stderr
        assert message in one_error_line(proc.stderr)
    assert not db.exists()


@pytest.mark.parametrize(
    "args",
    [
        ("--rotate-entries", "9223372036854775808"),
        ("--interval-s", "1e-300"),
        ("--interval-s", "1e-19"),
        ("--signal-interval-s", "1e-7"),
        ("--read-timeout-s", "1e12"),
        ("--stale-after-s", "1e9"),
    ],
)
def test_run_refuses_values_that_would_overflow_before_writing(
    config: Path, tmp_path: Path, args: tuple[str, ...]
) -> None:
    db = tmp_path / "never.db"
    proc = trajmon(
        config, "run", "--sim", "--run-name", "x", "--duration", "1", "--db", str(db), *args
    )
    assert proc.returncode == 2, proc.stderr
    assert args[0].removeprefix("--").replace("-", "_") in one_error_line(proc.stderr)
    assert not db.exists()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "channels:\n  - {parameter: stm.current, kind: signal}\n"
            "  - {parameter: stm.nope, kind: signal}\n",
            "entry 2 ('stm.nope'): stm has no parameter or submodule 'nope'",
        ),
        (
            "channels:\n  - {parameter: stm.bias, kind: spec, group: g}\n"
            "  - {parameter: stm.current, kind: signal, group: g}\n",
            "entries 1 ('stm.bias') and 2 ('stm.current'): group 'g' mixes signals and specs",
        ),
    ],
)
def test_channels_file_errors_on_the_simulator_name_the_file_and_entry(
    config: Path, tmp_path: Path, text: str, message: str
) -> None:
    channels = tmp_path / "channels.yaml"
    channels.write_text(text, encoding="utf-8")
    db = tmp_path / "never.db"
    listed = invoke(
        "list-signals", "--sim", "--channels", str(channels), "--config-path", str(config)
    )
    run = trajmon(
        config, "run", "--sim", "--run-name", "x", "--channels", str(channels),
        "--duration", "1", "--db", str(db),
    )  # fmt: skip
    for code, stderr in ((listed.exit_code, listed.stderr), (run.returncode, run.stderr)):
        assert code == 2
        line = one_error_line(stderr)
        assert f"{channels}: " in line and message in line
    assert not db.exists()


def test_channel_tables_are_not_squeezed_in_a_pipe(config: Path) -> None:
    """Not a terminal (a pipe, a log): the table keeps its natural width, every path whole."""
    result = invoke("list-specs", "--sim", "--config-path", str(config))
    assert result.exit_code == 0, result.stderr
    assert "stm.scan_frame_center_x" in result.stdout and "…" not in result.stdout


def test_an_interval_option_the_channels_file_outranks_is_named_not_dropped_silently(
    config: Path, tmp_path: Path
) -> None:
    channels = tmp_path / "channels.yaml"
    channels.write_text(
        "channels:\n"
        "  - {parameter: stm.current, label: Tunnel Current, kind: signal, interval_s: 0.05}\n"
        "  - {parameter: stm.bias, label: Bias, kind: spec}\n",
        encoding="utf-8",
    )
    proc = trajmon(
        config, "run", "--sim", "--channels", str(channels), "--run-name", "iv", "--json",
        "--duration", "0.5", "--db", str(tmp_path / "iv.db"),
        "--interval-s", "0.3", "--signal-interval-s", "0.1", "--spec-interval-s", "0.2",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    intervals = {g["kind"]: g["interval_s"] for g in json.loads(proc.stdout)["groups"]}
    assert intervals == {"signal": 0.05, "spec": 0.2}
    notes = [line for line in proc.stderr.splitlines() if "is not used" in line]
    assert notes == [
        "trajmon: note: --interval-s 0.3 is not used: every group takes the channels file's"
        " interval_s or a per-kind interval",
        "trajmon: note: --signal-interval-s 0.1 is not used: the channels file sets interval_s"
        " for every group it would apply to",
    ]
    # without a channels file, the per-kind options outrank --interval-s
    plain = trajmon(
        config, "run", "--sim", "--run-name", "iv2", "--duration", "0.3", "--quiet",
        "--db", str(tmp_path / "iv.db"), "--interval-s", "0.3", "--signal-interval-s", "0.1",
        "--spec-interval-s", "0.2",
    )  # fmt: skip
    assert plain.returncode == 0, plain.stderr
    assert [line for line in plain.stderr.splitlines() if "is not used" in line] == [
        "trajmon: note: --interval-s 0.3 is not used: every group takes the channels file's"
        " interval_s or a per-kind interval"
    ]
