"""Plots of an action's signal window, rendered headless.

Figures are built with :class:`matplotlib.figure.Figure` on an explicit Agg canvas instead of
through ``pyplot``: no global backend is selected, no GUI toolkit is imported, nothing needs a
display, and a program that imports trajmon keeps whatever backend it chose.
"""

from __future__ import annotations

import bisect
import errno
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from .files import replacing

__all__ = ["DRAWABLE_MAX", "plot_action_window", "plottable"]


#: Largest magnitude drawn: matplotlib's autoscaling adds margins to the data limits, which
#: overflows near the largest float (a RuntimeWarning, then no axis or a ValueError).
DRAWABLE_MAX = 1e300

#: Longest run name, label or value in the title and axis labels: a 200-character name would
#: run off the figure; the start is what tells one from another.
_TEXT_MAX = 40


def plottable(value: Any) -> float | None:
    """A number to draw for ``value``: floats and ints as is, booleans as 0/1, else nothing.
    An integer too large for a float is an infinity (not drawable either)."""
    if isinstance(value, bool | np.bool_):
        return float(value)
    if isinstance(value, int | float | np.integer | np.floating):
        try:
            return float(value)
        except OverflowError:
            return math.inf if value > 0 else -math.inf
    return None


def _short(text: str, limit: int = _TEXT_MAX) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, np.ndarray):
        return np.array2string(value, precision=4, threshold=6)
    return _short(str(value), _TEXT_MAX // 2)


def _drawn(values: list[Any]) -> tuple[list[float], int]:
    """The values as y coordinates, NaN where nothing is drawn: a gap (no value, or not a
    number), NaN itself, and infinities or magnitudes beyond :data:`DRAWABLE_MAX`, counted."""
    ys: list[float] = []
    hidden = 0
    for y in map(plottable, values):
        if y is None or math.isnan(y):
            ys.append(math.nan)  # a gap stays a gap
        elif abs(y) > DRAWABLE_MAX:
            ys.append(math.nan)
            hidden += 1
        else:
            ys.append(y)
    return ys, hidden


def _breaks(xs: list[float], gaps: list[dict[str, float]]) -> list[int]:
    """Positions after which the line must stop: the window's ``gaps`` as
    :func:`windows.window_columns` found them (the outage of a resumed run, missed ticks), each
    starting at one of the window's samples."""
    return [bisect.bisect_left(xs, gap["from_s"]) for gap in gaps]


def _broken(xs: list[float], ys: list[float], breaks: list[int]) -> tuple[list[float], list[float]]:
    """``xs``/``ys`` with a NaN point in every gap, so the line stops there instead of drawing
    values across a stretch in which nothing was recorded."""
    if not breaks:
        return xs, ys
    bx, by, start = [], [], 0
    for i in breaks:
        bx += [*xs[start : i + 1], (xs[i] + xs[i + 1]) / 2]
        by += [*ys[start : i + 1], math.nan]
        start = i + 1
    return bx + xs[start:], by + ys[start:]


def plot_action_window(
    action: dict[str, Any],
    groups: list[dict[str, Any]],
    out: Path,
    *,
    run_name: str,
    spec_unit: str = "",
    dpi: int = 110,
) -> int:
    """Draw every numeric signal channel of ``groups`` (from :func:`windows.window_columns`)
    against ``dt_s``, one axis per channel, with the action instant marked; returns the axes
    count."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import EngFormatter

    series: list[tuple[str, str, list[float], list[float], int]] = []
    for g in groups:
        xs = [float(t) for t in g["dt_s"]]
        breaks = _breaks(xs, g.get("gaps", []))
        for ch in g["channels"]:
            ys, hidden = _drawn(g["columns"].get(ch["label"], [None] * len(xs)))
            if any(not math.isnan(y) for y in ys) or not ys or hidden:
                series.append((ch["label"], ch["unit"], *_broken(xs, ys, breaks), hidden))
    n = max(len(series), 1)
    fig = Figure(figsize=(9, 1.2 + 2.0 * n), dpi=dpi, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(n, 1, sharex=True, squeeze=False)[:, 0]
    t = float(action["dt_s"])
    prev = action.get("prev_dt_s")
    for ax in axes:
        ax.axvline(t, color="tab:red", linewidth=1.2, label="change seen")
        if prev is not None and prev < t:
            ax.axvspan(prev, t, color="tab:red", alpha=0.12, label="changed between samples")
        ax.set_xlim(action["window_start_s"], action["window_end_s"])
        ax.grid(True, alpha=0.3)
    if not series:
        axes[0].text(
            0.5, 0.5, "no signal samples in this window", ha="center", transform=axes[0].transAxes
        )
    for ax, (label, unit, xs, ys, hidden) in zip(axes, series, strict=False):
        ax.plot(xs, ys, linewidth=0.9, marker="." if len(xs) < 200 else None, markersize=3)
        # Names and units are data: "$" in them is a dollar, not matplotlib's math mode.
        label = _short(label, 30)
        ax.set_ylabel(f"{label} [{unit}]" if unit else label, parse_math=False)
        if hidden:
            ax.text(
                0.01,
                0.95,
                f"{hidden} value(s) not drawn: infinite or beyond ±{DRAWABLE_MAX:g}",
                va="top",
                fontsize="small",
                transform=ax.transAxes,
                parse_math=False,
            )
        if unit:  # 200 pA rather than 2e-10 with an offset label
            ax.yaxis.set_major_formatter(EngFormatter(unit=unit.replace("$", r"\$")))
    axes[0].legend(loc="upper right", fontsize="small")
    axes[-1].set_xlabel("dt_s [s] (since run start)")
    unit = f" {spec_unit}" if spec_unit else ""
    fig.suptitle(
        f"run {_short(run_name)!r} · action {action['action_idx']} at {t:.3f} s\n"
        f"{_short(action['spec_label'])}: {_fmt(action['old_value'])}{unit}"
        f" → {_fmt(action['new_value'])}{unit}",
        parse_math=False,
    )
    _save(fig, out)
    return len(series)


def _save(fig: Any, out: Path) -> None:
    """Save into ``<out>.partial`` and rename: a failed save (a full disk) leaves no half-written
    image under the name asked for, and no earlier image is lost to it."""
    for parent in out.parents:  # mkdir would say "File exists" about a file on the way
        if parent.exists():
            if not parent.is_dir():
                raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(parent))
            break
    out.parent.mkdir(parents=True, exist_ok=True)
    with replacing(out, out.with_name(out.name + ".partial")) as partial:
        fig.savefig(partial, format=out.suffix.removeprefix(".").lower())
