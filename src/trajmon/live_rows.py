"""The live view's lines under the rate table: what is wrong with a group, one line each.

Apart from :mod:`trajmon.live` only to keep that module within its size; both render plain
values of a :class:`~trajmon.live.GroupView`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.text import Text

if TYPE_CHECKING:
    from .live import GroupView

__all__ = ["problem_lines"]


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
        text += f" on {channel}: {kind}: {' '.join(message.split())}"
        lines.append(Text(text, "red" if failing else "dim", no_wrap=True, overflow="ellipsis"))
    return lines
