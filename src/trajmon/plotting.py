"""Plots of an action's signal window, rendered headless.

Figures are built with :class:`matplotlib.figure.Figure` on an explicit Agg canvas instead of
through ``pyplot``: no global backend is selected, no GUI toolkit is imported, nothing needs a
display, and a program that imports trajmon keeps whatever backend it chose.
"""

from __future__ import annotations

import errno
import math
import os
import re
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from .detection import shown_apart
from .files import replacing

__all__ = ["DRAWABLE_MAX", "MissingGlyphsWarning", "plot_action_window", "plottable"]


#: Largest magnitude drawn: matplotlib's autoscaling adds margins to the data limits, which
#: overflows near the largest float (a RuntimeWarning, then no axis or a ValueError).
DRAWABLE_MAX = 1e300

#: Fonts tried, in this order, for characters matplotlib's own font (DejaVu Sans) does not have
#: — Chinese, Japanese or Korean names and labels, emoji — where installed: those of common
#: Linux distributions, Windows and macOS.
FALLBACK_FONTS = (
    "Noto Sans CJK JP",
    "Noto Sans CJK SC",
    "Source Han Sans",
    "WenQuanYi Zen Hei",
    "Droid Sans Fallback",
    "Microsoft YaHei",
    "Yu Gothic",
    "Malgun Gothic",
    "Hiragino Sans",
    "PingFang SC",
    "Apple SD Gothic Neo",
    "Noto Color Emoji",
    "Segoe UI Emoji",
    "Apple Color Emoji",
)

_MISSING_GLYPH = re.compile(r"Glyph (\d+) .*missing from font")


class MissingGlyphsWarning(UserWarning):
    """Characters of the figure's text that no installed font has: drawn as empty boxes. One
    warning for the figure, naming them, instead of matplotlib's one per character."""


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


def _drawn(values: list[Any]) -> tuple[np.ndarray, dict[str, int]]:
    """The values as y coordinates, NaN where nothing is drawn, and how many were not drawn,
    by reason: a failed read (no value), NaN, an infinity or a magnitude beyond
    :data:`DRAWABLE_MAX`, a value that is not a number. A column of floats and failed reads (a
    float channel: nearly always) is converted in one numpy call — a window can hold millions."""
    if set(map(type, values)) <= {float, type(None)}:
        ys = np.array(values, dtype=np.float64)  # None becomes NaN
        failed = values.count(None)
        not_numbers = 0
    else:
        numbers = [plottable(v) for v in values]
        failed = sum(v is None for v in values)  # not count(): == on an array is an array
        not_numbers = sum(y is None for y in numbers) - failed
        ys = np.array([math.nan if y is None else y for y in numbers], dtype=np.float64)
    nans = int(np.isnan(ys).sum()) - failed - not_numbers
    with np.errstate(invalid="ignore"):
        beyond = np.abs(ys) > DRAWABLE_MAX
    ys[beyond] = math.nan
    counts = {
        "failed read(s)": failed,
        "NaN": nans,
        f"infinite or beyond ±{DRAWABLE_MAX:g}": int(beyond.sum()),
        "not a number": not_numbers,
    }
    return ys, counts


def _note(ys: np.ndarray, counts: dict[str, int]) -> str:
    """What an axis says about the values it does not show: a channel whose window holds no
    value to draw gets an empty axis that says why (an instrument outage is not an absence of
    samples), and values too large to draw are counted."""
    if not ys.size:
        return "no samples in this window"
    if np.isnan(ys).all():
        why = ", ".join(f"{n} {reason}" for reason, n in counts.items() if n)
        return f"none of {ys.size} sample(s) drawn: {why}"
    hidden = counts[f"infinite or beyond ±{DRAWABLE_MAX:g}"]
    return f"{hidden} value(s) not drawn: infinite or beyond ±{DRAWABLE_MAX:g}" if hidden else ""


def _breaks(xs: np.ndarray, gaps: list[dict[str, float]]) -> np.ndarray:
    """Positions after which the line must stop: the window's ``gaps`` as
    :func:`windows.window_columns` found them (the outage of a resumed run, missed ticks), each
    starting at one of the window's samples."""
    at = np.searchsorted(xs, [gap["from_s"] for gap in gaps]).astype(np.intp)
    return at[at < xs.size - 1]  # each is followed by a sample


def _broken(xs: np.ndarray, ys: np.ndarray, breaks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``xs``/``ys`` with a NaN point in every gap, so the line stops there instead of drawing
    values across a stretch in which nothing was recorded."""
    if not breaks.size:
        return xs, ys
    middle = (xs[breaks] + xs[breaks + 1]) / 2
    return np.insert(xs, breaks + 1, middle), np.insert(ys, breaks + 1, math.nan)


@contextmanager
def _fonts() -> Iterator[None]:
    """The installed :data:`FALLBACK_FONTS` behind the configured font, and matplotlib's
    missing-glyph warnings gathered into one."""
    import matplotlib
    from matplotlib import font_manager

    installed = {f.name for f in font_manager.fontManager.ttflist}
    family = [*matplotlib.rcParams["font.family"], *(f for f in FALLBACK_FONTS if f in installed)]
    missing: dict[str, None] = {}
    with (
        warnings.catch_warnings(record=True) as caught,
        matplotlib.rc_context({"font.family": family}),
    ):
        warnings.simplefilter("always")
        yield
    for w in caught:
        glyph = _MISSING_GLYPH.match(str(w.message))
        if glyph is not None:
            missing[chr(int(glyph[1]))] = None
        else:  # not ours to swallow
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno, source=w.source)
    if missing:
        shown = " ".join(list(missing)[:10]) + (" …" if len(missing) > 10 else "")
        warnings.warn(
            MissingGlyphsWarning(
                f"{len(missing)} character(s) are in no installed font and are drawn as boxes"
                f" ({shown}); install a font that has them (e.g. Noto Sans CJK)"
            ),
            stacklevel=3,
        )


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
    count. Characters no installed font has give one :class:`MissingGlyphsWarning`."""
    with _fonts():
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
        from matplotlib.ticker import EngFormatter

        series: list[tuple[str, str, np.ndarray, np.ndarray, str]] = []
        skipped = 0
        for g in groups:
            xs = np.asarray(g["dt_s"], dtype=np.float64)
            breaks = _breaks(xs, g.get("gaps", []))
            for ch in g["channels"]:
                ys, counts = _drawn(g["columns"].get(ch["label"], [None] * len(xs)))
                if counts["not a number"] and np.isnan(ys).all():  # a text or array channel
                    skipped += 1
                    continue
                series.append(
                    (ch["label"], ch["unit"], *_broken(xs, ys, breaks), _note(ys, counts))
                )
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
            empty = (
                f"{skipped} signal channel(s), none numeric" if skipped else "no signal channels"
            )
            axes[0].text(0.5, 0.5, empty, ha="center", transform=axes[0].transAxes)
        for ax, (label, unit, xs, ys, note) in zip(axes, series, strict=False):
            ax.plot(xs, ys, linewidth=0.9, marker="." if len(xs) < 200 else None, markersize=3)
            # Names and units are data: "$" in them is a dollar, not matplotlib's math mode.
            label = _short(label, 30)
            ax.set_ylabel(f"{label} [{unit}]" if unit else label, parse_math=False)
            if note:
                ax.text(
                    0.01,
                    0.95,
                    note,
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
        old, new = shown_apart(action["old_value"], action["new_value"], _fmt)
        fig.suptitle(
            f"run {_short(run_name)!r} · action {action['action_idx']} at {t:.3f} s\n"
            f"{_short(action['spec_label'])}: {_short(old)}{unit} → {_short(new)}{unit}",
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
    partial = out.with_name(out.name + ".partial")
    try:
        with replacing(out, partial):
            fig.savefig(partial, format=out.suffix.removeprefix(".").lower())
    except OSError as exc:  # the file the caller asked for, not the temporary one, is named
        if exc.errno is None or str(exc.filename) != str(partial):
            raise
        raise OSError(exc.errno, exc.strerror, str(out)) from exc
