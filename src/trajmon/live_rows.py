"""The live view's rows: what is wrong with a group, one line each; the latest value of each
channel; a value as one short line.

Apart from :mod:`trajmon.live` only to keep that module within its size; both render plain
values of a :class:`~trajmon.live.LiveSnapshot`.
"""

from __future__ import annotations

import math
from decimal import Decimal
from enum import Enum
from typing import TYPE_CHECKING, Any

import numpy as np
from rich.cells import cell_len, set_cell_size
from rich.console import RenderableType
from rich.table import Table
from rich.text import Text

if TYPE_CHECKING:
    from .live import GroupView, LiveSnapshot
    from .records import ActionEvent

__all__ = ["actions_part", "flowed", "one_line", "one_value", "problem_lines", "values_part"]

#: The most a value takes in the view, in characters.
_VALUE_CHARS = 24
#: In a narrow window, text values are cut down to this before labels are cut below
#: :data:`_LABEL_KEEP` (a label cut to "Tunnel…" beside "scanning up, line 117/2…").
_VALUE_LEAST = 12
_LABEL_KEEP = 16


def one_value(value: Any) -> str:
    """A latest value in one short line. Values are as the driver returned them, not yet
    converted for storage: numpy scalars show as the number they hold (not ``np.float32(0.1)``),
    arrays as their elements; text keeps one line (a newline would break the row). An integer
    too long to show whole is shown in scientific notation: cut, 10**40 read as 1e22."""
    if value is None:
        return "—"
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, Enum):
        return _cut(_printable(_member(value)), _VALUE_CHARS)
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        return f"{value:.6g}" if math.isfinite(value) else str(value)
    if isinstance(value, int) and len(str(value)) > _VALUE_CHARS:
        return f"{Decimal(value):.6g}"  # exact: a float would overflow past 1e308
    if isinstance(value, np.ndarray):
        text = np.array2string(value, precision=4, threshold=6, separator=", ")
    else:
        text = value if isinstance(value, str) else repr(value)
    return _cut(_printable(text), _VALUE_CHARS)


def _member(value: Enum) -> str:
    """An enum member (a QCoDeS ``val_mapping`` key, a driver's mode) by its name: its repr,
    ``<Mode.CONSTANT_CURRENT: 1>``, took the value's 24 columns to be cut. A member that is a
    number (``IntEnum``) is stored, listed and exported as that number: it is shown too."""
    name = value.name or str(value)  # a combination of flags may have no name
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{name} ({int(value)})"
    return name


def _cut(text: str, cells: int) -> str:
    """``text`` in at most ``cells`` columns, ending in "…" when cut. Cut by the cells it
    takes: 24 characters of CJK text took 48 columns."""
    if cell_len(text) <= cells:
        return text
    return set_cell_size(text, max(cells - 1, 0)).rstrip() + "…"


def _whole(value: Any) -> bool:
    """A value never cut to make room: a number cut short reads as another number."""
    if isinstance(value, np.generic):
        value = value.item()
    return value is None or (
        isinstance(value, int | float | complex) and not isinstance(value, Enum)
    )


def _printable(text: str) -> str:
    """``text`` on one line, control characters escaped: an instrument's text (or error) with
    an escape sequence in it was written to the terminal as is — it recoloured the screen and
    moved the columns after it."""
    if text.isprintable():
        return text
    kept = (c if c.isprintable() or c.isspace() else repr(c)[1:-1] for c in text)
    return " ".join("".join(kept).split())


def flowed(parts: list[Text], width: int, indent: str = "  ") -> list[Text]:
    """``parts`` two spaces apart on as many lines of ``width`` as they need, each next line
    after ``indent``; a part is moved whole to the next line, never split (a part wider than
    the line alone is folded)."""
    lines: list[Text] = []
    line = Text(no_wrap=False, overflow="fold")
    used = 0
    for part in parts:
        if used and used + 2 + part.cell_len > width:
            lines.append(line)
            line, used = Text(indent, no_wrap=False, overflow="fold"), len(indent)
        elif used:
            line.append("  ")
            used += 2
        line.append_text(part)
        used += part.cell_len
    return [*lines, line]


def one_line(label: str) -> Text:
    """A label that is cut rather than wrapped, so that each row is one line and the values
    beside it keep their width (the label column is the one that shrinks)."""
    return Text(label, no_wrap=True, overflow="ellipsis")


def problem_lines(groups: list[GroupView]) -> list[Text]:
    """A stalled group's stall, then its latest failed read: the figures in the table alone
    do not say that a read has hung, nor why the values went blank."""
    return [*_stall_lines(groups), *_error_lines(groups)]


def _stall_lines(groups: list[GroupView]) -> list[Text]:
    """A group with no read begun for longer than its interval allows, in red: a read hung in
    the driver counts nothing until it returns, and the rest of the row looks healthy."""
    return [
        Text(f"{g.name}: {g.stall.describe()}", "bold red", no_wrap=True, overflow="ellipsis")
        for g in groups
        if g.stall is not None
    ]


def _error_lines(groups: list[GroupView]) -> list[Text]:
    """A group's latest failed read, one line each. Red while the group's latest sample is
    that failure, dim after."""
    lines = []
    for g in groups:
        if g.last_error is None:
            continue
        dt_s, channel, kind, message = g.last_error
        failing = g.last_dt_s == dt_s
        text = f"{g.name}: {'failing' if failing else 'last error'} at {dt_s:.1f} s"
        text += f" on {channel}: {kind}: {' '.join(_printable(message).split())}"
        lines.append(Text(text, "red" if failing else "dim", no_wrap=True, overflow="ellipsis"))
    return lines


def actions_part(recent: list[ActionEvent], width: int | None) -> list[RenderableType]:
    """The last actions, one line each. In a window too narrow for them, the spec labels are
    cut, never the numbers: all columns shrank alike, and at 40 columns a change read
    "1.04924e-10 → …" (its new value cut away), at 80 a CJK text value left "#" and "dt_s"
    one character wide. Only a change too long even then is cut."""
    if not recent:
        return [Text("no actions yet", style="dim", no_wrap=True, overflow="ellipsis")]
    rows = [(str(a.action_idx), f"{a.dt_s:.2f}", a.spec_label, _change(a)) for a in recent]
    heads = ("#", "dt_s", "spec", "old → new")
    natural = [max(cell_len(h), *(cell_len(r[i]) for r in rows)) for i, h in enumerate(heads)]
    spec_w = change_w = None
    if width is not None:
        room = width - natural[0] - natural[1] - 2 * 3  # less the gaps between the columns
        if natural[2] + natural[3] > room:
            change_w = min(natural[3], max(room - min(natural[2], 6), 1))
            spec_w = max(room - change_w, 1)
    acts = Table(box=None, pad_edge=False, header_style="bold")
    acts.add_column("#", justify="right", no_wrap=True)
    acts.add_column("dt_s", justify="right", no_wrap=True)
    acts.add_column("spec", width=spec_w)
    acts.add_column("old → new", width=change_w)
    for idx, dt_s, label, change in rows:
        acts.add_row(idx, dt_s, one_line(label), one_line(change))
    return [Text("last actions", style="bold", no_wrap=True), acts]


def _change(action: ActionEvent) -> str:
    return f"{one_value(action.old_value)} → {one_value(action.new_value)}"


def values_part(snap: LiveSnapshot, room: int | None) -> list[RenderableType]:
    """Latest value of each channel in at most ``room`` lines (None: all), header included;
    the last line then says how many channels are not shown."""
    rows = [(label, unit, value, g.name) for g in snap.groups for label, unit, value in g.latest]
    if room is not None and len(rows) + 1 > room:
        if room < 1 or not rows:
            return []
        shown = rows[: max(room - 2, 0)]
        more: list[RenderableType] = [_more(len(rows) - len(shown), bool(shown))]
        if not shown:
            return more
    else:
        shown, more = rows, []
    cells = [(label, one_value(value), unit, group) for label, unit, value, group in shown]
    whole = [_whole(value) for _label, _unit, value, _group in shown]
    return [_values_table(cells, whole, snap.width), *more]


def _values_table(
    cells: list[tuple[str, str, str, str]], whole: list[bool], width: int | None
) -> Table:
    """The values, each whole; in a window too narrow for them all, the group column goes
    (labels are unique in a run: the label alone names the channel), then text values are
    cut down to :data:`_VALUE_LEAST` (never a number), then labels and units are cut alike.
    Only the label column could shrink, and at 40 or 50 columns every label was cut to
    nothing while the group column kept its width; at 40 a 24-column text value still cut
    every label to six. Cells are :class:`~rich.text.Text`, never markup: a value ``[/]``
    crashed a console that reads markup, ``[b]`` vanished from a group's name."""
    heads = ("channel", "latest", "unit", "group")
    widths = [max([len(h), *(cell_len(row[i]) for row in cells)]) for i, h in enumerate(heads)]
    with_group = width is None or sum(widths) + 2 * 3 <= width
    if width is not None and not with_group:
        room = width - widths[2] - 2 * 2  # the channel and latest columns', after the unit's
        if widths[0] + widths[1] > room:
            numbers = max(
                (cell_len(c[1]) for c, w in zip(cells, whole, strict=True) if w), default=0
            )
            most = max(numbers, _VALUE_LEAST, room - min(widths[0], _LABEL_KEEP))
            cells = [
                (label, value if w else _cut(value, most), unit, group)
                for (label, value, unit, group), w in zip(cells, whole, strict=True)
            ]
    values = Table(box=None, pad_edge=False, header_style="bold")
    values.add_column("channel")
    values.add_column("latest", justify="right", no_wrap=True)
    values.add_column("unit")
    if with_group:
        values.add_column("group", no_wrap=True)
    for label, value, unit, group in cells:
        row = [one_line(label), Text(value), one_line(unit)]
        values.add_row(*row, *([Text(group)] if with_group else []))
    return values


def _more(hidden: int, below_others: bool) -> Text:
    """The line in place of channels that do not fit: one line, its count never cut."""
    return Text(
        f"… {hidden} {'more channels' if below_others else 'channels not shown'}"
        " (enlarge the window)",
        style="dim",
        no_wrap=True,
        overflow="ellipsis",
    )
