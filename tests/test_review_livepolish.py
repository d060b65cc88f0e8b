"""What the operator sees while a run records and right after it ends, in the windows a lab
has (40 to 60 columns beside a microscope's software): the live view's header, labels beside
long text values, enum values, markup in instrument data, and the summary printed at the end."""

from __future__ import annotations

import enum
import re
import shlex
from io import StringIO
from typing import Any

import pytest
from rich.console import Console
from test_live import group_view
from test_review_livewidth import REALISTIC, action, lines_of

from trajmon.cli import common, run_cmd
from trajmon.live import LiveSnapshot, render_live
from trajmon.summary import GroupSummary, RunSummary


class Mode(enum.Enum):
    CONSTANT_CURRENT = 1
    CONSTANT_HEIGHT = 2


class Loop(enum.IntEnum):
    OPEN = 0
    CLOSED = 1


def test_an_enum_value_shows_by_its_name() -> None:
    """A QCoDeS ``val_mapping`` key or a driver's mode that is an Enum showed as its repr,
    ``<Mode.CONSTANT_CURRENT: 1>`` — 25 columns, cut to "<Mode.CONSTANT_CURRENT:…" in the
    values and, in the last actions, both sides of the change cut."""
    group = group_view([("Mode", "", Mode.CONSTANT_HEIGHT), ("Z Loop", "", Loop.CLOSED)])
    acts = [action(3, "Mode", Mode.CONSTANT_CURRENT, Mode.CONSTANT_HEIGHT)]
    text = "\n".join(lines_of(LiveSnapshot("r", 1.0, 0, 100, 1, [group], acts), 100, None))
    assert "<" not in text, text
    assert "CONSTANT_CURRENT → CONSTANT_HEIGHT" in text, text
    rows = {line.split()[0]: line for line in text.splitlines() if line.split()}
    assert "CONSTANT_HEIGHT" in rows["Mode"], text
    assert "CLOSED (1)" in text, "an IntEnum is stored as its number: shown with it"


@pytest.mark.parametrize("cols", [40, 44])
def test_a_long_text_value_does_not_cut_the_labels_at_40_columns(cols: int) -> None:
    """A 24-column text value took the room of the labels: at 40 columns every label was cut
    to six characters ("Tunnel…", "Lock-i…") beside "scanning up, line 117/2…"."""
    group = group_view([*REALISTIC, ("Scan Direction", "", "scanning down and back up")])
    lines = lines_of(LiveSnapshot("r", 1.0, 0, 100, 0, [group], []), cols, None)
    text = "\n".join(lines)
    for label in ("Tunnel Current", "Z Position", "Scan Frame", "Scan Direction"):
        (row,) = [line for line in lines if line.startswith(label[:6])] or [text]
        assert row.startswith(label + " "), text
    assert any(line.startswith("Lock-in Ampl") for line in lines), text
    for _label, _unit, value in REALISTIC:
        if isinstance(value, float):
            assert f"{value:.6g}" in text, "numbers are never cut"
    assert "scanning" in text and max(map(len, lines)) <= cols, text


def test_a_number_is_not_cut_to_make_room_for_labels() -> None:
    """Only text gives way: a 19-digit counter and a complex value stay whole at 40 columns."""
    group = group_view(
        [("A rather long label", "", 2**63 - 1), ("Impedance", "Ω", complex(1.25e-3, -2.5e-4))]
    )
    text = "\n".join(lines_of(LiveSnapshot("r", 1.0, 0, 100, 0, [group], []), 40, None))
    assert str(2**63 - 1) in text and repr(complex(1.25e-3, -2.5e-4)) in text, text


@pytest.mark.parametrize("cols", [40, 50])
def test_the_header_wraps_between_its_figures_not_inside_them(cols: int) -> None:
    """Wrapped by the letter, the header ended a line with "t=" and began the next with the
    time: at 40 columns "trajmon run 'my long run name'  t=" / "1234.5 s  queue …"."""
    snap = LiveSnapshot("my long run name", 1234.5, 3, 20000, 12, [], [])
    lines = lines_of(snap, cols, None)
    head = lines[: next(i for i, line in enumerate(lines) if "recording" in line) + 1]
    assert len(head) <= 3, lines
    for figure in ("trajmon run 'my long run name'", "t=1234.5 s", "queue 3/20000", "actions 12"):
        assert any(figure in line for line in head), (figure, head)
    assert any("recording (Ctrl-C to stop)" in line for line in head), head
    assert all(len(line) <= cols for line in head), head


def test_the_header_keeps_its_steady_single_line_when_it_fits() -> None:
    lines = lines_of(LiveSnapshot("r", 12.5, 3, 20000, 1, [], []), 100, None)
    assert lines[0].startswith("trajmon run 'r'  t=    12.5 s  queue 3/20000  actions 1  rec")


@pytest.mark.parametrize("cols", [40, 140])
def test_instrument_text_that_looks_like_markup_is_shown_as_it_is(cols: int) -> None:
    """The view's cells were plain strings, read as rich markup by a console that reads it
    (a library caller's ``Console()``, ``run_live_view``'s argument): a text value ``[/]``
    crashed the view with MarkupError, ``[bold]`` vanished, ``:smile:`` became an emoji."""
    group = group_view(
        [("Status", "[V]", "[bold]idle"), ("Reply", "[/]", "[/]"), ("Tag", "", ":smile:")],
        name="[b]grp",
    )
    snap = LiveSnapshot("r", 1.0, 0, 100, 1, [group], [action(1, "[i]Mode", "[/]", "[x]")])
    snap.width = cols
    console = Console(file=StringIO(), width=cols, record=True, color_system=None)
    console.print(render_live(snap))  # markup and emoji codes read, as Console() does
    text = console.export_text()
    for shown in ("[bold]idle", "[V]", "[/]", ":smile:", "[b]grp", "[i]Mode", "[/] → [x]"):
        assert shown in text, (shown, text)


def summary(status: str = "interrupted", **changes: Any) -> RunSummary:
    groups = [
        GroupSummary("signals", "signal", 0.1, 12345, 12346, 3, 0, 0.00152),
        GroupSummary("specs", "spec", 0.5, 2469, 2469, 0, 7, 0.0026),
    ]
    fields: dict[str, Any] = {"groups": groups, "actions": 6, "errors": 2, "lost_samples": 1}
    return RunSummary("sim text", 1, "/data/stm runs/x.db", status, 1234.5, **fields | changes)


def summary_lines(
    monkeypatch: pytest.MonkeyPatch, run: RunSummary, cols: int, terminal: bool = True
) -> list[str]:
    """What ``trajmon run`` prints at its end on a ``cols``-column terminal (or a pipe)."""
    out = StringIO()
    term = Console(
        file=out,
        width=cols,
        force_terminal=terminal,
        color_system=None,
        highlight=False,
        soft_wrap=True,
        markup=False,
        emoji=False,
    )
    monkeypatch.setattr(common, "console", term)
    monkeypatch.setattr(run_cmd, "console", term)
    run_cmd.print_summary(run)
    return [line.rstrip() for line in out.getvalue().splitlines()]


@pytest.mark.parametrize("cols", [40, 50, 60])
def test_the_summary_fits_a_narrow_terminal(monkeypatch: pytest.MonkeyPatch, cols: int) -> None:
    """At 50 to 60 columns the bordered summary table folded its headers one letter a line
    ("m/i/s/s/e/d/ /t/i/c/k/s", ten lines tall) and wrapped "mean read" values in two."""
    lines = summary_lines(monkeypatch, summary(), cols)
    text = "\n".join(lines)
    assert lines[0] == "run 'sim text': interrupted after 1234.5 s", text
    assert len(lines) <= 10, text
    figures = lines[1:-1]  # the head (a long name wraps) and the command (one line to paste)
    assert all(len(line) <= cols for line in figures), text
    flat = " ".join(text.split())
    for figure in (
        "signals (signal)",
        "interval 0.1 s",
        "samples 12345",
        "missed 3",
        "failed 7",
        "mean read 1.52 ms",
        "mean read 2.60 ms",
        "actions 6 errors 2 lost samples 1",
    ):
        assert figure in flat, (figure, text)


@pytest.mark.parametrize("terminal", [True, False])
def test_a_wide_terminal_or_a_pipe_gets_the_summary_table(
    monkeypatch: pytest.MonkeyPatch, terminal: bool
) -> None:
    """Worded as ``trajmon status`` words a run's groups ("missed", "failed")."""
    lines = summary_lines(monkeypatch, summary(), 40 if not terminal else 100, terminal)
    assert lines[1].split() == ["group", "interval", "samples", "missed", "failed", "mean", "read"]
    assert lines[2].split() == ["signals", "(signal)", "0.1", "s", "12345", "3", "0", "1.52", "ms"]


def test_the_summary_says_where_the_run_is_and_how_to_list_its_actions(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The summary named the database in the middle of a counts line and said nothing of
    what to do next; a run name or a path with a space must survive being pasted."""
    lines = summary_lines(monkeypatch, summary(), 100)
    assert "database /data/stm runs/x.db" in lines
    (hint,) = [line for line in lines if line.startswith("see the actions: ")]
    argv = shlex.split(hint.removeprefix("see the actions: "))
    assert argv == [
        "trajmon",
        "actions",
        "list",
        "--db",
        "/data/stm runs/x.db",
        "--run",
        "sim text",
    ]
    quiet = summary_lines(monkeypatch, summary(actions=0), 100)
    assert not [line for line in quiet if "actions list" in line], "no actions: nothing to list"


def test_a_failed_run_says_so_first_and_keeps_its_note(monkeypatch: pytest.MonkeyPatch) -> None:
    lines = summary_lines(monkeypatch, summary("failed", message="database or disk is full"), 50)
    assert lines[0] == "run 'sim text': failed after 1234.5 s"
    assert lines[-1] == "note: database or disk is full"


def test_a_group_without_reads_says_no_reads_on_a_narrow_terminal(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    empty = summary(groups=[GroupSummary("signals", "signal", 0.1, 0, 0, 0, 0, float("nan"))])
    text = "\n".join(summary_lines(monkeypatch, empty, 40))
    assert "mean read no reads" in " ".join(text.split()) and "nan" not in text, text
    assert not re.search(r"\bnan\b", text)
