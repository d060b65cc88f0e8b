"""The read side on odd databases and odd values: files that are not (or no longer) what a
reader expects, a window with no samples at one end, values a plot cannot draw, numpy values in
the live view, filters that match nothing, and one snapshot per query command."""

from __future__ import annotations

import json
import math
import sqlite3
import warnings
from contextlib import closing
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from matplotlib.figure import Figure
from rich.console import Console
from test_live import group_view, text_of
from test_operator_cli import RUN, _archived_copy, invoke, knob_db, plot_action

from trajmon import status as status_module
from trajmon.cli.runs_cmd import render_status
from trajmon.live import LiveSnapshot
from trajmon.plotting import plot_action_window, plottable
from trajmon.records import ActionEvent
from trajmon.schema import SCHEMA_VERSION

__all__ = ["knob_db"]  # the recorded run of test_operator_cli, used as a fixture here

READERS = [
    ("runs",),
    ("status",),
    ("actions", "list"),
    ("actions", "show", "0", "--with-signal-window"),
    ("actions", "plot", "0", "-o", "{tmp}/never.png"),
    ("export", RUN, "-o", "{tmp}/export"),
]


def reader_args(args: tuple[str, ...], tmp_path: Path) -> list[str]:
    """A reader's arguments with its output file (if any) in the test's own directory."""
    return [a.format(tmp=tmp_path) for a in args]


def _assert_one_line_error(result: Any, message: str) -> None:
    assert result.exit_code == 2, result.stdout
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr


@pytest.mark.parametrize("args", READERS)
def test_a_database_from_a_newer_trajmon_is_refused(
    knob_db: Path, tmp_path: Path, args: tuple[str, ...]
) -> None:
    """Readers checked no schema version: a renamed column was a traceback (IndexError), a
    changed meaning would have been wrong numbers."""
    db = _archived_copy(knob_db, tmp_path)
    with closing(sqlite3.connect(db)) as conn:
        conn.execute("ALTER TABLE runs RENAME COLUMN actions TO action_count")
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
        conn.commit()
    result = invoke(*reader_args(args, tmp_path), "--db", str(db))
    newer = f"schema version {SCHEMA_VERSION + 1} is newer than this trajmon ({SCHEMA_VERSION})"
    _assert_one_line_error(result, newer)
    assert not (tmp_path / "never.png").exists() and not (tmp_path / "export").exists()


def _other_app(path: Path) -> None:
    """A SQLite file of another program that happens to have a ``runs`` table."""
    with closing(sqlite3.connect(path)) as conn:
        conn.execute("CREATE TABLE runs (id INTEGER PRIMARY KEY, athlete TEXT, km REAL)")
        conn.commit()


def _damaged(path: Path, knob_db: Path) -> None:
    """A trajmon database whose ``poll_groups``, ``channels`` and ``actions`` pages were
    overwritten (the schema and the runs intact): the damage shows only when they are read."""
    with closing(sqlite3.connect(knob_db)) as src, closing(sqlite3.connect(path)) as dst:
        src.backup(dst)
        dst.execute("PRAGMA journal_mode = DELETE")  # the file below is the whole database
        (page_size,) = dst.execute("PRAGMA page_size").fetchone()
        roots = [
            int(r[0])
            for r in dst.execute(
                "SELECT rootpage FROM sqlite_master"
                " WHERE name IN ('poll_groups', 'channels', 'actions')"
            )
        ]
    data = bytearray(path.read_bytes())
    for root in roots:
        start = (root - 1) * page_size
        data[start : start + page_size] = b"\x55" * page_size
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("kind", ["other app", "damaged", "directory"])
@pytest.mark.parametrize("args", READERS)
def test_a_file_that_is_not_a_readable_trajmon_database_is_one_line_exit_2(
    knob_db: Path, tmp_path: Path, kind: str, args: tuple[str, ...]
) -> None:
    """Before: a traceback (no such table / database disk image is malformed) or "disk I/O
    error" for a directory."""
    db = tmp_path / "file.db"
    if kind == "other app":
        _other_app(db)
        message = "is not a trajmon database (no poll_groups table)"
    elif kind == "damaged":
        _damaged(db, knob_db)
        message = "database disk image is malformed"
    else:
        db.mkdir()
        message = "is a directory, not a database file"
    result = invoke(*reader_args(args, tmp_path), "--db", str(db))
    _assert_one_line_error(result, message)
    assert not (tmp_path / "never.png").exists() and not (tmp_path / "export").exists()


def test_a_window_without_samples_at_its_start_is_incomplete(knob_db: Path, tmp_path: Path) -> None:
    """The recording spans the window, but its first stretch has no samples: a resumed run
    whose outage ends inside the window (shown here by removing those rows). Completeness was
    judged from the group's whole span and the gaps *between* the window's own rows, so such
    a window was called complete."""
    db = _archived_copy(knob_db, tmp_path)
    with closing(sqlite3.connect(db)) as conn:
        (dt,) = conn.execute("SELECT dt_s FROM actions WHERE action_idx = 0").fetchone()
        conn.execute(
            "UPDATE actions SET window_start_s = ?, window_end_s = ? WHERE action_idx = 0",
            (dt - 0.3, dt + 0.1),
        )
        conn.commit()

    def signal_window() -> dict[str, Any]:
        shown = invoke("actions", "show", "0", "--db", str(db), "--with-signal-window", "--json")
        (group,) = json.loads(shown.stdout)["signal_window"]
        return dict(group)

    assert signal_window()["complete"] is True, "inside the recording, nothing missing"
    with closing(sqlite3.connect(db)) as conn:
        table = conn.execute("SELECT table_name FROM poll_groups WHERE kind = 'signal'").fetchone()[
            0
        ]
        conn.execute(f'DELETE FROM "{table}" WHERE dt_s BETWEEN ? AND ?', (dt - 0.35, dt - 0.1))
        conn.commit()
    group = signal_window()
    assert group["rows"] and group["rows"][0]["dt_s"] >= dt - 0.1
    assert group["complete"] is False


def test_values_a_plot_cannot_draw_are_left_out_and_counted(tmp_path: Path) -> None:
    """Near the largest float matplotlib's autoscaling overflowed (a RuntimeWarning on stderr,
    for ±max even a ValueError reported as "cannot write"), and an int beyond float range made
    ``float()`` raise OverflowError: a traceback."""
    huge = 1.7976931348623157e308
    action = plot_action()
    groups = [
        {
            "dt_s": [0.0, 0.5, 1.0, 1.5],
            "channels": [
                {"label": "I", "unit": "A"},
                {"label": "Z", "unit": "m"},
                {"label": "N", "unit": ""},
            ],
            "columns": {
                "I": [-huge, huge, 0.0, 1.0],
                "Z": [1.0, math.inf, 2.0, -math.inf],
                "N": [10**400, 1, 2, 3],
            },
        }
    ]
    out = tmp_path / "huge.png"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        axes = plot_action_window(action, groups, out, run_name="r")
    assert axes == 3 and out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert plottable(10**400) == math.inf and plottable(-(10**400)) == -math.inf


def test_long_names_are_shortened_in_the_plot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Run names and labels may be 200 characters: the title ran off the figure."""
    figures: list[Figure] = []
    real = Figure.savefig

    def savefig(self: Figure, *args: Any, **kwargs: Any) -> None:
        figures.append(self)
        real(self, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", savefig)
    action = plot_action(action_idx=3, spec_label="S" * 200, old_value="x" * 200, new_value="y")
    groups = [
        {"dt_s": [0.0, 1.0], "channels": [{"label": "L" * 200, "unit": "A"}],
         "columns": {"L" * 200: [1.0, 2.0]}}
    ]  # fmt: skip
    plot_action_window(action, groups, tmp_path / "long.png", run_name="R" * 200)
    (fig,) = figures
    title = fig._suptitle.get_text() if fig._suptitle is not None else ""
    assert "R" * 30 in title and "S" * 30 in title and "…" in title
    assert max(len(line) for line in title.splitlines()) <= 80
    assert len(fig.axes[0].get_ylabel()) <= 40


def test_the_live_view_shows_numpy_values_as_numbers() -> None:
    """The view shows values as the driver returned them: numpy scalars were their repr
    (``np.float32(0.1)``, ``np.True_``) and a newline in text broke the row."""
    group = group_view(
        [
            ("f32", "V", np.float32(0.1)),
            ("flag", "", np.bool_(True)),
            ("count", "", np.int64(7)),
            ("arr", "", np.array([1.0, 2.0])),
            ("text", "", "two\nlines"),
        ]
    )
    action = ActionEvent(0, 0.5, 5, 0.4, "t", "Bias", 0, 0.1, 0.25, 0.15, 0.0, 1.0)
    out = text_of(LiveSnapshot("r", 1.0, 0, 10, 1, [group], [action]))
    assert "np." not in out and "array(" not in out
    rows = {line.split()[0]: line.split()[1:] for line in out.splitlines() if line.strip()}
    assert rows["f32"][0] == "0.1" and rows["flag"][0] == "True" and rows["count"][0] == "7"
    assert rows["text"][:2] == ["two", "lines"]


def test_actions_list_spec_is_matched_as_labels_are_and_an_unknown_one_is_an_error(
    knob_db: Path,
) -> None:
    """``--spec`` compared exactly: ``--spec bias`` or a typo gave an empty list, as if the
    operator had never touched the setting."""
    exact = json.loads(
        invoke("actions", "list", "--db", str(knob_db), "--spec", "Bias", "--json").stdout
    )
    lower = invoke("actions", "list", "--db", str(knob_db), "--spec", "bias", "--json")
    assert lower.exit_code == 0 and json.loads(lower.stdout) == exact and exact["actions"]
    for wrong in ("Biass", "Tunnel Current"):  # a typo; a signal, not a spec
        result = invoke("actions", "list", "--db", str(knob_db), "--spec", wrong)
        _assert_one_line_error(result, f"run {RUN!r} has no spec {wrong!r}; its specs: Bias")


@pytest.mark.parametrize("option", ["--since", "--until"])
def test_actions_list_refuses_nan_bounds(knob_db: Path, option: str) -> None:
    """NaN compares false with everything: the list was silently empty."""
    result = invoke("actions", "list", "--db", str(knob_db), option, "nan")
    _assert_one_line_error(result, f"{option} must be a number of seconds, got nan")


def test_status_reads_one_snapshot_and_never_makes_the_writer_wait(
    knob_db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each statement used to read its own commit: a commit landing between the run row and
    the group rows gave counters from two moments. Now the command reads in one read
    transaction, and a writer still commits meanwhile (WAL)."""
    db = _archived_copy(knob_db, tmp_path)
    with closing(sqlite3.connect(db)) as conn:
        assert conn.execute("PRAGMA journal_mode = WAL").fetchone()[0] == "wal"
        before = conn.execute("SELECT sum(samples_read) FROM poll_groups").fetchone()[0]
    real = status_module.effective_status
    writes: list[int] = []

    def commit_between(row: Any, now: float | None = None) -> str:
        # The recorder commits right after the run row was read, before the groups are.
        with closing(sqlite3.connect(db, timeout=0)) as writer:
            writer.execute("UPDATE poll_groups SET samples_read = samples_read + 1000")
            writer.commit()
            writes.append(1)
        return real(row, now)

    monkeypatch.setattr(status_module, "effective_status", commit_between)
    doc = json.loads(invoke("status", "--db", str(db), "--json").stdout)
    assert writes == [1], "the writer committed while the reader read"
    assert sum(g["samples_read"] for g in doc["groups"]) == before


def test_status_of_a_run_without_samples_shows_no_read_time(knob_db: Path) -> None:
    """A run stopped before its first read showed a maximum read time of 0.00 ms beside an
    unknown mean."""
    result = invoke("status", "--db", str(knob_db), "--json")
    doc = json.loads(result.stdout)
    for g in doc["groups"]:
        g.update(samples=0, samples_read=0, read_mean_s=None, read_max_s=0.0)
    console = Console(record=True, width=200)
    console.print(render_status(doc))
    rows = [line for line in console.export_text().splitlines() if "(signal)" in line]
    assert rows and rows[0].split()[-3:] == ["—", "/", "—"]


@pytest.mark.parametrize(
    ("span", "line"),
    [
        ((None, None), "  no samples recorded in this group; gaps: 0"),
        (
            (0.0045530001, 7.25),
            "  no samples in this window; recorded data spans 0.005 .. 7.250 s; gaps: 0",
        ),
        (
            (0.0045530001, 7.25, [5.1, 7.25]),
            "  samples in this window span 5.100 .. 7.250 s;"
            " recorded data spans 0.005 .. 7.250 s; gaps: 0",
        ),
    ],
)
def test_an_incomplete_window_says_what_was_recorded(
    span: tuple[Any, ...], line: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A group without samples printed "recorded data spans None .. None"; spans printed every
    digit of the float. A window that begins in a resumed run's outage said only the whole
    run's span and "gaps: 0" (the outage is no gap between two of its rows): now where the
    window's own samples begin and end."""
    from trajmon.cli.actions_cmd import _print_window

    dts = span[2] if len(span) > 2 else []
    group = {
        "group": "signals",
        "complete": False,
        "channels": [],
        "columns": {},
        "sample_idx": list(range(len(dts))),
        "dt_s": dts,
        "gaps": [],
        "recorded_from_s": span[0],
        "recorded_to_s": span[1],
    }
    _print_window("signal window", [group])
    assert line in capsys.readouterr().out.splitlines()


def test_json_output_takes_complex_values_and_other_objects(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A channel of complex values (QCoDeS's dummy_parameter_with_setpoints_complex) made
    every --json output that held one a TypeError traceback."""
    from trajmon.cli.common import print_json

    print_json({"v": 1 + 2j, "a": np.array([1j, 2.0]), "p": Path("x"), "n": None, "b": True})
    assert json.loads(capsys.readouterr().out) == {
        "v": "(1+2j)",
        "a": ["1j", "(2+0j)"],
        "p": "x",
        "n": None,
        "b": True,
    }
