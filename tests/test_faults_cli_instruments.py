"""Promise 4 on the real CLI: two simulator processes, one playing a fault plan (a dropped
connection, error replies, a hang past the read timeout, a 5 s outage)."""

from __future__ import annotations

from pathlib import Path

from procs import query, run_cli, sim_process
from test_error_streaks import assert_streaks_are_the_gaps

FAULTS = """faults:
  - {at_s: 1.0, fault: drop, command: Signals.ValsGet}
  - {at_s: 1.5, fault: error, n: 3, command: Signals.ValsGet, message: overload}
  - {at_s: 2.5, fault: hang, seconds: 2.0, command: Signals.ValsGet}
  - {at_s: 4.0, fault: outage, seconds: 5.0}
"""


def test_a_faulty_controller_never_ends_the_run(tmp_path: Path) -> None:
    plan = tmp_path / "faults.yaml"
    plan.write_text(FAULTS, encoding="utf-8")
    db = tmp_path / "two.db"
    with sim_process(tmp_path) as good, sim_process(tmp_path, "--faults", str(plan)) as bad:
        station = tmp_path / "station.yaml"
        station.write_text(
            "instruments:\n"
            + "".join(
                f"  {name}:\n    type: trajmon.drivers.nanonis.NanonisSTM\n"
                f"    init: {{address: 127.0.0.1, port: {sim.port}, timeout: 0.3,"
                " reconnect_backoff: [0.05, 0.5]}\n"
                for name, sim in (("good", good), ("bad", bad))
            ),
            encoding="utf-8",
        )
        channels = tmp_path / "channels.yaml"
        channels.write_text(
            "channels:\n"
            + "".join(
                f"  - {{parameter: {name}.current, label: {name} I, kind: signal, group: {name}}}\n"
                f"  - {{parameter: {name}.bias, label: {name} V, kind: spec}}\n"
                for name in ("good", "bad")
            ),
            encoding="utf-8",
        )
        result = run_cli(
            "run",
            "--run-name",
            "two",
            "--station",
            str(station),
            "--channels",
            str(channels),
            "--db",
            str(db),
            "--duration",
            "11",
            "--read-timeout-s",
            "0.3",
            "--quiet",
            timeout=90,
        )
    assert result.returncode == 0, result.stderr
    ((status,),) = query(db, "SELECT status FROM runs")
    assert status == "completed"
    missed = dict(query(db, "SELECT name, missed_ticks FROM poll_groups"))
    assert missed["good"] == 0, "the healthy controller keeps its schedule"
    good_rows = query(db, 'SELECT count(*), count("good I") FROM "two/good"')[0]
    assert good_rows[0] == good_rows[1] >= 100
    bad_rows = query(db, 'SELECT count(*), count("bad I") FROM "two/bad"')[0]
    assert bad_rows[1] < bad_rows[0], "failed reads are NULL gaps"
    (last,) = query(db, 'SELECT "bad I" FROM "two/bad" ORDER BY sample_idx DESC LIMIT 1')[0]
    assert last is not None, "reads resume after the outage"
    kinds = {k for (k,) in query(db, "SELECT DISTINCT error_type FROM monitor_errors")}
    assert {"ConnectionError", "NanonisError", "TimeoutError"} <= kinds, kinds
    assert {i for (i,) in query(db, "SELECT DISTINCT instrument FROM monitor_errors")} == {"bad"}
    for channel, table in (("bad I", "two/bad"), ("bad V", "two/specs")):
        streaks = assert_streaks_are_the_gaps(db, table, channel)
        # ~50 failed reads of the 5 s outage are a few rows, not one per read
        assert len(streaks) <= 12 and max(reads for _, reads, _ in streaks) >= 30, streaks
