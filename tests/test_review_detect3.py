"""Action events as the operator reads them: two values that differ must never be written alike
(a float32 read-back, a trailing space, an element in the middle of a long array), a swapped
``--since``/``--until`` is a usage error rather than an empty list, and a list that takes
seconds to draw says so before it starts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from matplotlib.figure import Figure
from test_operator_cli import plot_action
from test_review_actions import Knobs, _config, _record, _set, knobs, two_actions  # noqa: F401
from typer.testing import CliRunner

from trajmon import FakeClock, Recorder, detection, plotting
from trajmon.cli import actions_cmd, app
from trajmon.cli.actions_cmd import print_actions
from trajmon.plotting import plot_action_window

runner = CliRunner()

#: What a Nanonis controller answers for a bias set to 0.1 V: the float32 nearest to it.
FLOAT32_TENTH = float(np.float32(0.1))


def _cells(out: str, idx: int) -> list[str]:
    """The cells of row ``idx`` of a printed action table."""
    for line in out.splitlines():
        cells = [c.strip() for c in line.split("│")[1:-1]]
        if cells and cells[0] == str(idx):
            return cells
    raise AssertionError(f"no row {idx} in:\n{out}")


def _action(idx: int, old: Any, new: Any) -> dict[str, Any]:
    return {
        "action_idx": idx,
        "dt_s": 1.0,
        "spec_label": "Setting",
        "old_value": old,
        "new_value": new,
        "delta": None,
        "window_start_s": 0.0,
        "window_end_s": 2.0,
    }


def _twenty(at: int | None = None) -> np.ndarray:
    values = np.zeros(20)
    if at is not None:
        values[at] = 1.0
    return values


WRITTEN_ALIKE = [
    pytest.param("idle", "idle ", ("'idle'", "'idle '"), id="trailing-space"),
    pytest.param("a b", "a\u00a0b", ("'a b'", "'a\\xa0b'"), id="no-break-space"),
    pytest.param(1, 1.0000001, ("1", "1.0000001"), id="int-then-float"),
    pytest.param(
        _twenty(),
        _twenty(10),
        ("[0. 0. 0. ... 0. 0. 0.] [10]=0.0", "[0. 0. 0. ... 0. 0. 0.] [10]=1.0"),
        id="array-middle",
    ),
    pytest.param(
        np.array([1.0, 2.0]),
        np.array([1.0, 2.00001]),
        ("[1. 2.] [1]=2.0", "[1. 2.] [1]=2.00001"),
        id="array-digits",
    ),
    pytest.param(
        np.zeros(20),
        np.zeros(21),
        ("[0. 0. 0. ... 0. 0. 0.] shape (20,)", "[0. 0. 0. ... 0. 0. 0.] shape (21,)"),
        id="array-length",
    ),
]


@pytest.mark.parametrize(("old", "new", "shown"), WRITTEN_ALIKE)
def test_an_action_list_never_writes_old_and_new_alike(
    capsys: pytest.CaptureFixture[str], old: Any, new: Any, shown: tuple[str, str]
) -> None:
    """Six digits, an array printed by its ends, a table that shows no trailing space: each
    made a real action read ``idle → idle`` or ``[0. 0. ... 0.] → [0. 0. ... 0.]``, a change
    that changed nothing. Only ``0.1 → 0.1`` of floats was told apart."""
    print_actions([_action(0, old, new), _action(1, 0.25, 0.5)], "t")
    out = capsys.readouterr().out
    assert tuple(_cells(out, 0)[3:5]) == shown
    assert _cells(out, 1)[3:5] == ["0.25", "0.5"]  # written apart already: as before


def test_values_written_apart_or_equal_keep_their_short_form() -> None:
    shown_apart = detection.shown_apart
    assert shown_apart(0.1, 0.25, str) == ("0.1", "0.25")
    assert shown_apart(_twenty(), _twenty(), str) == (str(_twenty()),) * 2
    assert shown_apart(np.array(0.1), np.array(FLOAT32_TENTH), lambda v: "x") == (
        "0.1",
        repr(FLOAT32_TENTH),
    )
    nan_alike = np.array([np.nan, 0.0]), np.array([np.nan, 1e-9])
    assert shown_apart(*nan_alike, lambda v: "x")[1] == "x [1]=1e-09"  # NaN equals NaN


async def test_an_untyped_spec_read_with_a_trailing_space_lists_both_values_apart(
    db_path: Path,
    knobs: Knobs,  # noqa: F811
) -> None:
    """End to end: a driver that pads its answer (``"idle"``, then ``"idle "``) is an action,
    and ``actions list`` printed it as ``idle → idle``."""
    knobs.setting = "idle"
    clock = FakeClock()
    recorder = Recorder(_config(db_path), {"knobs": knobs}, clock=clock)
    await _record(recorder, clock, [_set(knobs, "idle "), _set(knobs, 1), _set(knobs, 1.0000001)])
    result = runner.invoke(app, ["actions", "list", "--db", str(db_path)])
    assert result.exit_code == 0, result.output
    assert _cells(result.stdout, 0)[3:5] == ["'idle'", "'idle '"]
    assert _cells(result.stdout, 2)[3:5] == ["1", "1.0000001"]


def _title(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, old: Any, new: Any) -> str:
    figures: list[Figure] = []
    monkeypatch.setattr(plotting, "_save", lambda fig, out: figures.append(fig))
    action = plot_action(old_value=old, new_value=new)
    plot_action_window(action, [], tmp_path / "p.png", run_name="r", spec_unit="V")
    (fig,) = figures
    assert fig._suptitle is not None
    return str(fig._suptitle.get_text())


@pytest.mark.parametrize(
    ("old", "new", "line"),
    [
        (0.1, FLOAT32_TENTH, f"Bias: 0.1 V → {FLOAT32_TENTH!r} V"),
        ("idle", "idle ", "Bias: 'idle' V → 'idle ' V"),
        (0.1, 0.25, "Bias: 0.1 V → 0.25 V"),
    ],
)
def test_a_plot_title_never_writes_old_and_new_alike(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, old: Any, new: Any, line: str
) -> None:
    """A bias set to 0.1 V reads back as its float32, 0.10000000149: the figure was titled
    ``Bias: 0.1 V → 0.1 V``, the one thing it is about shown as no change."""
    assert _title(monkeypatch, tmp_path, old, new).splitlines()[1] == line


def test_a_since_after_the_until_is_refused(tmp_path: Path) -> None:
    """Swapped bounds gave ``actions of run 'x' (0)``: read as "nothing was touched"."""
    db = str(tmp_path / "never.db")
    result = runner.invoke(app, ["actions", "list", "--db", db, "--since", "30", "--until", "20"])
    assert result.exit_code == 2, result.output
    said = "trajmon: error: --since 30 is after --until 20: no time lies between them"
    assert result.stderr.strip() == said
    close = ["--since", "2.0000001", "--until", "2"]  # not "--since 2 is after --until 2"
    result = runner.invoke(app, ["actions", "list", "--db", db, *close])
    assert result.exit_code == 2, result.output
    assert "--since 2.0000001 is after --until 2.0: " in result.stderr


def test_a_since_equal_to_the_until_is_one_instant(two_actions: Path) -> None:  # noqa: F811
    listed = runner.invoke(app, ["actions", "list", "--db", str(two_actions), "--json"])
    at = repr(json.loads(listed.stdout)["actions"][0]["dt_s"])
    result = runner.invoke(
        app, ["actions", "list", "--db", str(two_actions), "--since", at, "--until", at]
    )
    assert result.exit_code == 0, result.output
    assert _cells(result.stdout, 0)[0] == "0"


def test_a_long_list_says_first_that_it_takes_a_while(
    two_actions: Path,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A night's 50 000 actions drew for 25 s before the first line appeared, with no word."""
    db = str(two_actions)
    quiet = runner.invoke(app, ["actions", "list", "--db", db])
    assert quiet.exit_code == 0 and quiet.stderr == ""
    monkeypatch.setattr(actions_cmd, "LONG_LIST", 1)
    noted = runner.invoke(app, ["actions", "list", "--db", db])
    assert noted.exit_code == 0, noted.output
    assert noted.stderr.startswith("note: 2 actions; the table takes a while to draw")
    assert "--last N" in noted.stderr and noted.stdout == quiet.stdout
    as_json = runner.invoke(app, ["actions", "list", "--db", db, "--json"])
    assert as_json.exit_code == 0 and as_json.stderr == ""
