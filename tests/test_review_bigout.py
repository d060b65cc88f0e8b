"""The read commands on a long run: output that grows with the run is written as it is read,
in memory that does not (checked with tracemalloc, never with timings), and the same text as
before, character for character."""

from __future__ import annotations

import io
import json
import sqlite3
import sys
import tracemalloc
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from test_review_actions import Knobs, _config, _record, _set, knobs, two_actions  # noqa: F401
from typer.testing import CliRunner

from trajmon import queries
from trajmon.cli import actions_cmd, app
from trajmon.queries import connect_readonly, list_actions, resolve_run
from trajmon.schema import ACTION_INSERT

runner = CliRunner()


def grow(db: Path, total: int) -> None:
    """Append copies of the run's recorded actions until it has ``total``: each its own
    ``action_idx`` and a later ``dt_s``, as a long night adds them."""
    with closing(sqlite3.connect(db)) as conn:
        recorded = conn.execute("SELECT * FROM actions ORDER BY action_idx").fetchall()
        have = len(conn.execute("SELECT action_idx FROM actions").fetchall())
        rows = []
        for idx in range(have, total):
            row = list(recorded[idx % len(recorded)])
            row[1], row[2] = idx, row[2] + idx
            rows.append(row)
        with conn:
            conn.executemany(ACTION_INSERT, rows)


class Sink(io.TextIOBase):
    """A UTF-8 stdout that keeps only the number of characters written to it."""

    def __init__(self) -> None:
        self.chars = 0

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return "utf-8"

    def write(self, text: str) -> int:
        self.chars += len(text)
        return len(text)


def peak_of(*args: str) -> tuple[int, int]:
    """The peak traced memory of ``trajmon ARGS`` and the characters it wrote."""
    app(list(args), standalone_mode=False)  # once first: imports, caches
    sink = Sink()
    stdout, sys.stdout = sys.stdout, sink
    tracemalloc.start()
    try:
        app(list(args), standalone_mode=False)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        sys.stdout = stdout
    return peak, sink.chars


@pytest.fixture
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(queries, "ACTION_CHUNK", 100, raising=False)


@pytest.mark.parametrize("json_out", [True, False], ids=["json", "table"])
def test_a_long_action_list_is_written_in_bounded_memory(
    two_actions: Path,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
    small_chunks: None,
    json_out: bool,
) -> None:
    """A night's 361 000 actions took 1.4 GB (and 20 s) as JSON: the whole list built as dicts,
    then as one string; the table holds every row too. Now the peak stays far below the
    output, and does not grow with four times the actions."""
    monkeypatch.setattr(actions_cmd, "LONG_LIST", 200)
    args = ["actions", "list", "--db", str(two_actions)] + ["--json"] * json_out
    n = 1500
    grow(two_actions, n)
    peak, chars = peak_of(*args)
    grow(two_actions, 4 * n)
    peak4, chars4 = peak_of(*args)
    assert chars4 > 3.5 * chars  # the output did grow with the run
    # The command's own fixed cost (typer building its commands, the SQL statements) is the
    # same for both: what the 4 500 more actions add to the peak is what must stay small.
    assert peak4 - peak < (chars4 - chars) / 20, (peak, peak4, chars, chars4)


def expected(db: Path, where: str = "", args: tuple[Any, ...] = ()) -> list[int]:
    """The action_idx an action list should hold, read as plainly as SQL reads them."""
    with closing(sqlite3.connect(db)) as conn:
        sql = f"SELECT action_idx FROM actions WHERE 1 {where} ORDER BY action_idx"
        return [r[0] for r in conn.execute(sql, args)]


def test_filters_read_in_chunks_list_the_same_actions(
    two_actions: Path,  # noqa: F811
    small_chunks: None,
) -> None:
    """Chunks of 100: --last, --limit, --spec and --since/--until across chunk edges."""
    grow(two_actions, 1234)
    with closing(connect_readonly(two_actions)) as conn:
        run = resolve_run(conn, None)
        spec = conn.execute("SELECT spec_label FROM actions LIMIT 1").fetchone()[0]

        def listed(**kw: Any) -> list[int]:
            return [a["action_idx"] for a in list_actions(conn, run, **kw)]

        everything = expected(two_actions)
        assert listed() == everything and len(everything) == 1234
        assert listed(last=250) == everything[-250:]
        assert listed(limit=300) == everything[:300]
        assert listed(limit=100) == everything[:100]
        assert listed(last=1234) == everything and listed(last=5000) == everything
        assert listed(last=0) == [] and listed(limit=0) == []
        by_spec = expected(two_actions, "AND spec_label = ?", (spec,))
        assert listed(spec=spec) == by_spec and listed(spec=spec, last=101) == by_spec[-101:]
        within = expected(two_actions, "AND dt_s >= ? AND dt_s <= ?", (200.0, 900.5))
        assert listed(since=200.0, until=900.5) == within
        assert listed(since=200.0, until=900.5, limit=150) == within[:150]
        assert listed(since=1e9) == []


def test_a_long_table_is_the_table_rich_draws(
    two_actions: Path,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
    small_chunks: None,
) -> None:
    """Past LONG_LIST the rows are written one by one: the same characters as rich's table
    (title, widths, justification, wide characters), which the docs show."""
    grow(two_actions, 450)
    with closing(sqlite3.connect(two_actions)) as conn, conn:
        conn.execute("UPDATE actions SET spec_label = 'Température 测' WHERE action_idx = 7")
    args = ["actions", "list", "--db", str(two_actions), "--last", "400"]
    drawn = runner.invoke(app, args)
    monkeypatch.setattr(actions_cmd, "LONG_LIST", 100)
    written = runner.invoke(app, args)
    assert drawn.exit_code == written.exit_code == 0, written.output
    assert drawn.stderr == "" and written.stderr.startswith("note: 400 actions;")
    assert written.stdout == drawn.stdout
    assert "(400)" in written.stdout.splitlines()[0]


def test_the_list_is_not_read_in_one_snapshot_held_while_writing(
    two_actions: Path,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
    small_chunks: None,
) -> None:
    """Written as read, a reader of the output that pauses (``| less``) would hold the
    database's log at the command's snapshot, the -wal file growing under a recording run:
    between chunks the command holds no read transaction (a checkpoint can restart the log),
    and what it lists is still the actions of its first snapshot."""
    grow(two_actions, 500)
    writer = sqlite3.connect(two_actions, isolation_level=None)
    writer.execute("PRAGMA journal_mode = WAL")
    checkpoints: list[tuple[int, int, int]] = []

    class Pausing(Sink):
        def write(self, text: str) -> int:
            if len(checkpoints) < 3 and self.chars > 40_000 * (len(checkpoints) + 1):
                grow(two_actions, 500 + 10 * (len(checkpoints) + 1))  # the run goes on
                checkpoints.append(writer.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone())
            return super().write(text)

    out = io.StringIO()

    class Keeping(Pausing):
        def write(self, text: str) -> int:
            out.write(text)
            return super().write(text)

    monkeypatch.setattr(sys, "stdout", Keeping())
    app(["actions", "list", "--db", str(two_actions), "--json"], standalone_mode=False)
    monkeypatch.setattr(sys, "stdout", sys.__stdout__)
    writer.close()
    assert len(checkpoints) == 3
    assert all(busy == 0 for busy, _, _ in checkpoints), checkpoints
    listed = [a["action_idx"] for a in json.loads(out.getvalue())["actions"]]
    assert listed == list(range(500))


def test_json_written_in_pieces_is_the_document_json_dumps_wrote(
    two_actions: Path,  # noqa: F811
    small_chunks: None,
) -> None:
    """The streamed document is byte for byte ``json.dumps(indent=2)`` of the list."""
    grow(two_actions, 333)
    result = runner.invoke(app, ["actions", "list", "--db", str(two_actions), "--json"])
    assert result.exit_code == 0, result.output
    with closing(connect_readonly(two_actions)) as conn:
        run = resolve_run(conn, None)
        whole = {"run_name": run.run_name, "actions": list_actions(conn, run)}
    assert result.stdout == json.dumps(whole, indent=2, ensure_ascii=False) + "\n"
    empty = runner.invoke(
        app, ["actions", "list", "--db", str(two_actions), "--json", "--since", "1e9"]
    )
    assert json.loads(empty.stdout)["actions"] == [] and '"actions": []' in empty.stdout
