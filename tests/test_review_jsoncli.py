"""Every ``--json`` output as a script or a dashboard reads it: one valid JSON document on
stdout whatever stdout's encoding, whatever the values a run holds."""

from __future__ import annotations

import json
import os
import shlex
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from qcodes.instrument import Instrument
from recordings import record_every_tick
from test_review_readbig import record_sim
from typer.testing import CliRunner

from trajmon import ChannelSpec, MonitorConfig
from trajmon.cli import app

NAME = "Messung µ-Spitze 测试 ✓"


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A short simulated run with a non-ASCII name (a fake clock: every tick is read)."""
    db = tmp_path_factory.mktemp("jsoncli") / "runs.db"
    record_sim(db, NAME, 3, duration_s=1.0)
    return db


def _query(charset: str, db: Path, tmp_path: Path, command: str) -> Any:
    """``command`` with ``--json`` on a stdout of ``charset``: exit 0, and the document must be
    UTF-8 (RFC 8259) however the terminal or pipe is encoded."""
    args = {
        "runs": ["runs", "--db", str(db)],
        "status": ["status", "--db", str(db)],
        "actions list": ["actions", "list", "--db", str(db)],
        "export": ["export", NAME, "--db", str(db), "-o", str(tmp_path)],
        "config set": [
            "config",
            "set",
            "--run-name",
            NAME,
            "--config-path",
            str(tmp_path / "c.json"),
        ],
    }[command]
    result = CliRunner(charset=charset).invoke(app, [*args, "--json"])
    assert result.exit_code == 0, (result.exception, result.stderr)
    return json.loads(result.stdout_bytes.decode("utf-8"))


@pytest.mark.parametrize("command", ["runs", "status", "actions list", "export", "config set"])
@pytest.mark.parametrize("charset", ["ascii", "cp1252"])
def test_json_on_a_stdout_that_is_not_utf8_is_ascii_escaped(
    recorded: Path, tmp_path: Path, command: str, charset: str
) -> None:
    """A Windows pipe (cp1252, where Nanonis runs) or ``PYTHONIOENCODING=ascii``: the run name
    "测" was a UnicodeEncodeError traceback (exit 1; for ``export`` after the files were
    written), and "µ" the byte 0xB5, which no JSON reader takes. Escaped as ``\\u00b5`` the
    document is ASCII, valid in every encoding, and reads back as the name."""
    doc = _query(charset, recorded, tmp_path, command)
    text = json.dumps(doc, ensure_ascii=False)
    assert NAME in text


def test_json_on_a_cp1252_stdout_is_utf8_even_when_cp1252_could_write_it(
    tmp_path: Path,
) -> None:
    """The character µ is in cp1252: written as is, it was the single byte 0xB5 in the
    document, which ``json.load``, ``jq`` and every UTF-8 reader refuse — no traceback, just a
    broken file."""
    config = str(tmp_path / "c.json")
    args = ["config", "set", "--run-name", "µ-tip 2", "--config-path", config, "--json"]
    result = CliRunner(charset="cp1252").invoke(app, args)
    assert result.exit_code == 0, result.exception
    assert json.loads(result.stdout_bytes.decode("utf-8"))["staged"]["run_name"] == "µ-tip 2"


def test_json_keeps_non_ascii_as_itself_on_a_utf8_stdout(recorded: Path) -> None:
    """The escaping is only for stdouts that need it: UTF-8 output stays readable."""
    result = CliRunner().invoke(app, ["runs", "--db", str(recorded), "--json"])
    assert result.exit_code == 0
    assert f'"run_name": "{NAME}"' in result.stdout_bytes.decode("utf-8")


@pytest.mark.skipif(sys.platform != "linux", reason="Linux file names are bytes")
def test_json_of_a_db_path_that_is_not_utf8_is_valid_and_gives_the_path_back(
    recorded: Path, tmp_path: Path
) -> None:
    """A database whose file name has a Latin-1 byte (``Messung-\\xb5.db``, copied from an
    old machine): Python holds the byte as a lone surrogate, which a UTF-8 stdout wrote raw
    (invalid UTF-8: ``json.tool`` refused the document) or as a traceback. Escaped, the path
    reads back exactly."""
    raw = os.fsencode(tmp_path) + b"/Messung-\xb5.db"
    with open(raw, "wb") as copy:
        copy.write(recorded.read_bytes())
    path = os.fsdecode(raw)
    result = CliRunner().invoke(app, ["runs", "--db", path, "--json"])
    assert result.exit_code == 0, (result.exception, result.stderr)
    doc = json.loads(result.stdout_bytes.decode("utf-8"))
    assert os.fsencode(doc["db"]) == raw
    assert doc["runs"][0]["run_name"] == NAME


class ZeroD(Instrument):
    """A driver returning its reading as a 0-d numpy array (``np.asarray(x)`` of a scalar):
    an untyped channel stores it as an array."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.reads = 0

        def get() -> Any:
            self.reads += 1
            return np.asarray(float(self.reads // 2))  # changes every other read

        self.add_parameter("level", get_cmd=get, set_cmd=False)


@pytest.fixture
def zero_d_run(db_path: Path) -> Iterator[Path]:
    zd = ZeroD("zd_jsoncli")
    try:
        channels = [
            ChannelSpec(label="level", source="zd_jsoncli.level", kind="spec"),
            ChannelSpec(label="level signal", source="zd_jsoncli.level", kind="signal"),
        ]
        config = MonitorConfig(
            run_name="zero-d", db=db_path, interval_s=0.1, duration_s=1.0, channels=channels
        )
        assert record_every_tick(config, {"zd_jsoncli": zd}).status == "completed"
    finally:
        zd.close()
    yield db_path


def test_a_zero_d_array_value_is_its_number_in_json(zero_d_run: Path) -> None:
    """``actions list --json`` and ``actions show --json`` of a run whose values were 0-d
    arrays were a ``TypeError: 'float' object is not iterable`` traceback (exit 1): the JSON
    conversion iterated over ``tolist()``, a plain number for a 0-d array."""
    db = str(zero_d_run)
    listed = CliRunner().invoke(app, ["actions", "list", "--db", db, "--json"])
    assert listed.exit_code == 0, listed.exception
    actions = json.loads(listed.stdout)["actions"]
    assert actions
    for action in actions:
        assert isinstance(action["old_value"], float) and isinstance(action["new_value"], float)
        assert action["old_value"] != action["new_value"]
    shown = CliRunner().invoke(
        app, ["actions", "show", "0", "--db", db, "--json", "--with-signal-window"]
    )
    assert shown.exit_code == 0, shown.exception
    rows = json.loads(shown.stdout)["signal_window"][0]["rows"]
    values = [row["values"]["level signal"] for row in rows]
    assert values and all(isinstance(v, float) for v in values)


STATION = (
    "instruments:\n  dac_jsoncli:\n    type: qcodes.instrument_drivers.mock_instruments."
    "DummyInstrument\n    init: {gates: [ch1]}\n"
)


def test_channels_init_prints_a_check_command_that_pastes_with_spaces_in_paths(
    tmp_path: Path,
) -> None:
    """``channels init --station "my station.yaml" -o "my channels.yaml"`` printed
    ``trajmon list-signals --station my station.yaml --channels my channels.yaml``: pasted,
    the shell passed ``my`` as the station and ``station.yaml`` as a stray argument."""
    station = tmp_path / "my station.yaml"
    station.write_text(STATION, encoding="utf-8")
    output = tmp_path / "my channels.yaml"
    args = ["channels", "init", "--station", str(station), "-o", str(output)]
    result = CliRunner().invoke(app, [*args, "--config-path", str(tmp_path / "c.json")])
    assert result.exit_code == 0, (result.exception, result.stderr)
    command = shlex.split(result.stdout.splitlines()[-1])
    assert command == [
        "trajmon",
        "list-signals",
        "--station",
        str(station),
        "--channels",
        str(output),
    ]
    listed = CliRunner().invoke(
        app, [*command[1:], "--json", "--config-path", str(tmp_path / "c.json")]
    )
    assert listed.exit_code == 0, listed.stderr
    assert json.loads(listed.stdout)["channels_file"] == str(output)


def test_a_station_run_without_channels_names_a_channels_init_command_that_pastes(
    tmp_path: Path,
) -> None:
    """The refusal of a station run without a channels file names the command that makes
    one; with a space in the station's path that command did not paste either."""
    station = tmp_path / "my station.yaml"
    station.write_text(STATION, encoding="utf-8")
    db = tmp_path / "never.db"
    args = ["run", "--station", str(station), "--run-name", "r", "--db", str(db), "--json"]
    result = CliRunner().invoke(app, [*args, "--config-path", str(tmp_path / "c.json")])
    assert result.exit_code == 2 and result.stdout == ""
    (line,) = result.stderr.splitlines()
    command = shlex.split(line.split("`")[1])
    assert command[:4] == ["trajmon", "channels", "init", "--station"]
    assert command[4] == str(station)
    assert not db.exists()
