"""The staged configuration file: location, validation before writing, precedence, clearing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from trajmon.config import ConfigError
from trajmon.staging import (
    StagedConfig,
    clear_staged,
    consume_run_name,
    default_config_path,
    effective_config,
    merge_overrides,
    read_staged,
    stage,
    write_staged,
)


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "conf" / "config.json"


def test_default_location_follows_env_then_xdg_then_home(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("TRAJMON_CONFIG", str(tmp_path / "explicit.json"))
    assert default_config_path() == tmp_path / "explicit.json"
    monkeypatch.delenv("TRAJMON_CONFIG")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    assert default_config_path() == tmp_path / "xdg" / "trajmon" / "config.json"
    monkeypatch.delenv("XDG_CONFIG_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_config_path() == tmp_path / "home" / ".config" / "trajmon" / "config.json"


def test_absent_file_stages_nothing(path: Path) -> None:
    assert read_staged(path) == StagedConfig()
    assert not consume_run_name(path)
    assert not path.exists(), "reading and consuming never create the file"


def test_stage_round_trip_with_absolute_paths(
    path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    stage(path, {"run_name": "cooldown-1", "interval_s": 0.05, "db": Path("runs.db")})
    stage(path, {"specs": ["Bias", "Z Setpoint"], "window_before_s": 1.0})
    staged = read_staged(path)
    assert staged.run_name == "cooldown-1"
    assert staged.interval_s == 0.05
    assert staged.db == tmp_path / "runs.db"
    assert staged.specs == ["Bias", "Z Setpoint"]
    assert json.loads(path.read_text())["window_before_s"] == 1.0


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"interval_s": 0.0}, "interval_s must be a finite number > 0"),
        ({"rotate_entries": 0}, "rotate_entries must be >= 1"),
        ({"window_after_s": -1.0}, "window_after_s must be a finite number >= 0"),
        ({"signals": ["Nope"]}, "unknown signal label 'Nope'"),
        ({"specs": ["Tunnel Current"]}, "is a signal, not a spec"),
        ({"run_name": "sqlite_x"}, "reserved by SQLite"),
        ({"host": "127.0.0.1"}, "--host and --port go together"),
        ({"source": "sim", "port": 6501}, "choose one instrument source"),
        ({"port": 0, "host": "h"}, "port"),
        ({"channels": Path("missing.yaml")}, "not found"),
    ],
)
def test_refused_changes_leave_the_file_untouched(
    path: Path, changes: dict[str, object], message: str
) -> None:
    stage(path, {"run_name": "keep", "interval_s": 0.2})
    before = path.read_bytes()
    with pytest.raises(ConfigError) as info:
        stage(path, changes)
    assert message in str(info.value)
    assert "\n" not in str(info.value)
    assert path.read_bytes() == before


def test_a_new_source_replaces_the_old_one_and_its_channels(path: Path, tmp_path: Path) -> None:
    station = tmp_path / "station.yaml"
    station.write_text(
        "instruments:\n  dac:\n    type: qcodes.instrument_drivers.mock_instruments."
        "DummyInstrument\n",
        encoding="utf-8",
    )
    channels = tmp_path / "channels.yaml"
    channels.write_text("channels:\n  - {parameter: dac.ch1, kind: spec}\n", encoding="utf-8")
    stage(path, {"host": "10.0.0.2", "port": 6501, "specs": ["Bias"]})
    staged = stage(path, {"station": station, "channels": channels})
    assert (staged.source, staged.host, staged.port) == ("station", None, None)
    assert staged.specs is None, "the old selection named the old source's channels"
    assert staged.channels == channels
    staged = stage(path, {"specs": ["dac.ch1"]})
    assert staged.specs == ["dac.ch1"]
    staged = stage(path, {"source": "sim"})
    assert (staged.station, staged.channels, staged.specs) == (None, None, None)


def test_a_new_channels_file_drops_the_selections_made_from_the_old_one(
    path: Path, tmp_path: Path
) -> None:
    """The station stayed the same kind, so the selection of the old file's labels stayed and
    every later `config set` or `run --channels NEW` failed on a label the new file lacks."""
    station = tmp_path / "station.yaml"
    station.write_text(
        "instruments:\n  dac:\n    type: qcodes.instrument_drivers.mock_instruments."
        "DummyInstrument\n",
        encoding="utf-8",
    )
    old, new = tmp_path / "old.yaml", tmp_path / "new.yaml"
    old.write_text("channels:\n  - {parameter: dac.ch1, label: Gate 1, kind: spec}\n")
    new.write_text("channels:\n  - {parameter: dac.ch2, label: G, kind: spec}\n")
    stage(path, {"station": station, "channels": old, "specs": ["Gate 1"]})
    staged = stage(path, {"channels": new})
    assert (staged.channels, staged.specs) == (new, None)
    assert merge_overrides(read_staged(path), {"channels": new}).specs is None
    staged = stage(path, {"channels": old, "specs": ["Gate 1"]})  # given together: kept
    assert staged.specs == ["Gate 1"]
    assert merge_overrides(staged, {"channels": new}).specs is None
    assert stage(path, {"channels": old}).specs == ["Gate 1"], "the same file keeps them"


def test_channels_must_name_instruments_of_the_staged_station(path: Path, tmp_path: Path) -> None:
    station = tmp_path / "station.yaml"
    station.write_text(
        "instruments:\n  dac: {type: qcodes.instrument_drivers.mock_instruments.DummyInstrument}\n",
        encoding="utf-8",
    )
    channels = tmp_path / "channels.yaml"
    channels.write_text("channels:\n  - {parameter: scope.x, kind: signal}\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"entry 1 \('scope.x'\): instrument 'scope' is not in"):
        stage(path, {"station": station, "channels": channels})
    assert not path.exists()


def test_precedence_defaults_then_staged_then_command_line(path: Path) -> None:
    stage(path, {"run_name": "staged", "interval_s": 0.05, "rotate_entries": 100, "source": "sim"})
    merged = merge_overrides(read_staged(path), {"interval_s": 0.2, "run_name": None})
    config = effective_config(merged, duration_s=3.0).config
    assert config.run_name == "staged"  # staged, not overridden
    assert config.interval_s == 0.2  # command line wins
    assert config.rotate_entries == 100  # staged wins over the default
    assert config.window_before_s == 2.5  # default
    assert config.duration_s == 3.0


def test_clear_fields_run_name_and_everything(path: Path) -> None:
    stage(path, {"run_name": "r", "interval_s": 0.5, "signals": ["Z Position"]})
    assert consume_run_name(path)
    assert read_staged(path).run_name is None
    assert read_staged(path).interval_s == 0.5
    assert clear_staged(path, ["signals", "specs"]) == ["signals"]
    assert read_staged(path).signals is None
    with pytest.raises(ConfigError, match="unknown config field"):
        clear_staged(path, ["colour"])
    assert clear_staged(path) == ["interval_s"]
    assert not path.exists()


def test_a_corrupt_file_is_one_line_and_clear_all_still_works(path: Path) -> None:
    path.parent.mkdir(parents=True)
    path.write_text("{not json", encoding="utf-8")
    with pytest.raises(ConfigError, match="trajmon config clear"):
        read_staged(path)
    path.write_text('{"interval_s": -1, "colour": "red"}', encoding="utf-8")
    with pytest.raises(ConfigError, match="is invalid"):
        read_staged(path)
    clear_staged(path)
    assert not path.exists()


def test_an_unwritable_place_is_one_error_even_when_cleanup_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a read-only file system the write fails, and so does removing the temporary file; the
    second failure must not replace the one-line error with a traceback."""

    def read_only(*_args: object, **_kwargs: object) -> None:
        raise OSError(30, "Read-only file system")

    monkeypatch.setattr(Path, "write_text", read_only)
    monkeypatch.setattr(Path, "unlink", read_only)
    with pytest.raises(ConfigError, match=r"cannot write staged config .*Read-only file system"):
        write_staged(tmp_path / "config.json", StagedConfig(run_name="x"))
