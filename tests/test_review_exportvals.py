"""Review of exports of awkward values: an integer beyond int64 is exact in CSV and never lost
silently in Parquet or netCDF (the export says where it wrote a null or a fill instead), and an
array holding NaN or an infinity is exported as strict JSON, which every JSON reader takes."""

from __future__ import annotations

import csv
import itertools
import json
import math
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest
import xarray as xr
from qcodes import validators as v
from qcodes.instrument import Instrument
from recordings import decoded_table, record_every_tick
from typer.testing import CliRunner

from trajmon import MonitorConfig
from trajmon.channels import INT64_MAX, INT64_MIN
from trajmon.cli import app
from trajmon.config import ChannelSpec
from trajmon.export import ExportResult, export_run
from trajmon.export_sinks import Format
from trajmon.export_values import text_value
from trajmon.queries import connect_readonly, resolve_run

RUN = "exportvals"
BIG = [1, 2**70, -(2**65), 5]
WAVES = [np.array([math.nan, math.inf, -math.inf, 1.5]), np.array([1.0, 2.0, 3.0, 4.0])]
runner = CliRunner()


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    path = tmp_path_factory.mktemp("exportvals") / "vals.db"
    inst = Instrument("awk")
    big, waves, knob = itertools.cycle(BIG), itertools.cycle(WAVES), itertools.count()
    inst.add_parameter("big", vals=v.Ints(), get_cmd=lambda: next(big))
    inst.add_parameter("wave", vals=v.Arrays(shape=(4,)), get_cmd=lambda: next(waves))
    inst.add_parameter("knob", vals=v.Ints(), get_cmd=lambda: 3 if next(knob) < 4 else 2**80)
    channels = [
        ChannelSpec(label="Big", source="awk.big", kind="signal"),
        ChannelSpec(label="Wave", source="awk.wave", kind="signal"),
        ChannelSpec(label="Knob", source="awk.knob", kind="spec"),
    ]
    config = MonitorConfig(
        run_name=RUN, db=path, channels=channels, interval_s=0.01, duration_s=0.1
    )
    try:
        summary = record_every_tick(config, {"awk": inst})
    finally:
        inst.close()
    assert summary.status == "completed" and summary.actions == 1
    yield path


def exported(db: Path, out: Path, fmt: Format, chunk_rows: int = 3) -> ExportResult:
    with closing(connect_readonly(db)) as conn:
        return export_run(conn, resolve_run(conn, RUN), fmt, out, chunk_rows=chunk_rows)


def truth(db: Path, group: str) -> dict[str, list[Any]]:
    return decoded_table(db, f"{RUN}/{group}", "any")


def huge(values: list[Any]) -> int:
    return sum(1 for x in values if x is not None and not INT64_MIN <= x <= INT64_MAX)


def test_ints_beyond_int64_are_exact_in_csv_without_a_warning(db: Path, tmp_path: Path) -> None:
    result = exported(db, tmp_path, "csv")
    assert result.warnings == []
    with (result.directory / "signals.csv").open(newline="", encoding="utf-8") as f:
        cells = [row["Big"] for row in csv.DictReader(f)]
    stored = truth(db, "signals")["Big"]
    assert huge(stored) > 0 and [int(c) for c in cells] == stored
    with (result.directory / "actions.csv").open(newline="", encoding="utf-8") as f:
        (action,) = list(csv.DictReader(f))
    assert (action["old_value"], action["new_value"]) == ("3", str(2**80))


@pytest.mark.parametrize("fmt", ["parquet", "netcdf"])
def test_ints_beyond_int64_are_never_lost_silently(db: Path, tmp_path: Path, fmt: Format) -> None:
    """Parquet and netCDF int64 columns cannot hold 2**70: it is written as a null (Parquet) or
    the fill value (netCDF), which reads back exactly like a failed read. The export used to
    say nothing; it now lists, per file and channel, how many values that happened to."""
    result = exported(db, tmp_path, fmt)
    signals, specs = truth(db, "signals")["Big"], truth(db, "specs")["Knob"]
    ext = "parquet" if fmt == "parquet" else "nc"
    expected = [(f"signals.{ext}", "'Big'", huge(signals)), (f"specs.{ext}", "'Knob'", huge(specs))]
    assert len(result.warnings) == len(expected)
    for warning, (name, label, n) in zip(result.warnings, expected, strict=True):
        assert warning.startswith(f"{name}: {n} value(s) of {label} beyond int64"), warning
        assert "CSV" in warning
    if fmt == "parquet":
        column = pq.read_table(result.directory / "signals.parquet").column("Big").to_pylist()
    else:
        with xr.open_dataset(result.directory / "signals.nc", engine="h5netcdf") as ds:
            column = [None if math.isnan(x) else int(x) for x in ds["Big"].values.tolist()]
    assert column == [x if INT64_MIN <= x <= INT64_MAX else None for x in signals]


def test_cli_export_warns_on_stderr_and_in_json(db: Path, tmp_path: Path) -> None:
    args = ["export", RUN, "--db", str(db), "--out", str(tmp_path), "--format", "parquet"]
    shown = runner.invoke(app, args)
    assert shown.exit_code == 0, shown.stderr
    n = huge(truth(db, "signals")["Big"])
    assert f"trajmon: warning: signals.parquet: {n} value(s) of 'Big' beyond int64" in shown.stderr
    listed = runner.invoke(app, [*args, "--overwrite", "--json"])
    assert listed.exit_code == 0, listed.stderr
    assert len(json.loads(listed.stdout)["warnings"]) == 2


def strict_json(text: str) -> Any:
    def refuse(constant: str) -> Any:
        raise ValueError(f"{constant} is not JSON")

    return json.loads(text, parse_constant=refuse)


def cells_of(directory: Path, fmt: Format) -> list[str]:
    if fmt == "csv":
        with (directory / "signals.csv").open(newline="", encoding="utf-8") as f:
            return [row["Wave"] for row in csv.DictReader(f)]
    if fmt == "parquet":
        return list(pq.read_table(directory / "signals.parquet").column("Wave").to_pylist())
    with xr.open_dataset(directory / "signals.nc", engine="h5netcdf") as ds:
        return [str(x) for x in ds["Wave"].values.tolist()]


@pytest.mark.parametrize("fmt", ["csv", "parquet", "netcdf"])
def test_arrays_with_nan_and_infinities_are_strict_json(
    db: Path, tmp_path: Path, fmt: Format
) -> None:
    """Bare ``NaN``/``Infinity`` is not JSON: polars, DuckDB, SQLite's json() and JavaScript
    refuse it. They are the strings "NaN", "Infinity", "-Infinity" (as in ``snapshot_json``),
    which numpy reads back as the numbers."""
    result = exported(db, tmp_path, fmt)
    stored = truth(db, "signals")["Wave"]
    cells = cells_of(result.directory, fmt)
    assert any(not np.isfinite(w).all() for w in stored)
    for cell, wave in zip(cells, stored, strict=True):
        np.testing.assert_array_equal(np.array(strict_json(cell), dtype=float), wave)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (np.array([[math.nan], [-math.inf]]), [["NaN"], ["-Infinity"]]),
        (np.array(math.inf), "Infinity"),
        ((np.array([math.nan]), np.array([[1.0, 2.0]])), [["NaN"], [[1.0, 2.0]]]),
        (np.array([0.5, -0.0, 1e300]), [0.5, -0.0, 1e300]),
    ],
)
def test_text_value_of_arrays_is_strict_json(value: Any, expected: Any) -> None:
    text = text_value(value)
    assert text is not None and strict_json(text) == expected


def test_complex_arrays_keep_python_text() -> None:
    """No JSON for complex numbers (documented): their list text, NaN part and all."""
    assert text_value(np.array([complex(math.nan, 1.0), 2j])) == "[(nan+1j), 2j]"


def test_a_directory_where_an_export_file_goes_is_refused_before_anything_is_replaced(
    db: Path, tmp_path: Path
) -> None:
    """A directory named like one of the files was found only when the files were moved in: the
    --overwrite failed with the earlier export half replaced and its run.json gone."""
    first = exported(db, tmp_path, "csv")
    before = {p.name: p.read_bytes() for p in first.directory.iterdir()}
    (first.directory / "specs.csv").unlink()
    (first.directory / "specs.csv").mkdir()
    del before["specs.csv"]
    args = ["export", RUN, "--db", str(db), "--out", str(tmp_path), "--format", "csv"]
    result = runner.invoke(app, [*args, "--overwrite"])
    assert result.exit_code == 2
    assert result.stderr.strip().endswith(
        "specs.csv is a directory, not a file an export may replace"
    )
    assert {p.name: p.read_bytes() for p in first.directory.iterdir() if p.is_file()} == before
