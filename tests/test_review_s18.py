"""Session 18's own review fixes: small faults left over from earlier reviews."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_review_plotdemo import _plot, one_action  # noqa: F401  (a fixture)

from trajmon.cli.actions_cmd import print_actions


@pytest.mark.parametrize("name", ["x.", "x.."])
def test_a_name_ending_in_a_dot_gets_one_png_extension(
    one_action: Path,  # noqa: F811
    tmp_path: Path,
    name: str,
) -> None:
    """``-o x.`` has no suffix to Python, so "no extension: .png" wrote ``x..png``."""
    result = _plot(one_action, tmp_path / name)
    assert result.exit_code == 0, result.output
    assert (tmp_path / "x.png").read_bytes().startswith(b"\x89PNG")
    assert not list(tmp_path.glob("x.*.png"))
    assert str(tmp_path / "x.png") in result.output


def _action(old: object, new: object, delta: float | None) -> dict[str, object]:
    return {
        "action_idx": 0,
        "dt_s": 1.0,
        "spec_label": "bias",
        "old_value": old,
        "new_value": new,
        "delta": delta,
        "window_start_s": 0.0,
        "window_end_s": 2.0,
    }


def test_a_change_six_digits_hide_is_shown_with_all_its_digits(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``0.1 → 0.1 (+1.388e-17)`` read as an action that changed nothing."""
    new = 0.1 + 1.388e-17
    assert new != 0.1
    print_actions([_action(0.1, new, new - 0.1), _action(0.25, 0.5, 0.25)], "t")
    out = capsys.readouterr().out
    assert repr(0.1) in out and repr(new) in out
    assert " 0.25 " in out and " 0.5 " in out  # others keep six digits
