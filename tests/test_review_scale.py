"""The read side on big databases: work that must not grow with a run's length where it need
not — checked on the statements a command runs and their query plans, never on timings."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest
from recordings import record_every_tick

from simulators.qcodes_sim import SimulatedSTM
from trajmon import MonitorConfig
from trajmon.export import export_run
from trajmon.queries import connect_readonly, resolve_run
from trajmon.schema import quote_ident

RUN = "scale"


@pytest.fixture(scope="module")
def sim_db(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Every default simulator channel for five ticks: float signals, and specs that include
    an int and a bool channel."""
    db = tmp_path_factory.mktemp("scale") / "sim.db"
    stm = SimulatedSTM("stm", seed=3)
    try:
        config = MonitorConfig(run_name=RUN, db=db, interval_s=0.1, duration_s=0.5)
        record_every_tick(config, {"stm": stm})
    finally:
        stm.close()
    yield db


def scans_of(conn: sqlite3.Connection, statements: list[str], table: str) -> list[str]:
    """The statements among ``statements`` whose plan reads all of ``table``."""
    out = []
    for sql in statements:
        if quote_ident(table) not in sql:
            continue
        plan = conn.execute(f"EXPLAIN QUERY PLAN {sql}").fetchall()
        if any(str(row[3]).startswith("SCAN") for row in plan):
            out.append(sql)
    return out


def test_netcdf_export_reads_a_float_group_once(sim_db: Path, tmp_path: Path) -> None:
    """A netCDF export scanned every channel of every group for NULLs before writing it,
    although only int and bool variables take a fill value (floats are NaN, strings empty):
    on a 10M-row run of float signals, 2.3 s of the export read the whole table for nothing,
    the progress bar standing at 0. The group's rows are now read once, by the export itself;
    a group with int or bool channels is still checked for the fill value it needs."""
    with closing(connect_readonly(sim_db)) as conn:
        types = dict(conn.execute("SELECT label, value_type FROM channels").fetchall())
        signals = [t for label, t in types.items() if label in ("Tunnel Current", "Z Position")]
        assert signals == ["float", "float"] and {"int", "bool"} <= set(types.values())
        statements: list[str] = []
        conn.set_trace_callback(statements.append)
        try:
            export_run(conn, resolve_run(conn, RUN), "netcdf", tmp_path)
        finally:
            conn.set_trace_callback(None)
        signal_scans = scans_of(conn, statements, f"{RUN}/signals")
        spec_scans = scans_of(conn, statements, f"{RUN}/specs")
    assert len(signal_scans) == 1, signal_scans
    assert "ORDER BY sample_idx" in signal_scans[0]  # the export's own streaming read
    # the fill check of the int and bool specs, and the read
    assert len(spec_scans) == 2, spec_scans
