"""The live terminal view of a recording: rates, latencies, queue, latest values, last actions.

The view only *reads* what the recorder already keeps up to date for other reasons — the
per-group :class:`~trajmon.records.GroupStats`, the queue depth and the bounded deque of recent
actions — so it costs the pollers nothing: no lock, no extra queue, no per-sample callback.
It redraws from a task on the event loop (``auto_refresh=False``), never from a thread of its
own, so a slow terminal delays a redraw, not a read.

Off a terminal (logs, pipes, ``--quiet``) a full-screen view is noise; the recorder's caller
falls back to one progress line every few seconds (:func:`progress_mode`).
"""

from __future__ import annotations

import io
import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import anyio
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.measure import Measurement
from rich.segment import Segment, Segments
from rich.table import Table
from rich.text import Text

from .live_rows import actions_part, flowed, problem_lines, values_part
from .records import ActionEvent
from .stalls import Stall, running_stall, skipped_in_flight

if TYPE_CHECKING:
    from .recorder import Recorder

__all__ = [
    "GroupView",
    "LiveSnapshot",
    "RateMeter",
    "progress_mode",
    "render_live",
    "run_live_view",
    "snapshot_of",
]

ProgressMode = Literal["live", "lines", "none"]


def progress_mode(*, quiet: bool, is_terminal: bool) -> ProgressMode:
    """``live`` on an interactive terminal that can redraw (not ``TERM=dumb``), one line every
    few seconds elsewhere, nothing when quiet (``--quiet``/``--json``: the output is for a
    script)."""
    if quiet:
        return "none"
    return "live" if is_terminal else "lines"


@dataclass(slots=True)
class GroupView:
    """One poll group as the view shows it; plain values, so rendering is testable alone."""

    name: str
    kind: str
    interval_s: float
    achieved_hz: float | None
    samples_read: int
    samples_committed: int
    #: Counted, plus those the read in flight skipped (counted when it returns).
    missed_ticks: int
    failed_reads: int
    read_mean_s: float | None
    read_max_s: float
    last_dt_s: float | None
    latest: list[tuple[str, str, Any]] = field(default_factory=list)  # (label, unit, value)
    last_error: tuple[float, str, str, str] | None = None  # (dt_s, channel, type, message)
    #: No read begun for longer than the interval allows (a hung read); its overdue ticks
    #: are shown as missed already: they will be counted so once the next read begins.
    stall: Stall | None = None


@dataclass(slots=True)
class LiveSnapshot:
    run_name: str
    elapsed_s: float
    queue_depth: int
    queue_size: int
    actions: int
    groups: list[GroupView]
    recent_actions: list[ActionEvent]
    stopping: bool = False
    #: Lines the view may take (the terminal's height); None: unbounded. Channel values beyond
    #: what fits are summarised in one row rather than rendered and then cropped.
    max_lines: int | None = None
    #: Columns of the terminal; None: unbounded. Rows that wrap at this width are counted as
    #: the lines they take, and a rate table wider than this is shown as wrapped lines.
    width: int | None = None


class RateMeter:
    """Achieved rate per group over a short sliding window (a few seconds of refreshes):
    responsive to stalls, yet not jumpy at 4 Hz refresh."""

    def __init__(self, window_s: float = 3.0) -> None:
        self._window_s = window_s
        self._points: dict[str, deque[tuple[float, int]]] = {}

    def update(self, name: str, now: float, count: int) -> float | None:
        points = self._points.setdefault(name, deque())
        points.append((now, count))
        while len(points) > 2 and now - points[1][0] >= self._window_s:
            points.popleft()
        (t_first, n_first) = points[0]
        if now - t_first <= 0:
            return None
        return (count - n_first) / (now - t_first)


def snapshot_of(
    recorder: Recorder,
    rates: RateMeter,
    now: float | None = None,
    last_actions: int = 5,
    max_lines: int | None = None,
    width: int | None = None,
) -> LiveSnapshot:
    """Copy what the view needs from the live recorder (cheap: a few dozen attribute reads)."""
    now = time.monotonic() if now is None else now
    t0 = recorder.t0_mono
    groups: list[GroupView] = []
    for st, group in zip(recorder.stats, recorder.groups, strict=False):
        latest: list[tuple[str, str, Any]] = []
        values = st.last_values
        for i, ch in enumerate(group.channels):
            value = values[i] if values is not None and i < len(values) else None
            latest.append((ch.label, ch.unit, value))
        groups.append(
            GroupView(
                name=st.name,
                kind=group.kind,
                interval_s=st.interval_s,
                achieved_hz=rates.update(st.name, now, st.samples_read),
                samples_read=st.samples_read,
                samples_committed=st.samples_committed,
                missed_ticks=st.missed_ticks + (0 if t0 is None else skipped_in_flight(st, t0)),
                failed_reads=st.failed_reads,
                read_mean_s=st.read_s_sum / st.samples_read if st.samples_read else None,
                read_max_s=st.read_s_max,
                last_dt_s=st.last_dt_s,
                latest=latest,
                last_error=st.last_error,
                stall=None if t0 is None else running_stall(st, t0, now, recorder.stop_requested),
            )
        )
    recent = list(recorder.recent_actions)[-last_actions:]
    return LiveSnapshot(
        run_name=recorder.config.run_name or "",
        elapsed_s=0.0 if t0 is None else max(now - t0, 0.0),
        queue_depth=recorder.queue_depth,
        queue_size=recorder.config.queue_size,
        actions=recorder.detector_actions,
        groups=groups,
        recent_actions=recent,
        stopping=recorder.stop_requested,
        max_lines=max_lines,
        width=width,
    )


def _ms(seconds: float | None) -> str:
    return "—" if seconds is None else f"{seconds * 1000:.2f}"


def render_live(snap: LiveSnapshot) -> RenderableType:
    """The whole view as one renderable; a pure function of the snapshot. Heights are
    measured at ``width``, not assumed: at 80 columns a rate row takes two lines, and a view
    taller than the terminal is cut by rich with a bare ``...`` (the "… N more" line too)."""
    header = _header(snap)
    measure = None if snap.max_lines is None and snap.width is None else _measurer(snap.width)
    narrow = False
    if measure is not None and snap.width is not None:
        table = _rates_table(snap, snap.groups)
        widest = Measurement.get(measure, measure.options.update_width(10_000), table).maximum
        narrow = widest > snap.width  # columns would be squeezed until numbers are cut ("21/…")
    problems = problem_lines(snap.groups)
    fixed = [header, *_rates_part(snap, snap.groups, narrow), *problems]
    recent = snap.recent_actions
    if measure is None or snap.max_lines is None:
        return Group(*fixed, *actions_part(recent, snap.width), *values_part(snap, None))
    channels = sum(len(g.latest) for g in snap.groups)
    # A row takes a line at least: a frame that cannot fit is not laid out whole to find out
    # (sixty channel rows, to show ten, took 70 ms a frame on the loop the pollers share).
    least = 1 + len(snap.groups) + len(problems) + (channels + 1 if channels else 0)
    if least + (len(recent) + 2 if recent else 1) <= snap.max_lines:
        whole = [*fixed, *actions_part(recent, snap.width), *values_part(snap, None)]
        lines = measure.render_lines(Group(*whole), measure.options, pad=False)
        if len(lines) <= snap.max_lines:  # the usual frame: everything fits, laid out once
            return Segments([seg for line in lines for seg in (*line, Segment.line())])
    # Within the height, the channel values go first: a terminal too small for all of them
    # loses values (one line says how many), then the oldest actions, then the rates of the
    # last groups (one line counts them), never the header nor a stall or failure.
    room = snap.max_lines - _height(measure, fixed)
    if room < 0:
        fixed = _fit_groups(snap, measure, header, problems, narrow)
        room = snap.max_lines - _height(measure, fixed)
    need = 1 if channels else 0  # at least the line that counts the channels not shown
    actions = actions_part(recent, snap.width)
    keep = len(recent)
    while keep and _height(measure, actions) > room - need:
        keep -= 1  # the oldest go first; the header still counts them all
        actions = actions_part(recent[len(recent) - keep :], snap.width) if keep else []
    if not recent and room - 1 < need:
        actions = []  # "no actions yet" gives way (the header says "actions 0")
    left = room - _height(measure, actions)
    values = values_part(snap, left)
    over = _height(measure, values) - left  # a header that wrapped, say
    if over > 0:
        values = values_part(snap, left - over)
    return Group(*fixed, *actions, *values)


def _header(snap: LiveSnapshot) -> Text:
    """One line, its time padded to keep the figures after it still; in a window too narrow
    for it, its figures flowed onto more lines, each whole. Wrapped by the letter, "t=" ended
    one line at 40 columns and its number began the next; cut, "queue 1/20000" read "1/2"."""
    state = "stopping: draining the queue…" if snap.stopping else "recording (Ctrl-C to stop)"
    name = Text.assemble(("trajmon ", "bold"), (f"run {snap.run_name!r}", "bold cyan"))
    figures = [f"queue {snap.queue_depth}/{snap.queue_size}", f"actions {snap.actions}"]
    end = Text(state, "yellow" if snap.stopping else "green")
    line = Text.assemble(
        name, f"  t={snap.elapsed_s:8.1f} s  ", "  ".join(figures), "  ", end, overflow="fold"
    )
    if snap.width is None or line.cell_len <= snap.width:
        return line
    parts = [name, Text(f"t={snap.elapsed_s:.1f} s"), *map(Text, figures), end]
    return Text("\n", overflow="fold").join(flowed(parts, snap.width, indent=""))


def _fit_groups(
    snap: LiveSnapshot, measure: Console, header: Text, problems: list[Text], narrow: bool
) -> list[RenderableType]:
    """Header, the rates of the first groups that fit, a line for the others, then every
    stall and failure: six groups in a 15-line window were cut by rich with a bare "...",
    and the lines saying which group had hung or was failing went first."""
    assert snap.max_lines is not None
    room = snap.max_lines - _height(measure, [header, *problems]) - 1  # - the line for the rest
    if not narrow:  # a table's rows are a line each (it fits the width), under its headers
        heights = [1] * len(snap.groups)
        room -= 1
    else:
        heights = [_height(measure, _rates_part(snap, [g], narrow)) for g in snap.groups]
    keep = 0
    while keep < len(heights) and heights[keep] <= room:
        room -= heights[keep]
        keep += 1
    shown, hidden = snap.groups[:keep], snap.groups[keep:]
    missed = sum(g.missed_ticks + (0 if g.stall is None else g.stall.overdue) for g in hidden)
    failed = sum(g.failed_reads for g in hidden)
    figures = f", {missed} missed, {failed} failed" if missed or failed else ""
    what = f"{'more ' if shown else ''}group{'' if len(hidden) == 1 else 's'}"
    more = Text(
        f"… {len(hidden)} {what}{'' if shown else ' not shown'}{figures} (enlarge the window)",
        style="red" if figures else "dim",
        no_wrap=True,
        overflow="ellipsis",
    )
    return [header, *_rates_part(snap, shown, narrow), more, *problems]


def _rates_part(snap: LiveSnapshot, groups: list[GroupView], narrow: bool) -> list[RenderableType]:
    if not groups:
        return []
    if narrow and snap.width is not None:
        return _rates_lines(snap, groups, snap.width)
    return [_rates_table(snap, groups)]


def _rates_table(snap: LiveSnapshot, groups: list[GroupView]) -> Table:
    rates = Table(box=None, pad_edge=False, header_style="bold")
    for col in ("group", "target Hz", "achieved Hz", "missed", "failed", "read ms mean/max"):
        rates.add_column(col, justify="left" if col == "group" else "right")
    rates.add_column("committed/read", justify="right")
    for g in groups:
        cells = _rate_cells(snap, g)
        rates.add_row(Text(f"{g.name} ({g.kind})"), *(cells[key] for key in _RATE_KEYS))
    return rates


_RATE_KEYS = ("target", "achieved", "missed", "failed", "read", "committed")


def _rate_cells(snap: LiveSnapshot, g: GroupView) -> dict[str, Text]:
    target = 1.0 / g.interval_s if g.interval_s > 0 else math.inf
    achieved = "—" if g.achieved_hz is None else f"{g.achieved_hz:.1f}"
    slow = g.achieved_hz is not None and g.achieved_hz < 0.9 * target and snap.elapsed_s > 3
    missed = g.missed_ticks + (0 if g.stall is None else g.stall.overdue)
    return {
        "target": Text(f"{target:.4g}"),
        "achieved": Text(achieved, style="red" if slow else ""),
        "missed": Text(str(missed), style="red" if missed else ""),
        "failed": Text(str(g.failed_reads), style="red" if g.failed_reads else ""),
        "read": Text(f"{_ms(g.read_mean_s)} / {_ms(g.read_max_s)}"),
        "committed": Text(f"{g.samples_committed}/{g.samples_read}"),
    }


def _rates_lines(snap: LiveSnapshot, groups: list[GroupView], width: int) -> list[RenderableType]:
    """The rates of a terminal too narrow for their table: per group, its figures as
    ``name value`` pairs flowed onto as many lines as they need, none cut or split."""
    out: list[RenderableType] = []
    for g in groups:
        cells = _rate_cells(snap, g)
        achieved = cells["achieved"].copy()
        achieved.append(f" of {cells['target']} Hz")
        pairs = [Text(f"{g.name} ({g.kind})", style="bold"), achieved]
        for name, key in (("missed", "missed"), ("failed", "failed")):
            pairs.append(Text.assemble(f"{name} ", cells[key]))
        pairs.append(Text(f"read mean/max {cells['read'].plain.replace(' ', '')} ms"))
        pairs.append(Text.assemble("committed/read ", cells["committed"]))
        out.extend(flowed(pairs, width))
    return out


def _measurer(width: int | None) -> Console:
    """A console that only measures: the view's lines at the terminal's width."""
    return Console(  # no markup or emoji codes: labels, units and group names are data
        file=io.StringIO(), width=width or 10_000, color_system=None, markup=False, emoji=False
    )


def _height(console: Console, parts: list[RenderableType]) -> int:
    return 0 if not parts else len(console.render_lines(Group(*parts), console.options, pad=False))


async def run_live_view(
    recorder: Recorder,
    console: Console,
    *,
    refresh_s: float = 0.25,
    render: Callable[[LiveSnapshot], RenderableType] = render_live,
    clock: Callable[[], float] = time.monotonic,
    on_screen: Callable[[Live], None] | None = None,
) -> None:
    """Redraw the view every ``refresh_s`` until cancelled. The view is transient: when the run
    ends it gives way to the final summary, which (unlike the last frame) is complete.
    ``on_screen`` gets the display once it shows: a note for the operator must be printed
    through it (above the view), not written to the terminal beside it."""
    await recorder.started.wait()
    rates = RateMeter()
    with Live(console=console, auto_refresh=False, transient=True) as live:
        if on_screen is not None:
            on_screen(live)
        while True:
            size = console.size
            snap = snapshot_of(recorder, rates, clock(), max_lines=size.height, width=size.width)
            live.update(render(snap), refresh=True)
            await anyio.sleep(refresh_s)
