"""README.md as a newcomer follows it: the SQL it shows must run on the run its own steps record."""

from __future__ import annotations

import re
import shlex
import sqlite3
from contextlib import closing
from pathlib import Path

from simulators.qcodes_sim import SimulatedSTM
from tests.recordings import record_every_tick
from trajmon import MonitorConfig

README = Path(__file__).parents[1] / "README.md"


def test_the_readme_sql_example_reads_the_run_the_readme_records(tmp_path: Path) -> None:
    """The example queried "my run/signals", a run no README step makes: pasted into the
    database of the `--sim` run it suggests, it was `no such table`."""
    text = README.read_text(encoding="utf-8")
    sim_run = re.search(r"`\.venv/bin/trajmon (run --sim [^`]*)`", text)
    assert sim_run is not None, "README: the --sim try-out command"
    argv = shlex.split(sim_run.group(1))
    run_name = argv[argv.index("--run-name") + 1]
    section = text.split("## Reading the data with plain sqlite3", 1)[1]
    sql = section.split("```sql\n", 1)[1].split("```", 1)[0]

    # The --sim run's channels and interval (the simulator's defaults), on a simulated clock.
    db = tmp_path / "trajmon.db"
    stm = SimulatedSTM("stm")
    try:
        config = MonitorConfig(run_name=run_name, db=db, source="instruments", duration_s=7.0)
        assert record_every_tick(config, {"stm": stm}).status == "completed"
    finally:
        stm.close()

    bounds = re.search(r"BETWEEN ([\d.]+) AND ([\d.]+)", sql)
    assert bounds is not None
    lo, hi = float(bounds.group(1)), float(bounds.group(2))
    with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        rows = conn.execute(sql).fetchall()
    assert rows, "the example's bounds lie inside the recorded run"
    assert all(lo <= dt <= hi and isinstance(current, float) for dt, current in rows)
