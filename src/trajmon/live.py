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
import numpy as np
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.measure import Measurement
from rich.segment import Segment, Segments
from rich.table import Table
from rich.text import Text

from .live_rows import problem_lines
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


def _fmt(value: Any) -> str:
    """A latest value in one short line. Values are as the driver returned them, not yet
    converted for storage: numpy scalars show as the number they hold (not ``np.float32(0.1)``),
    arrays as their elements; text keeps one line (a newline would break the row)."""
    if value is None:
        return "—"
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        return f"{value:.6g}" if math.isfinite(value) else str(value)
    if isinstance(value, np.ndarray):
        text = np.array2string(value, precision=4, threshold=6, separator=", ")
    else:
        text = value if isinstance(value, str) else repr(value)
    text = " ".join(text.split()) if not text.isprintable() else text
    return text if len(text) <= 24 else text[:23] + "…"


def _one_line(label: str) -> Text:
    """A label that is cut rather than wrapped, so that each row is one line and the values
    beside it keep their width (the label column is the one that shrinks)."""
    return Text(label, no_wrap=True, overflow="ellipsis")


def _ms(seconds: float | None) -> str:
    return "—" if seconds is None else f"{seconds * 1000:.2f}"


def render_live(snap: LiveSnapshot) -> RenderableType:
    """The whole view as one renderable; a pure function of the snapshot. Heights are
    measured at ``width``, not assumed: at 80 columns a rate row takes two lines, and a view
    taller than the terminal is cut by rich with a bare ``...`` (the "… N more" line too)."""
    state = "stopping: draining the queue…" if snap.stopping else "recording (Ctrl-C to stop)"
    header = Text.assemble(
        ("trajmon ", "bold"),
        (f"run {snap.run_name!r}", "bold cyan"),
        f"  t={snap.elapsed_s:8.1f} s  queue {snap.queue_depth}/{snap.queue_size}",
        f"  actions {snap.actions}  ",
        (state, "yellow" if snap.stopping else "green"),
        no_wrap=False,  # wrapped, never cut: "queue 1/20000" cut at 40 columns read "queue 1/2"
        overflow="fold",
    )
    measure = None if snap.max_lines is None and snap.width is None else _measurer(snap.width)
    rates: list[RenderableType] = [_rates_table(snap)]
    if measure is not None and snap.width is not None:
        widest = Measurement.get(measure, measure.options.update_width(10_000), rates[0]).maximum
        if widest > snap.width:  # columns would be squeezed until numbers are cut ("21/…")
            rates = _rates_lines(snap, snap.width)
    fixed: list[RenderableType] = [header, *rates, *problem_lines(snap.groups)]
    if measure is None or snap.max_lines is None:
        return Group(*fixed, *_actions_part(snap.recent_actions), *_values(snap, None))
    whole = [*fixed, *_actions_part(snap.recent_actions), *_values(snap, None)]
    lines = measure.render_lines(Group(*whole), measure.options, pad=False)
    if len(lines) <= snap.max_lines:  # the usual frame: everything fits, laid out once
        return Segments([seg for line in lines for seg in (*line, Segment.line())])
    # Within the height, the channel values go first: a terminal too small for all of them
    # loses values (one line says how many), then the oldest actions, never the rates. Rows
    # that cannot fit are not rendered at all (rendering sixty rows to show ten cost the
    # pollers CPU at every redraw).
    room = snap.max_lines - _height(measure, fixed)
    channels = sum(len(g.latest) for g in snap.groups)
    need = 1 if channels else 0  # at least the line that counts the channels not shown
    recent = snap.recent_actions
    actions = _actions_part(recent)
    keep = len(recent)
    while keep and _height(measure, actions) > room - need:
        keep -= 1  # the oldest go first; the header still counts them all
        actions = _actions_part(recent[len(recent) - keep :]) if keep else []
    if not recent and room - 1 < need:
        actions = []  # "no actions yet" gives way (the header says "actions 0")
    left = room - _height(measure, actions)
    values = _values(snap, left)
    over = _height(measure, values) - left  # a header that wrapped, say
    if over > 0:
        values = _values(snap, left - over)
    return Group(*fixed, *actions, *values)


def _rates_table(snap: LiveSnapshot) -> Table:
    rates = Table(box=None, pad_edge=False, header_style="bold")
    for col in ("group", "target Hz", "achieved Hz", "missed", "failed", "read ms mean/max"):
        rates.add_column(col, justify="left" if col == "group" else "right")
    rates.add_column("committed/read", justify="right")
    for g in snap.groups:
        cells = _rate_cells(snap, g)
        rates.add_row(f"{g.name} ({g.kind})", *(cells[key] for key in _RATE_KEYS))
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


def _rates_lines(snap: LiveSnapshot, width: int) -> list[RenderableType]:
    """The rates of a terminal too narrow for their table: per group, its figures as
    ``name value`` pairs flowed onto as many lines as they need, none cut or split."""
    out: list[RenderableType] = []
    for g in snap.groups:
        cells = _rate_cells(snap, g)
        achieved = cells["achieved"].copy()
        achieved.append(f" of {cells['target']} Hz")
        pairs = [Text(f"{g.name} ({g.kind})", style="bold"), achieved]
        for name, key in (("missed", "missed"), ("failed", "failed")):
            pairs.append(Text.assemble(f"{name} ", cells[key]))
        pairs.append(Text(f"read mean/max {cells['read'].plain.replace(' ', '')} ms"))
        pairs.append(Text.assemble("committed/read ", cells["committed"]))
        line = Text(no_wrap=False, overflow="fold")
        used = 0
        for pair in pairs:
            if used and used + 2 + pair.cell_len > width:
                out.append(line)
                line, used = Text("  ", no_wrap=False, overflow="fold"), 2
            elif used:
                line.append("  ")
                used += 2
            line.append_text(pair)
            used += pair.cell_len
        out.append(line)
    return out


def _actions_part(recent: list[ActionEvent]) -> list[RenderableType]:
    if not recent:
        return [Text("no actions yet", style="dim", no_wrap=True, overflow="ellipsis")]
    acts = Table(box=None, pad_edge=False, header_style="bold", title_justify="left")
    for col in ("#", "dt_s", "spec", "old → new"):
        acts.add_column(col, justify="right" if col in ("#", "dt_s") else "left")
    for a in recent:
        acts.add_row(
            str(a.action_idx),
            f"{a.dt_s:.2f}",
            _one_line(a.spec_label),
            Text(f"{_fmt(a.old_value)} → {_fmt(a.new_value)}", no_wrap=True),
        )
    return [Text("last actions", style="bold", no_wrap=True), acts]


def _measurer(width: int | None) -> Console:
    """A console that only measures: the view's lines at the terminal's width."""
    return Console(  # no markup or emoji codes: labels, units and group names are data
        file=io.StringIO(), width=width or 10_000, color_system=None, markup=False, emoji=False
    )


def _height(console: Console, parts: list[RenderableType]) -> int:
    return 0 if not parts else len(console.render_lines(Group(*parts), console.options, pad=False))


def _values(snap: LiveSnapshot, room: int | None) -> list[RenderableType]:
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
    values = Table(box=None, pad_edge=False, header_style="bold")
    values.add_column("channel")
    values.add_column("latest", justify="right", no_wrap=True)
    values.add_column("unit", no_wrap=True)
    values.add_column("group", no_wrap=True)
    for label, unit, value, group in shown:
        values.add_row(_one_line(label), _fmt(value), unit, group)
    return [values, *more]


def _more(hidden: int, below_others: bool) -> Text:
    """The line in place of channels that do not fit: one line, its count never cut."""
    return Text(
        f"… {hidden} {'more channels' if below_others else 'channels not shown'}"
        " (enlarge the window)",
        style="dim",
        no_wrap=True,
        overflow="ellipsis",
    )


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
