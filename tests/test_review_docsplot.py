"""``actions plot`` on windows whose values cannot all be drawn: every read of a channel failed,
no sample at all, only text channels. The figure must say what is missing and why — an
outage drawn as "no samples" sends the operator looking for a recorder fault."""

from __future__ import annotations

import sqlite3
import warnings
from contextlib import closing
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from matplotlib.figure import Figure
from test_operator_cli import plot_action

from trajmon import plotting
from trajmon.plotting import plot_action_window


def _group(dts: list[float], columns: dict[str, list[Any]]) -> dict[str, Any]:
    """A :func:`windows.window_columns` group with these samples."""
    return {
        "dt_s": dts,
        "channels": [{"label": label, "unit": "A"} for label in columns],
        "columns": columns,
        "gaps": [],
    }


def _plot(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, groups: list[dict[str, Any]]
) -> tuple[int, Figure]:
    figures: list[Figure] = []
    monkeypatch.setattr(plotting, "_save", lambda fig, out: figures.append(fig))
    drawn = plot_action_window(plot_action(), groups, tmp_path / "p.png", run_name="r")
    (fig,) = figures
    return drawn, fig


def _texts(fig: Figure) -> list[str]:
    return [t.get_text() for ax in fig.axes for t in ax.texts]


def test_a_channel_whose_reads_all_failed_keeps_its_axis_and_says_why(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A window in which every read of one channel failed (the instrument was gone) drew no
    axis for that channel and said nothing; when it was the only channel, the figure said
    "no signal samples in this window" although the window had its samples."""
    groups = [_group([0.0, 0.5, 1.0], {"I": [1e-10, 2e-10, 3e-10], "Broken": [None] * 3})]
    drawn, fig = _plot(monkeypatch, tmp_path, groups)
    assert drawn == 2
    assert [ax.get_ylabel() for ax in fig.axes] == ["I [A]", "Broken [A]"]
    assert fig.axes[1].texts[0].get_text() == "none of 3 sample(s) drawn: 3 failed read(s)"
    assert len(fig.axes[0].texts) == 0  # the healthy channel needs no note

    only = [_group([0.0, 0.5], {"Broken": [None, None]})]
    drawn, fig = _plot(monkeypatch, tmp_path, only)
    assert drawn == 1 and fig.axes[0].get_ylabel() == "Broken [A]"
    assert _texts(fig) == ["none of 2 sample(s) drawn: 2 failed read(s)"]


def test_an_all_nan_channel_says_its_values_were_nan(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """NaN read back (a float channel reading NaN) is a value, not a failed read: the note
    keeps the two apart."""
    groups = [_group([0.0, 0.5, 1.0], {"I": [float("nan"), None, np.float32("nan")]})]
    drawn, fig = _plot(monkeypatch, tmp_path, groups)
    assert drawn == 1
    assert _texts(fig) == ["none of 3 sample(s) drawn: 1 failed read(s), 2 NaN"]


def test_a_window_without_samples_says_so_on_every_axis(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """No sample in the window (an action in a slow signal group's first interval): empty
    axes with made-up ticks and not a word."""
    groups = [_group([], {"I": [], "Z": []})]
    drawn, fig = _plot(monkeypatch, tmp_path, groups)
    assert drawn == 2
    assert _texts(fig) == ["no samples in this window"] * 2


def test_a_window_of_only_text_channels_does_not_claim_there_were_no_samples(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Text and array channels are not drawn (documented); the figure said "no signal samples
    in this window" although it had them."""
    text = _group([0.0, 1.0], {"Mode": ["scan", "idle"], "Trace": [np.arange(3.0)] * 2})
    drawn, fig = _plot(monkeypatch, tmp_path, [text])
    assert drawn == 0
    assert _texts(fig) == ["2 signal channel(s), none numeric"]
    drawn, fig = _plot(monkeypatch, tmp_path, [])
    assert drawn == 0 and _texts(fig) == ["no signal channels"]


def test_values_beyond_the_drawable_range_are_still_counted(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The note for infinities (kept from before) beside a drawn line, with failed reads and a
    bool and int mixed in: only the infinities are counted, the rest are drawn or gaps."""
    groups = [_group([0.0, 0.5, 1.0, 1.5], {"I": [float("inf"), None, True, 3]})]
    drawn, fig = _plot(monkeypatch, tmp_path, groups)
    assert drawn == 1
    assert _texts(fig) == [f"1 value(s) not drawn: infinite or beyond ±{plotting.DRAWABLE_MAX:g}"]
    line = fig.axes[0].get_lines()[-1]  # after the action marker
    assert np.array_equal(line.get_ydata(), [np.nan, np.nan, 1.0, 3.0], equal_nan=True)


def _plot_labelled(tmp_path: Path, label: str) -> list[warnings.WarningMessage]:
    groups = [_group([0.0, 1.0], {label: [1e-10, 2e-10]})]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        plot_action_window(plot_action(), groups, tmp_path / "p.png", run_name="运行 1")
    return caught


def test_characters_no_font_has_give_one_warning_naming_them(tmp_path: Path) -> None:
    """matplotlib warned once per character its font lacks ("Glyph 36816 … missing from
    font(s) DejaVu Sans"): a Chinese run name and label printed a screenful on stderr."""
    caught = _plot_labelled(tmp_path, "电流")
    assert [w.category for w in caught] == [plotting.MissingGlyphsWarning]
    assert str(caught[0].message).startswith(
        "4 character(s) are in no installed font and are drawn as boxes (电 流 运 行)"
    )


def test_installed_fallback_fonts_draw_what_the_default_font_lacks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Characters DejaVu Sans lacks are drawn with an installed fallback font. STIX (shipped
    with matplotlib) stands in for a CJK font here: it has the script capital A."""
    assert [str(w.message)[:16] for w in _plot_labelled(tmp_path, "𝒜")] == ["3 character(s) a"]
    monkeypatch.setattr(plotting, "FALLBACK_FONTS", ("No Such Font", "STIXGeneral"))
    assert [str(w.message)[:16] for w in _plot_labelled(tmp_path, "𝒜")] == ["2 character(s) a"]


def test_actions_plot_prints_missing_characters_as_one_note(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from trajmon.cli import actions_cmd, app

    def plot(*args: Any, **kwargs: Any) -> int:
        note = "2 character(s) are in no … (运 行)"
        warnings.warn(plotting.MissingGlyphsWarning(note), stacklevel=2)
        return 1

    monkeypatch.setattr(plotting, "plot_action_window", plot)
    monkeypatch.setattr(actions_cmd, "get_action", lambda *a: plot_action())
    monkeypatch.setattr(actions_cmd, "window_columns", lambda *a: [])
    monkeypatch.setattr(actions_cmd, "resolve_run", lambda conn, run: SimpleNamespace(
        run_id=1, run_name="r"))  # fmt: skip
    db = tmp_path / "t.db"
    from trajmon.schema import migrate

    with closing(sqlite3.connect(db)) as conn:
        migrate(conn)
    result = CliRunner().invoke(app, ["actions", "plot", "0", "--db", str(db), "-o", "x.png"])
    assert result.exit_code == 0, result.output
    assert "note: 2 character(s) are in no … (运 行)" in result.output
