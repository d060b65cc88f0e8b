"""Monitor configuration: every bad value is refused before a run starts, in one readable line."""

from __future__ import annotations

import math
from typing import Any

import pytest
from pydantic import ValidationError

from trajmon.config import (
    DEFAULT_CHANNELS,
    ChannelSpec,
    ConfigError,
    MonitorConfig,
    check_run_name,
    format_validation_error,
)
from trajmon.resolve import build_groups


def ch(label: str, kind: Any = "spec", **kw: Any) -> ChannelSpec:
    return ChannelSpec(label=label, source="stm.param", kind=kind, **kw)


def refusal(**kwargs: Any) -> str:
    """The one-line message an operator sees for a configuration that must be refused."""
    with pytest.raises(ValidationError) as info:
        MonitorConfig(**kwargs)
    line = format_validation_error(info.value)
    assert line.splitlines() == [line], f"not one line: {line!r}"
    assert line.strip() == line
    assert line
    return line


# --------------------------------------------------------------------------------------------
# Defaults
# --------------------------------------------------------------------------------------------


def test_defaults() -> None:
    cfg = MonitorConfig()
    assert cfg.interval_s == 0.1
    assert cfg.rotate_entries == 6000
    assert cfg.window_before_s == 2.5
    assert cfg.window_after_s == 2.5
    assert cfg.commit_interval_s == 0.25
    assert cfg.signal_interval_s is None
    assert cfg.spec_interval_s is None
    assert cfg.signals is None
    assert cfg.specs is None
    assert cfg.run_name is None
    assert cfg.channels == list(DEFAULT_CHANNELS)


def test_default_channels_are_the_seed_design() -> None:
    kinds = {c.label: c.kind for c in DEFAULT_CHANNELS}
    assert [label for label, kind in kinds.items() if kind == "signal"] == [
        "Z Position",
        "Tunnel Current",
    ]
    assert len(DEFAULT_CHANNELS) == 12
    assert len({c.label.casefold() for c in DEFAULT_CHANNELS}) == 12
    assert all(c.source.startswith("stm.") for c in DEFAULT_CHANNELS)
    assert {c.group_name for c in DEFAULT_CHANNELS} == {"signals", "specs"}


def test_channel_lists_are_not_shared_between_configs() -> None:
    a, b = MonitorConfig(), MonitorConfig()
    a.channels.append(ch("Extra"))
    assert len(b.channels) == 12
    assert len(DEFAULT_CHANNELS) == 12


# --------------------------------------------------------------------------------------------
# Refusals
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("field", ["interval_s", "signal_interval_s", "spec_interval_s"])
@pytest.mark.parametrize("bad", [0.0, -0.1, -math.inf, math.inf, math.nan])
def test_intervals_must_be_finite_and_positive(field: str, bad: float) -> None:
    line = refusal(**{field: bad})
    assert field in line
    assert "> 0" in line


@pytest.mark.parametrize(
    "field", ["commit_interval_s", "heartbeat_s", "stale_after_s", "read_timeout_s", "duration_s"]
)
@pytest.mark.parametrize("bad", [0.0, -1.0, math.nan, math.inf])
def test_other_durations_must_be_finite_and_positive(field: str, bad: float) -> None:
    assert field in refusal(**{field: bad})


@pytest.mark.parametrize("bad", [0, -1, -6000])
def test_rotate_entries_must_be_at_least_one(bad: int) -> None:
    line = refusal(rotate_entries=bad)
    assert "rotate_entries" in line
    assert str(bad) in line


def test_rotate_entries_one_is_accepted() -> None:
    assert MonitorConfig(rotate_entries=1).rotate_entries == 1


@pytest.mark.parametrize("field", ["window_before_s", "window_after_s"])
@pytest.mark.parametrize("bad", [-0.001, -2.5, math.nan, -math.inf])
def test_windows_must_not_be_negative_or_nan(field: str, bad: float) -> None:
    assert field in refusal(**{field: bad})


@pytest.mark.parametrize("field", ["window_before_s", "window_after_s"])
def test_zero_window_is_accepted(field: str) -> None:
    assert getattr(MonitorConfig.model_validate({field: 0.0}), field) == 0.0


@pytest.mark.parametrize(
    ("first", "second"),
    [("Bias", "Bias"), ("Bias", "bias"), ("Tunnel Current", "TUNNEL CURRENT"), ("Δz", "ΔZ")],
)
def test_duplicate_labels_are_refused_case_insensitively(first: str, second: str) -> None:
    line = refusal(channels=[ch(first), ch("Other"), ch(second, "signal")])
    assert "duplicate" in line
    assert "label" in line
    assert repr(second) in line


def test_labels_are_compared_after_stripping() -> None:
    line = refusal(channels=[ch("Bias"), ch("  Bias ")])
    assert "duplicate channel label 'Bias'" in line


@pytest.mark.parametrize("option", ["signals", "specs"])
def test_unknown_label_is_refused(option: str) -> None:
    line = refusal(**{option: ["No Such Channel"]})
    assert "unknown" in line
    assert "'No Such Channel'" in line
    if option == "signals":
        assert "Tunnel Current" in line  # the known alternatives are listed
    else:
        assert "Bias" in line


def test_label_match_in_signals_is_exact() -> None:
    assert "'tunnel current'" in refusal(signals=["tunnel current"])


@pytest.mark.parametrize(
    ("option", "label", "actual"),
    [("signals", "Bias", "spec"), ("specs", "Tunnel Current", "signal")],
)
def test_kind_mismatch_is_refused(option: str, label: str, actual: str) -> None:
    line = refusal(**{option: [label]})
    assert repr(label) in line
    assert f"is a {actual}" in line


def test_duplicate_in_selection_is_refused() -> None:
    assert "signals" in refusal(signals=["Tunnel Current", "Tunnel Current"])


@pytest.mark.parametrize(
    "name",
    [
        pytest.param("", id="empty"),
        pytest.param("   ", id="blank"),
        pytest.param("run\n2", id="newline"),
        pytest.param("run\r\n2", id="crlf"),
        pytest.param("run\x00", id="nul"),
        pytest.param("run\t1", id="tab"),
        pytest.param("\x1b[2Jrun", id="escape"),
        pytest.param("run\x7f", id="del"),
        pytest.param("run\x85two", id="c1-next-line"),
        pytest.param("sqlite_master", id="sqlite_master"),
        pytest.param("SQLite_stat1", id="sqlite-prefix-mixed-case"),
        pytest.param("  sqlite_x", id="sqlite-prefix-padded"),
        pytest.param("r" * 201, id="too-long"),
    ],
)
def test_bad_run_names_are_refused(name: str) -> None:
    line = refusal(run_name=name)
    assert line.startswith("run_name: ")
    with pytest.raises(ConfigError):
        check_run_name(name)


@pytest.mark.parametrize(
    "name",
    [
        "tip-approach 2024-05-01",
        "Si(111) 7×7 — Ω",
        'it\'s "quoted"',
        "x'; DROP TABLE runs; --",
        "a/b\\c",
        "my_sqlite_run",
        "r" * 200,
    ],
)
def test_printable_run_names_are_accepted(name: str) -> None:
    assert MonitorConfig(run_name=name).run_name == name
    assert check_run_name(name) == name


def test_run_name_is_stripped() -> None:
    assert MonitorConfig(run_name="  morning scan  ").run_name == "morning scan"


@pytest.mark.parametrize(
    ("label", "reason"),
    [
        ("", "empty"),
        ("a\nb", "control"),
        ("dt_s", "reserved"),
        ("Sample_Idx", "reserved"),
        ("segment_id", "reserved"),
    ],
)
def test_bad_labels_are_refused_with_their_position(label: str, reason: str) -> None:
    line = refusal(channels=[ch("Bias"), {"label": label, "source": "stm.x", "kind": "spec"}])
    assert line.startswith("channels.1.label: ")
    assert reason in line


@pytest.mark.parametrize(
    "label",
    [
        'He said "hi"',
        "it's",
        "DROP TABLE x; --",
        "select",
        "Δz (Å)",
        "Tunnel Current 2",
        "a/b",
        "🧪 probe",
    ],
)
def test_unusual_labels_are_accepted_and_selectable(label: str) -> None:
    cfg = MonitorConfig(channels=[ch("Bias"), ch(label, "signal")], signals=[label])
    assert [c.label for c in cfg.selected_channels()] == ["Bias", label]


@pytest.mark.parametrize(
    ("spec", "where"),
    [
        ({"label": "X", "source": "nodot", "kind": "spec"}, "source"),
        ({"label": "X", "source": "stm.", "kind": "spec"}, "source"),
        ({"label": "X", "source": "stm.x", "kind": "knob"}, "kind"),
        ({"label": "X", "source": "stm.x", "kind": "spec", "interval_s": 0}, "interval_s"),
        ({"label": "X", "source": "stm.x", "kind": "spec", "interval_s": math.nan}, "interval_s"),
        ({"label": "X", "source": "stm.x", "kind": "spec", "tolerance_abs": -1}, "tolerance_abs"),
        ({"label": "X", "source": "stm.x", "kind": "spec", "tolerance_rel": -1}, "tolerance_rel"),
        ({"label": "X", "source": "stm.x", "kind": "signal", "tolerance_abs": 1e-3}, "specs only"),
        ({"label": "X", "source": "stm.x", "kind": "spec", "group": "a b"}, "group"),
        ({"label": "X", "source": "stm.x", "kind": "spec", "colour": "red"}, "colour"),
    ],
)
def test_bad_channel_specs_are_refused(spec: dict[str, Any], where: str) -> None:
    line = refusal(channels=[spec])
    assert line.startswith("channels.0")
    assert where in line


def test_unknown_option_is_refused() -> None:
    line = refusal(intervall_s=0.2)
    assert line.startswith("intervall_s: ")


def test_several_errors_fold_into_one_line() -> None:
    line = refusal(interval_s="fast", rotate_entries="many")
    assert line.count("; ") == 1
    assert line.startswith("interval_s: ")
    assert "rotate_entries: " in line


def test_configs_are_immutable_and_updates_are_validated() -> None:
    cfg = MonitorConfig()
    with pytest.raises(ValidationError):
        cfg.interval_s = 0.0  # type: ignore[misc]
    assert cfg.interval_s == 0.1
    with pytest.raises(ValidationError) as info:
        cfg.updated(interval_s=0.0)
    line = format_validation_error(info.value)
    assert "\n" not in line
    assert "interval_s" in line
    assert cfg.interval_s == 0.1
    assert cfg.updated(interval_s=0.5).interval_s == 0.5


def test_refusal_message_is_readable() -> None:
    """The pydantic prefix is removed; the message says what to do."""
    assert refusal(interval_s=0) == "interval_s must be a finite number > 0, got 0.0"


# --------------------------------------------------------------------------------------------
# Selection and intervals
# --------------------------------------------------------------------------------------------


def test_selected_channels_default_to_all() -> None:
    assert MonitorConfig().selected_channels() == list(DEFAULT_CHANNELS)


def test_selected_channels_narrow_each_kind_independently() -> None:
    cfg = MonitorConfig(signals=["Tunnel Current"])
    labels = [c.label for c in cfg.selected_channels()]
    assert labels == ["Tunnel Current"] + [c.label for c in DEFAULT_CHANNELS if c.kind == "spec"]

    cfg = MonitorConfig(specs=["Scan Frame Width", "Bias"], signals=[])
    # Configured order, not selection order.
    assert [c.label for c in cfg.selected_channels()] == ["Bias", "Scan Frame Width"]


def test_group_interval_precedence() -> None:
    own = ch("Own", interval_s=1.5, group="own-specs")
    spec = ch("Spec")
    signal = ch("Signal", "signal")
    signal_own = ch("Signal Own", "signal", interval_s=0.01, group="fast")
    channels = [own, spec, signal, signal_own]

    cfg = MonitorConfig(channels=channels, interval_s=0.2)
    assert [cfg.group_interval(c) for c in channels] == [1.5, 0.2, 0.2, 0.01]

    cfg = MonitorConfig(channels=channels, interval_s=0.2, spec_interval_s=0.5)
    assert [cfg.group_interval(c) for c in channels] == [1.5, 0.5, 0.2, 0.01]

    cfg = MonitorConfig(channels=channels, interval_s=0.2, signal_interval_s=0.05)
    assert [cfg.group_interval(c) for c in channels] == [1.5, 0.2, 0.05, 0.01]

    cfg = MonitorConfig(channels=channels, spec_interval_s=0.5, signal_interval_s=0.05)
    assert [cfg.group_interval(c) for c in channels] == [1.5, 0.5, 0.05, 0.01]


def test_a_groups_interval_may_be_on_any_of_its_entries() -> None:
    """Entries without interval_s take their group's, wherever the entry carrying it is."""
    for first, second in [({}, {"interval_s": 1.0}), ({"interval_s": 1.0}, {})]:
        a = ch("a", "signal", group="temps", **first)
        b = ch("b", "signal", group="temps", **second)
        cfg = MonitorConfig(channels=[a, b])
        assert [cfg.group_interval(c) for c in (a, b)] == [1.0, 1.0]


def test_two_intervals_in_one_group_are_refused_naming_both_channels() -> None:
    line = refusal(
        channels=[
            ch("a", "signal", group="temps", interval_s=0.5),
            ch("b", "signal", group="temps"),
            ch("c", "signal", group="temps", interval_s=1.0),
        ]
    )
    assert "channels 'a' and 'c'" in line and "two intervals (0.5 s and 1.0 s)" in line
    same = [
        ch("a", "signal", group="t", interval_s=0.5),
        ch("b", "signal", group="t", interval_s=0.5),
    ]
    assert MonitorConfig(channels=same).group_interval(same[1]) == 0.5


class _Param:
    unit = "K"
    vals = None
    gettable = True

    def get(self) -> float:
        return 4.2


class _Instrument:
    def __init__(self, *names: str) -> None:
        self.parameters = {name: _Param() for name in names}
        self.submodules: dict[str, Any] = {}


def test_deselecting_the_entry_with_the_interval_keeps_the_groups_schedule() -> None:
    """The docs' temperatures: selecting only Shield Temperature must still poll at 1 s."""
    channels = [
        ChannelSpec(
            label="Sample Temperature", source="ls.a", kind="signal", group="temps", interval_s=1.0
        ),
        ChannelSpec(label="Shield Temperature", source="ls.b", kind="signal", group="temps"),
    ]
    cfg = MonitorConfig(channels=channels, signals=["Shield Temperature"])
    (group,) = build_groups(cfg, {"ls": _Instrument("a", "b")})
    assert [c.label for c in group.channels] == ["Shield Temperature"]
    assert group.interval_s == 1.0


def test_groups_differing_only_in_case_are_refused() -> None:
    """Group names become SQLite table names, which compare case-insensitively."""
    line = refusal(channels=[ch("a", "signal", group="temps"), ch("b", "signal", group="Temps")])
    assert "'Temps'" in line and "'temps'" in line and "only in case" in line
    # Labels are columns: two differing only in case are refused too (in any group).
    assert "duplicate" in refusal(channels=[ch("Gap", group="g"), ch("gap", group="g")])


def test_mixed_kinds_in_one_group_are_refused() -> None:
    line = refusal(channels=[ch("a", "signal", group="g"), ch("b", "spec", group="g")])
    assert "channels 'a' and 'b'" in line and "mixes signals and specs" in line


@pytest.mark.parametrize(
    ("fields", "where"),
    [
        ({"rotate_entries": 2**63}, "rotate_entries"),
        ({"rotate_entries": 2**53 + 1}, "rotate_entries"),
        ({"interval_s": 1e-19}, "interval_s"),
        ({"interval_s": 1e-300}, "interval_s"),
        ({"spec_interval_s": 1e-7}, "spec_interval_s"),
        ({"signal_interval_s": 1e5}, "signal_interval_s"),
        ({"read_timeout_s": 1e12}, "read_timeout_s"),
        ({"commit_interval_s": 1e9}, "commit_interval_s"),
        ({"heartbeat_s": 1e9}, "heartbeat_s"),
        ({"stale_after_s": 1e9}, "stale_after_s"),
        ({"commit_rows": 2**63}, "commit_rows"),
        ({"queue_size": 2**63}, "queue_size"),
        (
            {"channels": [{"label": "X", "source": "s.x", "kind": "spec", "interval_s": 1e-19}]},
            "interval_s",
        ),
    ],
)
def test_values_that_would_overflow_later_are_refused(fields: dict[str, Any], where: str) -> None:
    """Finite and > 0 is not enough: these crashed with OverflowError after the run existed."""
    assert where in refusal(**fields)


def test_the_bounds_themselves_are_accepted() -> None:
    cfg = MonitorConfig(
        interval_s=1e-6,
        spec_interval_s=86400.0,
        rotate_entries=2**53,
        read_timeout_s=86400.0,
        commit_rows=2**53,
        queue_size=2**53,
    )
    assert cfg.interval_s == 1e-6 and cfg.rotate_entries == 2**53


def test_group_names() -> None:
    assert ch("A").group_name == "specs"
    assert ch("B", "signal").group_name == "signals"
    assert ch("C", group="fast-specs.1").group_name == "fast-specs.1"
