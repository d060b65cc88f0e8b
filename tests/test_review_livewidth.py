"""The live view at the sizes and with the contents a real lab has: narrow and short windows,
six poll groups of ten channels, long labels, huge integers, instrument text with control
characters, CJK text. Frames are laid out at the window's width as the terminal shows them."""

from __future__ import annotations

import re
from io import StringIO
from types import SimpleNamespace
from typing import Any

import pytest
from rich.console import Console
from test_live import group_view

from trajmon.live import LiveSnapshot, RateMeter, render_live, snapshot_of
from trajmon.records import ActionEvent, GroupStats

T0 = 1000.0  # the run's start on its clock
NOW = T0 + 1234.5


def lines_of(snap: LiveSnapshot, cols: int, rows: int | None) -> list[str]:
    """The frame for a ``cols`` x ``rows`` window, as the lines the terminal shows."""
    snap.width, snap.max_lines = cols, rows
    console = Console(file=StringIO(), width=cols, color_system=None)
    rendered = console.render_lines(render_live(snap), console.options, pad=False)
    return ["".join(segment.text for segment in line).rstrip() for line in rendered]


def action(idx: int, label: str, old: Any, new: Any) -> ActionEvent:
    return ActionEvent(idx, 1.0 + idx, 10 + idx, 0.9 + idx, "t", label, 70, old, new, 0.1, 0, 3)


def six_groups() -> Any:
    """What the view reads of a recorder with 60 channels in 6 groups, 1234.5 s into its
    run; the last group's read has been in flight for 4.5 s, after a failed one."""
    stats, groups = [], []
    for g in range(6):
        st = GroupStats(g, f"grp{g}", 0.1, samples_read=12345, samples_committed=12340)
        st.last_dt_s = 1234.4
        st.last_values = [0.125] * 10
        stats.append(st)
        channels = [SimpleNamespace(label=f"chan {g}-{i}", unit="V") for i in range(10)]
        groups.append(SimpleNamespace(kind="signal", channels=channels))
    hung = stats[5]
    hung.reading_since, hung.last_dt_s, hung.failed_reads = T0 + 1230.0, 1229.9, 7
    hung.last_error = (1229.9, "chan 5-3", "ConnectionError", "connection reset by peer")
    return SimpleNamespace(
        t0_mono=T0,
        stats=stats,
        groups=groups,
        recent_actions=[action(i, "Bias", 0.1, 0.2) for i in range(5)],
        config=SimpleNamespace(run_name="many", queue_size=20000),
        queue_depth=3,
        detector_actions=5,
        stop_requested=False,
    )


@pytest.mark.parametrize("cols", [80, 60, 40])
def test_a_short_window_keeps_a_hung_and_failing_group_in_sight(cols: int) -> None:
    """Six groups in a 15-line window: the header and the rates took more lines than there
    were, rich cut the view with a bare "...", and what went first were the lines that say a
    read has hung and why reads fail (at 40 columns, the failing group's rates too) — while
    the rates of five healthy groups stayed."""
    snap = snapshot_of(six_groups(), RateMeter(), NOW)
    lines = lines_of(snap, cols, 15)
    text = "\n".join(lines)
    assert len(lines) <= 15, text
    assert lines[-2].startswith("grp5: read in flight for 4.5 s"), text
    assert lines[-1].startswith("grp5: failing at 1229.9 s on chan 5-3"), text
    (more,) = [line for line in lines if line.startswith("… ")]
    hidden = int(more.split()[1])
    shown = [g for g in range(6) if f"grp{g} (signal)" in text]
    assert shown == list(range(6 - hidden)), text
    assert "44 missed, 7 failed" in more, "the hidden groups' troubles are counted"
    assert "queue 3/20000" in text.replace("\n", " "), text


def test_groups_that_fit_are_all_shown_with_their_problem_lines() -> None:
    snap = snapshot_of(six_groups(), RateMeter(), NOW)
    text = "\n".join(lines_of(snap, 120, 24))
    assert all(f"grp{g} (signal)" in text for g in range(6)), text
    assert "more group" not in text and "grp5: read in flight" in text


REALISTIC = [
    ("Tunnel Current", "A", 1.04924e-10),
    ("Z Position", "m", -6.44e-10),
    ("Scan Frame", "", "scanning up, line 117/256"),
    ("Lock-in Amplitude", "V/√Hz", 3.2e-9),
]


@pytest.mark.parametrize("cols", [40, 50, 60])
def test_a_narrow_window_keeps_the_channel_labels(cols: int) -> None:
    """At 40 and 50 columns the label column was the only one that could shrink: every
    label was cut to nothing (values without names), and at 60 to four characters while a
    long group name kept its 20 columns."""
    group = group_view(REALISTIC, name="scan_parameters_fast")
    lines = lines_of(LiveSnapshot("r", 1.0, 0, 100, 0, [group], []), cols, None)
    for label, _unit, value in REALISTIC:
        (row,) = [line for line in lines if line.startswith(label[:6])] or ["\n".join(lines)]
        assert row.startswith(label[:6]), row
        if isinstance(value, float):
            assert f"{value:.6g}" in row, row


def test_a_huge_integer_is_not_cut_into_another_number() -> None:
    """10**40 was cut at 24 characters: "10000000000000000000000…", which reads as 1e22."""
    group = group_view([("Counter", "", 10**40), ("Word", "", 2**63 - 1), ("Big", "", -(10**400))])
    snap = LiveSnapshot("r", 1.0, 0, 100, 1, [group], [action(0, "Counter", 10**39, 10**40)])
    text = "\n".join(lines_of(snap, 100, None))
    rows = {line.split()[0]: line.split() for line in lines_of(snap, 100, None) if line.split()}
    assert rows["Counter"][1] == "1.00000e+40" and rows["Word"][1] == str(2**63 - 1)
    assert rows["Big"][1] == "-1.00000e+400"
    assert "1.00000e+39 → 1.00000e+40" in text, text


def test_instrument_text_cannot_write_control_sequences_to_the_terminal() -> None:
    """A text value or an error message with an escape sequence in it was written to the
    terminal as is: ``\\x1b[2J`` cleared the screen at every redraw."""
    group = group_view([("Status", "", "\x1b[2Jidle\x07")], failed_reads=1, last_dt_s=2.0)
    group.last_error = (2.0, "Status", "NanonisError", "bad reply \x1b[31mERR\x1b[0m")
    text = "\n".join(lines_of(LiveSnapshot("r", 3.0, 0, 100, 0, [group], []), 120, None))
    assert "\x1b" not in text and "\x07" not in text
    assert "\\x1b[2Jidle\\x07" in text and "bad reply \\x1b[31mERR\\x1b[0m" in text, text


def test_a_narrow_window_cuts_the_spec_label_not_the_new_value() -> None:
    """At 40 columns the label and the change shrank alike: "1.04924e-10 → …" hid the new
    value. At 80, a long CJK text (24 characters, 48 columns) left "#" and "dt_s" one
    column wide ("1…" for 1.00)."""
    acts = [action(12, "Z Controller Setpoint", 1.04924e-10, 2.5e-10)]
    narrow = "\n".join(lines_of(LiveSnapshot("r", 1.0, 0, 100, 1, [], acts), 40, None))
    assert "12  13.00  Z Con" in narrow and "1.04924e-10 → 2.5e-10" in narrow, narrow
    text = "長い値" * 10
    acts = [action(7, "電流 トンネル", text, "idle")]
    wide = lines_of(LiveSnapshot("r", 1.0, 0, 100, 1, [], acts), 80, None)
    (row,) = [line for line in wide if line.startswith("7 ")]
    assert row.split()[:2] == ["7", "8.00"] and "→ idle" in row, "\n".join(wide)
    assert max(len(line) + len(re.findall(r"[\u3000-\u9fff]", line)) for line in wide) <= 80


class Counted:
    """A value that counts how often the view formats it."""

    calls = 0

    def __repr__(self) -> str:
        Counted.calls += 1
        return "counted"


def test_a_frame_too_tall_does_not_lay_out_every_channel() -> None:
    """600 channels in a 24-line window: each redraw laid out all 600 rows to find that they
    do not fit (70 ms a frame with 60, on the event loop the recording runs on), then the
    ten that do."""
    group = group_view([(f"ch {i}", "V", Counted()) for i in range(600)])
    Counted.calls = 0
    lines = lines_of(LiveSnapshot("r", 1.0, 0, 100, 0, [group], []), 100, 24)
    assert lines[-1].startswith("… "), lines
    assert Counted.calls <= 3 * 24, Counted.calls
