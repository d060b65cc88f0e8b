"""The data model as a user who queries the database directly meets it: the SQL recipes of
docs/trajectory_model.md give what the commands give, on a recorded run."""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest
from test_review_readbig import record_sim

from trajmon.queries import connect_readonly, list_runs

PAGE = Path(__file__).parents[1] / "docs" / "trajectory_model.md"


def recipe(title: str) -> str:
    """The first SQL block under the recipe heading ``title``, as a reader copies it."""
    text = PAGE.read_text(encoding="utf-8")
    found = re.search(rf"### {re.escape(title)}\n\n```sql\n(.*?)```", text, re.S)
    assert found, f"docs/trajectory_model.md: no SQL under {title!r}"
    return found.group(1)


@pytest.fixture(scope="module")
def crashed_db(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Two runs: one completed, and one as a SIGKILL leaves it — stored ``running``, its
    heartbeat long past, 5 spec samples read that its last commit did not take (the writer
    had not pulled them yet). The kill is simulated on the file: a real one is a race."""
    db = tmp_path_factory.mktemp("datamodel") / "crash.db"
    for name in ("done", "killed"):
        record_sim(db, name, 1, duration_s=0.5)
    with closing(sqlite3.connect(db)) as conn, conn:
        (run_id,) = conn.execute("SELECT run_id FROM runs WHERE run_name = 'killed'").fetchone()
        conn.execute(
            "UPDATE runs SET status = 'running', ended_utc = NULL, end_dt_s = NULL,"
            " heartbeat_epoch = heartbeat_epoch - 3600 WHERE run_id = ?",
            (run_id,),
        )
        conn.execute(
            "UPDATE poll_groups SET samples_read = samples + 5 WHERE run_id = ? AND kind = 'spec'",
            (run_id,),
        )
    yield db


def test_the_crashed_runs_recipe_counts_lost_samples_as_trajmon_runs_does(
    crashed_db: Path,
) -> None:
    """The recipe named for recognising crashed runs showed the stored ``lost_samples`` (0: a
    crashed run never wrote its end) where ``trajmon runs`` shows the 5 samples read and never
    committed."""
    with closing(connect_readonly(crashed_db)) as conn:
        conn.row_factory = sqlite3.Row
        rows = [dict(r) for r in conn.execute(recipe("Runs, with crashed runs recognised"))]
        runs = list_runs(conn)
    assert [r["status"] for r in runs] == ["completed", "crashed"]
    assert [r["lost_samples"] for r in runs] == [0, 5]
    keys = ("run_id", "run_name", "status", "run_start_utc", "actions", "errors", "lost_samples")
    assert [{k: r[k] for k in keys} for r in rows] == [{k: r[k] for k in keys} for r in runs]
    assert [r["duration_s"] for r in rows] == [round(r["duration_s"], 1) for r in runs]
