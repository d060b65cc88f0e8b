"""Session 18's own review fixes: small faults left over from earlier reviews."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

import pytest
from test_review_plotdemo import _plot, one_action  # noqa: F401  (a fixture)
from test_review_readbig import NFC, NFD, record_sim

from trajmon.cli.actions_cmd import print_actions
from trajmon.config import ConfigError
from trajmon.resume import load_resume_config


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


def test_resume_finds_a_run_named_in_another_unicode_form_or_case(tmp_path: Path) -> None:
    """``trajmon run --resume`` looked the name up exactly, while every other command finds a
    run up to Unicode form and case: ``Café run`` typed with ``e`` + accent could be shown but
    not resumed. The resumed config carries the stored name (its tables are named by it)."""
    db = tmp_path / "r.db"
    record_sim(db, NFC, 1)
    record_sim(db, "run-a", 2)
    with closing(sqlite3.connect(db)) as conn, conn:
        conn.execute("UPDATE runs SET status = 'interrupted'")
    for given in (NFD, "CAFÉ RUN", f" {NFD} "):
        assert load_resume_config(db, given).run_name == NFC
    with pytest.raises(ConfigError, match=r"^cannot resume: unknown run 'run-' \(runs whose"):
        load_resume_config(db, "run-")
    record_sim(db, NFD, 3)  # twins up to form: refused, not guessed
    with closing(sqlite3.connect(db)) as conn, conn:
        conn.execute("UPDATE runs SET status = 'interrupted'")
    with pytest.raises(ConfigError, match="is ambiguous"):
        load_resume_config(db, "CAFÉ RUN")
    assert load_resume_config(db, NFD).run_name == NFD


@pytest.mark.parametrize("content", [b"", b"plain text"])
def test_resume_into_a_file_that_is_no_trajmon_database_says_so(
    tmp_path: Path, content: bytes
) -> None:
    """An empty file (``sqlite3 x.db`` typed by hand, or ``touch``) was "cannot read x.db: no
    such table: runs"; another program's file is refused as SQLite refuses it."""
    db = tmp_path / "x.db"
    db.write_bytes(content)
    with pytest.raises(ConfigError, match=r"^cannot resume 'a': ") as caught:
        load_resume_config(db, "a")
    if not content:
        assert str(caught.value) == f"cannot resume 'a': {db} is not a trajmon database"
    assert db.read_bytes() == content
