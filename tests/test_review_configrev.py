"""Review of configuration entry points as an operator meets them: the staged file edited by
hand, its permissions, a station file staged without a channels file, the label selection and
what ``list-signals`` says about it. Each test pins a fault found in review."""

from __future__ import annotations

import json
import stat
import unicodedata
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from trajmon.cli import app
from trajmon.config import ChannelSpec, ConfigError, MonitorConfig
from trajmon.staging import consume_run_name, read_staged, stage
from trajmon.station import load_channels_file

runner = CliRunner()


def invoke(*args: str) -> Any:
    return runner.invoke(app, list(args), catch_exceptions=False)


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "config.json"


def _write_json(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


# --- selecting labels --------------------------------------------------------------------------


def test_a_label_selected_in_another_unicode_form_names_the_channel() -> None:
    """The error read "unknown signal label 'Température' (known: Température)": the same
    text to the eye, one typed as é and one as e + combining accent."""
    written = unicodedata.normalize("NFD", "Température")
    typed = unicodedata.normalize("NFC", "Température")
    channels = [ChannelSpec(label=written, source="stm.current", kind="signal")]
    with pytest.raises(ValidationError) as info:
        MonitorConfig(channels=channels, signals=[typed])
    message = info.value.errors()[0]["msg"]
    assert f"{typed!a}: the channels have {written!a}" in message
    assert "differs in Unicode form (NFC/NFD)" in message


def test_a_label_selected_in_another_case_names_the_channel() -> None:
    with pytest.raises(ValidationError) as info:
        MonitorConfig(signals=["tunnel current"])
    message = info.value.errors()[0]["msg"]
    assert "'tunnel current': the channels have 'Tunnel Current', which differs in case" in message


# --- the staged file, edited by hand ----------------------------------------------------------


@pytest.mark.parametrize("field", ["signals", "specs"])
def test_an_empty_staged_selection_is_refused_not_a_run_without_that_kind(
    path: Path, field: str
) -> None:
    """``"signals": []`` (the command line refuses ``--signals ''``) recorded no signals at
    all, and ``config show`` printed the field blank."""
    _write_json(path, {"source": "sim", field: []})
    kind = field[:-1]
    with pytest.raises(ConfigError) as info:
        read_staged(path)
    assert f"{field}: an empty list selects no {kind}; to record every {kind}, remove it" in str(
        info.value
    )
    result = invoke("run", "--config-path", str(path), "--run-name", "r", "--duration", "1")
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1 and "an empty list selects no" in result.stderr


def test_list_signals_says_when_a_run_would_refuse_the_staged_selection(path: Path) -> None:
    """It listed every signal as "selected: no" and exited 0, while `run` refused the label."""
    _write_json(path, {"source": "sim", "signals": ["Nope"]})
    result = invoke("list-signals", "--json", "--config-path", str(path))
    assert result.exit_code == 0
    assert [c["selected"] for c in json.loads(result.stdout)["channels"]] == [False, False]
    assert result.stderr.startswith(
        "trajmon: note: a run would refuse the staged selection: unknown signal label 'Nope'"
    )
    refused = invoke("run", "--config-path", str(path), "--run-name", "r", "--duration", "1")
    assert refused.exit_code == 2 and "unknown signal label 'Nope'" in refused.stderr


def test_list_specs_says_nothing_about_a_selection_a_run_accepts(path: Path) -> None:
    _write_json(path, {"source": "sim", "signals": ["Tunnel Current"], "specs": ["Bias"]})
    result = invoke("list-specs", "--config-path", str(path))
    assert result.exit_code == 0 and result.stderr == ""


# --- writing the staged file -----------------------------------------------------------------


def test_staging_keeps_the_staged_files_permissions(path: Path) -> None:
    """It was rewritten with the process's default mode: a file chmod 600 became 0644."""
    stage(path, {"source": "sim"})
    for mode in (0o600, 0o664):
        path.chmod(mode)
        stage(path, {"run_name": "cooldown-1"})
        assert stat.S_IMODE(path.stat().st_mode) == mode
        assert consume_run_name(path)  # the rewrite after every run, too
        assert stat.S_IMODE(path.stat().st_mode) == mode
    assert read_staged(path).source == "sim"


# --- a station file staged without a channels file ---------------------------------------------


def test_a_station_file_that_is_not_yaml_is_refused_when_staged(path: Path, tmp_path: Path) -> None:
    """Checked only together with a channels file: ``config set --station broken.yaml`` was
    staged, and the YAML error came at the next run or `channels init`."""
    station = tmp_path / "station.yaml"
    station.write_text("instruments:\n  dac:\n    type: [x\n", encoding="utf-8")
    stage(path, {"source": "sim"})
    before = path.read_bytes()
    with pytest.raises(ConfigError) as info:
        stage(path, {"station": station})
    assert str(info.value).startswith(f"{station}: malformed YAML at line 4, column 1:")
    assert path.read_bytes() == before


def test_a_directory_staged_as_the_station_file_says_so(path: Path, tmp_path: Path) -> None:
    """It said "station file not found", of a directory that is there."""
    with pytest.raises(ConfigError) as info:
        stage(path, {"station": tmp_path})
    assert str(info.value) == f"station file {tmp_path} is a directory; give the YAML file in it"
    assert not path.exists()


def _channels_with_interval(tmp_path: Path, value: str) -> Path:
    """A channels file of one spec whose ``interval_s`` is ``value`` as written, at column 51."""
    channels = tmp_path / "channels.yaml"
    channels.write_text(
        f"channels:\n  - {{parameter: stm.bias, kind: spec, interval_s: {value}}}\n",
        encoding="utf-8",
    )
    return channels


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("010", "010 is read by YAML as octal (8); write it without the leading zero"),
        ("0_10", "0_10 is read by YAML as octal (8)"),
        ("1:30", "1:30 is read by YAML as base 60 (90); write it without the colons"),
        ("1:30.5", "1:30.5 is read by YAML as base 60 (90.5)"),
    ],
)
def test_a_number_yaml_1_1_reads_in_another_base_is_refused(
    tmp_path: Path, value: str, problem: str
) -> None:
    """``interval_s: 010`` polled every 8 s, and QCoDeS (YAML 1.2) reads the same digits as 10."""
    channels = _channels_with_interval(tmp_path, value)
    with pytest.raises(ConfigError) as info:
        load_channels_file(channels)
    assert str(info.value).startswith(f"{channels}: malformed YAML at line 2, column 51: {problem}")


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("10", 10.0), ("0.5", 0.5), ("1e-3", 0.001), ("0x10", 16.0), ("'010'", 10.0), ("1_0", 10.0)],
)
def test_numbers_in_their_own_base_are_read_as_written(
    tmp_path: Path, value: str, seconds: float
) -> None:
    channels = _channels_with_interval(tmp_path, value)
    (spec,) = load_channels_file(channels)
    assert spec.interval_s == seconds
