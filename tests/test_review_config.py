"""Review of configuration as an operator writes it: channels files, the staged config, and
the selection options. Each test pins a fault found in review."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from trajmon.cli.config_cmd import label_list
from trajmon.config import ChannelSpec, ConfigError, MonitorConfig
from trajmon.staging import effective_config, merge_overrides, read_staged, stage
from trajmon.station import load_channels_file
from trajmon.yamlfile import YamlSyntaxError, read_yaml

STATION = """\
instruments:
  dac:
    type: qcodes.instrument_drivers.mock_instruments.DummyInstrument
    init:
      gates: ["ch1", "ch2"]
"""


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "conf" / "config.json"


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


# --- YAML merge keys -------------------------------------------------------------------------


def test_yaml_merge_keys_load_as_safe_load_reads_them(tmp_path: Path) -> None:
    """``<<: *defaults`` is valid YAML that safe_load reads; the strict loader refused it as
    "malformed YAML ... could not determine a constructor for the tag ...merge"."""
    channels = _write(
        tmp_path / "channels.yaml",
        "channels:\n"
        "  - &spec {parameter: stm.bias, kind: spec, group: settings, interval_s: 0.5}\n"
        "  - <<: *spec\n"
        "    parameter: stm.z_setpoint\n"
        "    label: Setpoint\n",
    )
    specs = load_channels_file(channels)
    assert [(s.label, s.source, s.group, s.interval_s) for s in specs] == [
        ("stm.bias", "stm.bias", "settings", 0.5),
        ("Setpoint", "stm.z_setpoint", "settings", 0.5),
    ]
    assert read_yaml(_write(tmp_path / "m.yaml", "a: &b {x: 1}\nc:\n  <<: *b\n  x: 2\n")) == {
        "a": {"x": 1},
        "c": {"x": 2},  # a key beside the merge overrides the merged one, as YAML says
    }


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("a: &b {x: 1}\nc:\n  <<: *b\n  <<: *b\n", "line 4, column 3: duplicate key '<<'"),
        ("c:\n  <<: {x: 1, x: 2}\n", "line 2, column 14: duplicate key 'x'"),
        ("c:\n  x: 1\n  <<: {y: 3}\n  x: 2\n", "line 4, column 3: duplicate key 'x'"),
    ],
)
def test_repeated_keys_are_still_refused_around_merge_keys(
    tmp_path: Path, text: str, problem: str
) -> None:
    with pytest.raises(YamlSyntaxError) as info:
        read_yaml(_write(tmp_path / "m.yaml", text))
    assert str(info.value) == problem


# --- channels file values --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("entry", "problem"),
    [
        ("label: 1", "label: 1 is read by YAML as a number, not text; put it in quotes"),
        ("label: yes", "label: true is read by YAML as a boolean, not text; put it in quotes"),
        ("label: 2024-01-01", "label: 2024-01-01 is read by YAML as a date, not text;"),
        ("label:", "label: nothing given; give text, or leave the key out"),
        ("group: 10", "group: 10 is read by YAML as a number, not text; put it in quotes"),
    ],
)
def test_a_label_yaml_reads_as_something_else_says_to_quote_it(
    tmp_path: Path, entry: str, problem: str
) -> None:
    channels = _write(
        tmp_path / "channels.yaml",
        f"channels:\n  - parameter: stm.bias\n    kind: spec\n    {entry}\n",
    )
    with pytest.raises(ConfigError) as info:
        load_channels_file(channels)
    assert f"{channels}: entry 1 (stm.bias): {problem}" in str(info.value)


@pytest.mark.parametrize("field", ["tolerance_abs", "tolerance_rel"])
def test_a_zero_tolerance_on_a_signal_is_refused_like_any_other(field: str) -> None:
    """Tolerances are for specs; ``0`` slipped through a truthiness check."""
    with pytest.raises(ValidationError, match="tolerances apply to specs only"):
        ChannelSpec(label="I", source="stm.current", kind="signal", **{field: 0})


def test_labels_that_differ_only_in_unicode_form_are_refused() -> None:
    """``café`` typed as one character and as ``e`` + combining accent look the same; as two
    columns an operator could not tell which one a query names."""
    nfc, nfd = "caf\u00e9", "cafe\u0301"
    with pytest.raises(ValidationError) as info:
        MonitorConfig(
            channels=[
                ChannelSpec(label=nfc, source="stm.bias", kind="spec"),
                ChannelSpec(label=nfd, source="stm.z_setpoint", kind="spec"),
            ]
        )
    assert "different Unicode forms" in str(info.value)


# --- the staged configuration, edited by hand ------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("interval_s", True),
        ("signal_interval_s", True),
        ("rotate_entries", True),
        ("window_before_s", False),
        ("window_after_s", True),
        ("port", True),
    ],
)
def test_a_staged_boolean_is_not_a_number(path: Path, field: str, value: bool) -> None:
    """JSON ``true`` in a hand-edited file was read as 1: ``"interval_s": true`` polled once a
    second, ``"rotate_entries": true`` made one segment per sample."""
    path.parent.mkdir(parents=True)
    data: dict[str, Any] = {field: value}
    if field == "port":
        data.update(source="tcp", host="127.0.0.1")
    path.write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        read_staged(path)
    assert f"{field}: expected a number, got {value}" in str(info.value)


def test_a_field_given_twice_in_the_staged_file_is_refused(path: Path) -> None:
    path.parent.mkdir(parents=True)
    path.write_text('{"run_name": "cooldown-1", "run_name": "cooldown-2"}', encoding="utf-8")
    with pytest.raises(ConfigError, match="'run_name' is given twice"):
        read_staged(path)


def test_a_symlinked_staged_file_stays_a_link(tmp_path: Path) -> None:
    """A config file kept in a dotfiles repository and linked into ~/.config: writing it
    replaced the link with a plain file, and the repository copy never changed."""
    real = tmp_path / "dotfiles" / "trajmon.json"
    real.parent.mkdir()
    real.write_text("{}\n", encoding="utf-8")
    link = tmp_path / "config.json"
    link.symlink_to(real)
    stage(link, {"interval_s": 0.5})
    assert link.is_symlink()
    assert json.loads(real.read_text(encoding="utf-8")) == {"interval_s": 0.5}


def test_a_staged_channels_symlink_is_kept_so_re_pointing_it_is_seen(
    path: Path, tmp_path: Path
) -> None:
    first = _write(tmp_path / "first.yaml", "- {parameter: stm.bias, kind: spec, label: A}\n")
    second = _write(tmp_path / "second.yaml", "- {parameter: stm.bias, kind: spec, label: B}\n")
    link = tmp_path / "channels.yaml"
    link.symlink_to(first)
    stage(path, {"channels": link})
    link.unlink()
    link.symlink_to(second)
    assert read_staged(path).channels == link
    assert [c.label for c in effective_config(read_staged(path)).config.channels] == ["B"]


# --- selections --------------------------------------------------------------------------------


def test_a_selection_staged_for_a_station_is_checked_against_its_first_channels_file(
    path: Path, tmp_path: Path
) -> None:
    """Staged before the station had a channels file, ``--specs`` was dropped without a word
    when the channels file was staged: the run then recorded every spec. The docs say such a
    selection is checked when the channels file is staged."""
    station = _write(tmp_path / "station.yaml", STATION)
    channels = _write(
        tmp_path / "channels.yaml",
        "- {parameter: dac.ch1, kind: spec, label: Gate 1}\n"
        "- {parameter: dac.ch2, kind: spec, label: Gate 2}\n",
    )
    stage(path, {"station": station, "specs": ["Gate 1"]})
    stage(path, {"channels": channels})
    assert read_staged(path).specs == ["Gate 1"]
    for_run = merge_overrides(read_staged(path), {})
    assert effective_config(for_run).config.specs == ["Gate 1"]

    other = tmp_path / "other.json"
    stage(other, {"station": station, "specs": ["Nope"]})
    before = other.read_bytes()
    with pytest.raises(ConfigError) as info:
        stage(other, {"channels": channels})
    assert "unknown spec label 'Nope'" in str(info.value)
    assert "trajmon config clear --field specs" in str(info.value)
    assert other.read_bytes() == before


def test_a_label_with_a_comma_can_be_selected(tmp_path: Path) -> None:
    """Labels may hold commas ("Bias, fine"), but --signals/--specs split on every comma, so
    such a channel could not be selected at all; ``\\,`` is a comma inside a label."""
    assert label_list(["Bias\\, fine, Gate", "X"], "--specs") == ["Bias, fine", "Gate", "X"]
    assert label_list(["A,B"], "--specs") == ["A", "B"]
    channels = _write(
        tmp_path / "channels.yaml",
        '- {parameter: stm.bias, kind: spec, label: "Bias, fine"}\n'
        "- {parameter: stm.z_setpoint, kind: spec}\n",
    )
    staged = merge_overrides(
        read_staged(tmp_path / "none.json"),
        {"channels": channels, "specs": label_list(["Bias\\, fine"], "--specs")},
    )
    config = effective_config(staged).config
    assert [c.label for c in config.selected_channels()] == ["Bias, fine"]


def test_a_channels_file_for_the_simulator_is_checked_at_set_time(
    path: Path, tmp_path: Path
) -> None:
    """With --sim (or --host/--port) the one instrument is ``stm``: a file naming another was
    staged without a word and refused only by the next run."""
    channels = _write(tmp_path / "channels.yaml", "- {parameter: dac.ch1, kind: spec}\n")
    stage(path, {"source": "sim", "interval_s": 0.5})
    before = path.read_bytes()
    with pytest.raises(ConfigError) as info:
        stage(path, {"channels": channels})
    assert str(info.value) == (
        f"{channels}: entry 1 ('dac.ch1'): instrument 'dac' is not in the simulator or a"
        " Nanonis controller (instruments: stm); for a station's instruments, give"
        " --station FILE with it"
    )
    assert path.read_bytes() == before


def test_every_channels_example_in_the_configuration_docs_loads(tmp_path: Path) -> None:
    """The merge-key example added with the fix above, and the others, as an operator copies
    them (the first YAML block is the station file)."""
    doc = Path(__file__).parents[1] / "docs" / "configuration.md"
    blocks = doc.read_text(encoding="utf-8").split("```yaml\n")[1:]
    examples = [block.split("```")[0] for block in blocks[1:]]
    assert any("<<: *" in text for text in examples)
    for i, text in enumerate(examples):
        assert load_channels_file(_write(tmp_path / f"example{i}.yaml", text))


# --- channels file entries (station.py) ------------------------------------------------------


def test_a_channels_file_names_the_entry_of_a_label_repeated_in_another_unicode_form(
    tmp_path: Path,
) -> None:
    """The file's own duplicate check compared casefolded labels only: an NFC/NFD pair got past
    it and was refused later without the file's name and the entries."""
    channels = _write(
        tmp_path / "channels.yaml",
        "channels:\n"
        '  - {parameter: stm.bias, kind: spec, label: "caf\\u00e9"}\n'
        '  - {parameter: stm.z_setpoint, kind: spec, label: "cafe\\u0301"}\n',
    )
    with pytest.raises(ConfigError) as info:
        load_channels_file(channels)
    assert str(info.value) == (
        f"{channels}: entry 2: duplicate label 'cafe\u0301' (entry 1 has it too)"
    )


@pytest.mark.parametrize(
    ("value", "message"),
    [
        pytest.param("5", "'parameter' must be a path such as stm.bias, got 5", id="number"),
        pytest.param("null", "'parameter' (instrument.parameter) is missing", id="null"),
    ],
)
def test_a_parameter_that_is_not_text_says_so(tmp_path: Path, value: str, message: str) -> None:
    """``parameter: 5`` was reported as missing, which sends the operator looking for a key
    that is there."""
    channels = _write(
        tmp_path / "channels.yaml", f"channels:\n  - {{parameter: {value}, kind: spec}}\n"
    )
    with pytest.raises(ConfigError) as info:
        load_channels_file(channels)
    assert str(info.value) == f"{channels}: entry 1: {message}"


def test_a_parameter_path_with_spaces_around_it_names_the_parameter(tmp_path: Path) -> None:
    """``parameter: " stm.bias "`` kept its spaces: the instrument ' stm' was unknown, and the
    default label carried them."""
    channels = _write(
        tmp_path / "channels.yaml", 'channels:\n  - {parameter: " stm.bias ", kind: spec}\n'
    )
    (spec,) = load_channels_file(channels)
    assert (spec.source, spec.label) == ("stm.bias", "stm.bias")


def test_a_directory_given_as_the_channels_file_says_so(tmp_path: Path) -> None:
    """It said "not found", and the operator looked for a file that is there."""
    (tmp_path / "channels").mkdir()
    with pytest.raises(ConfigError) as info:
        load_channels_file(tmp_path / "channels")
    assert str(info.value) == (
        f"channels file {tmp_path / 'channels'} is a directory; give the YAML file in it"
    )
