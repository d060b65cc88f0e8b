"""Exported files as the usual lab tools load them: cell spellings every CSV reader parses,
netCDF files that can be written (and read) whatever the strings hold."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import xarray as xr

from trajmon.export_sinks import Column, open_sink


def test_csv_nan_is_spelled_nan_for_every_reader(tmp_path: Path) -> None:
    """polars reads a float column holding ``nan`` as strings; ``NaN`` is a float everywhere
    (pandas, polars, R, numpy); ``inf``/``-inf`` already were."""
    path = tmp_path / "x.csv"
    cols = [Column("dt_s", "float", "s"), Column("I", "float", "A")]
    sink = open_sink("csv", path, cols, index="dt_s", metadata={})
    sink.write([[0.0, 0.1, 0.2, 0.3], [math.nan, math.inf, -math.inf, None]])
    sink.close()
    with path.open(newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    assert [r[1] for r in rows[1:]] == ["NaN", "inf", "-inf", ""]
    assert math.isnan(float(rows[1][1]))


def test_netcdf_string_with_nul_is_written_not_fatal(tmp_path: Path) -> None:
    """HDF5 strings cannot hold NUL: a driver answer with one made the whole export fail."""
    path = tmp_path / "x.nc"
    cols = [
        Column("dt_s", "float", "s", has_nulls=False),
        Column("S", "str", "u\x00", {"source": "a\x00b"}),
        Column("M", "text"),
    ]
    sink = open_sink("netcdf", path, cols, index="dt_s", metadata={"trajmon_run": "r\x00"})
    sink.write([[0.0, 0.5], ["ok\x00junk", None], ["any\x00x", 1.5]])
    sink.close()
    with xr.open_dataset(path, engine="h5netcdf") as ds:
        assert ds["S"].values.tolist() == ["ok\ufffdjunk", ""]
        assert ds["M"].values.tolist() == ["any\ufffdx", "1.5"]
        assert ds["S"].attrs["units"] == "u\ufffd" and ds["S"].attrs["source"] == "a\ufffdb"
        assert ds.attrs["trajmon_run"] == "r\ufffd"


def test_netcdf_names_fit_netcdf_c(tmp_path: Path) -> None:
    """netCDF-C reads a name of at most 255 bytes: a 200-character non-ASCII label (400 bytes)
    came back cut inside a character, and netCDF4/xarray's default engine could not open the
    file at all. Names are cut on a character boundary, and stay unique."""
    import h5py

    path = tmp_path / "x.nc"
    labels = ["é" * 200, "é" * 199 + "x", "温" * 100, "a" * 200]
    cols = [Column("dt_s", "float", "s", has_nulls=False)]
    cols += [Column(label, "float", attrs={"label": label}) for label in labels]
    sink = open_sink("netcdf", path, cols, index="dt_s", metadata={})
    sink.write([[0.0], [1.0], [2.0], [3.0], [4.0]])
    sink.close()
    with h5py.File(path, "r") as f:
        names = [n for n in f if n != "dt_s"]
        assert all(len(n.encode("utf-8")) <= 255 for n in names)
        assert len(set(names)) == 4 and "a" * 200 in names
        assert sorted(f[n].attrs["label"] for n in names) == sorted(labels)
    with xr.open_dataset(path, engine="h5netcdf") as ds:
        assert [float(ds[n][0]) for n in names] == [1.0, 2.0, 3.0, 4.0]
