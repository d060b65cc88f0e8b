"""Exported data files describe themselves: a Parquet or netCDF file passed on without run.json
still says which run (and group) it holds, when its ``dt_s = 0`` was, and which trajmon
recorded it. Every value is checked against the database, not against a constant."""

from __future__ import annotations

import json
import sqlite3
from contextlib import closing
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest
import xarray as xr
from test_export import RUN, export, odd_db

from trajmon.export_sinks import EXTENSIONS, Format

__all__ = ["odd_db"]  # the awkward-values run of test_export, used as a fixture here

RUN_KEYS = ("trajmon_run", "trajmon_run_start_utc", "trajmon_version")


def stored_run(db: Path) -> tuple[sqlite3.Row, dict[str, sqlite3.Row]]:
    """The run's row and its poll groups by name, straight from SQLite."""
    with closing(sqlite3.connect(db)) as conn:
        conn.row_factory = sqlite3.Row
        run = conn.execute("SELECT * FROM runs WHERE run_name = ?", (RUN,)).fetchone()
        rows = conn.execute("SELECT * FROM poll_groups WHERE run_id = ?", (run["run_id"],))
        return run, {g["name"]: g for g in rows}


def file_metadata(path: Path) -> dict[str, Any]:
    """Parquet schema metadata (decoded text) or netCDF global attributes (typed)."""
    if path.suffix == ".parquet":
        meta = pq.read_schema(path).metadata or {}
        return {k.decode(): v.decode() for k, v in meta.items()}
    with xr.open_dataset(path, engine="h5netcdf") as ds:
        return dict(ds.attrs)


def exported(db: Path, out: Path, fmt: Format) -> tuple[Path, dict[str, Path]]:
    directory, _ = export(db, out, fmt)
    files = {p.stem: p for p in directory.glob(f"*.{EXTENSIONS[fmt]}")}
    assert set(files) == {"channels", "actions", "errors", "signals", "specs"}
    return directory, files


@pytest.mark.parametrize("fmt", ["parquet", "netcdf"])
def test_every_data_file_names_its_run_start_and_version(
    odd_db: Path, tmp_path: Path, fmt: Format
) -> None:
    run, groups = stored_run(odd_db)
    directory, files = exported(odd_db, tmp_path, fmt)
    doc = json.loads((directory / "run.json").read_text(encoding="utf-8"))
    for stem, path in files.items():
        meta = file_metadata(path)
        got = tuple(meta.get(k) for k in RUN_KEYS)
        assert got == (run["run_name"], run["run_start_utc"], run["trajmon_version"]), stem
        assert (meta["trajmon_run_start_utc"], meta["trajmon_version"]) == (
            doc["run_start_utc"],
            doc["trajmon_version"],
        )
        start = datetime.fromisoformat(meta["trajmon_run_start_utc"])
        assert start.utcoffset() == timedelta(0)
        assert abs(start.timestamp() - run["run_start_epoch"]) <= 1e-6  # stored to the µs
        if stem not in groups:
            assert not {"trajmon_group", "trajmon_kind", "interval_s"} & set(meta), stem
            continue
        g = groups[stem]
        assert (meta["trajmon_group"], meta["trajmon_kind"]) == (g["name"], g["kind"])
        if fmt == "parquet":  # key-value metadata is text: the exact repr of the float
            assert meta["interval_s"] == repr(g["interval_s"])
        else:
            assert meta["interval_s"] == g["interval_s"]


def test_netcdf_interval_is_a_float64_attribute(odd_db: Path, tmp_path: Path) -> None:
    import h5py

    _, groups = stored_run(odd_db)
    _, files = exported(odd_db, tmp_path, "netcdf")
    for name, g in groups.items():
        with xr.open_dataset(files[name], engine="h5netcdf") as ds:
            interval = ds.attrs["interval_s"]
        assert isinstance(interval, np.float64) and interval == g["interval_s"], name
        with h5py.File(files[name], "r") as f:
            assert f.attrs["interval_s"].dtype == np.float64


@pytest.mark.parametrize("fmt", ["parquet", "netcdf"])
def test_actions_file_alone_places_dt_s_in_absolute_time(
    odd_db: Path, tmp_path: Path, fmt: Format
) -> None:
    """start + dt_s of an action is the read that showed the change; ``detected_at_utc`` (a
    wall-clock time taken right after that read) follows it closely."""
    _, files = exported(odd_db, tmp_path, fmt)
    start = datetime.fromisoformat(file_metadata(files["actions"])["trajmon_run_start_utc"])
    if fmt == "parquet":
        rows = pq.read_table(files["actions"]).to_pylist()
    else:
        with xr.open_dataset(files["actions"], engine="h5netcdf") as ds:
            rows = ds.to_dataframe().to_dict("records")
    assert rows
    for row in rows:
        at = start + timedelta(seconds=float(row["dt_s"]))
        lag = (datetime.fromisoformat(row["detected_at_utc"]) - at).total_seconds()
        assert -1e-3 <= lag <= 2.0, (at, row["detected_at_utc"])
