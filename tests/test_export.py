"""Exports: every format round-trips a recorded run's values, with units, streamed in chunks,
into a directory that a hostile run name cannot escape."""

from __future__ import annotations

import csv
import errno
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

from trajmon import MonitorConfig, RunSummary
from trajmon.cli import app
from trajmon.config import ChannelSpec
from trajmon.export import MAX_CHUNK_ROWS, export_run, safe_filename
from trajmon.export_sinks import EXTENSIONS, Column, Format, csv_headers, open_sink
from trajmon.queries import connect_readonly, resolve_run

RUN = '../evil/"x" ü'
runner = CliRunner()


class OddInstrument(Instrument):
    """Values that are awkward to export: NaN/±inf/-0.0, big ints, bools, quoted and multi-line
    strings, arrays, an untyped channel of mixed types, and a spec that changes once."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        xs = itertools.cycle([math.nan, math.inf, -math.inf, 1.5, -0.0, 1e-300])
        ns = itertools.cycle([1, -2, 2**40])
        flags = itertools.cycle([True, False])
        words = itertools.cycle(['héllo, "q"', "a\nb", ""])
        mixed = itertools.cycle([1, "a", 2.5, True])
        waves = itertools.count()
        knob = itertools.count()
        self.add_parameter("x", unit="A", vals=v.Numbers(), get_cmd=lambda: next(xs))
        self.add_parameter("n", vals=v.Ints(), get_cmd=lambda: next(ns))
        self.add_parameter("flag", vals=v.Bool(), get_cmd=lambda: next(flags))
        self.add_parameter("word", vals=v.Strings(), get_cmd=lambda: next(words))
        self.add_parameter(
            "wave",
            unit="V",
            vals=v.Arrays(shape=(3,)),
            get_cmd=lambda: np.arange(3) * 0.5 + next(waves),
        )
        self.add_parameter("mixed", get_cmd=lambda: next(mixed))
        self.add_parameter(
            "knob", unit="V", vals=v.Numbers(), get_cmd=lambda: 0.0 if next(knob) < 10 else 0.25
        )


LABELS = {
    "Current/Ref": "x",
    "Count": "n",
    "Flag": "flag",
    "Word": "word",
    "Wave": "wave",
    "Mixed": "mixed",
}


def recorded_from(instrument: Instrument, config: MonitorConfig) -> RunSummary:
    """Record ``config`` from ``instrument`` (the channels' sources name it), then close it."""
    try:
        return record_every_tick(config, {instrument.name: instrument})
    finally:
        instrument.close()


@pytest.fixture(scope="module")
def odd_db(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    db = tmp_path_factory.mktemp("export") / "odd.db"
    odd = OddInstrument("odd")
    channels = [ChannelSpec(label=k, source=f"odd.{p}", kind="signal") for k, p in LABELS.items()]
    channels.append(ChannelSpec(label="Knob", source="odd.knob", kind="spec"))
    config = MonitorConfig(run_name=RUN, db=db, channels=channels, interval_s=0.01, duration_s=0.4)
    summary = recorded_from(odd, config)
    assert summary.status == "completed" and summary.actions == 1
    assert summary.signal_samples == 40  # every tick of 0.4 s at 10 ms
    yield db


def stored(db: Path, group: str) -> dict[str, list[Any]]:
    """The group's table decoded straight from SQLite: what every export must reproduce."""
    return decoded_table(db, f"{RUN}/{group}", "any")


def same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return (math.isnan(a) and math.isnan(b)) or (
            a == b and math.copysign(1, a) == math.copysign(1, b)
        )
    return bool(a == b)


def export(db: Path, out: Path, fmt: Format, chunk_rows: int = 7) -> tuple[Path, list[int]]:
    chunks: list[int] = []
    with closing(connect_readonly(db)) as conn:
        result = export_run(
            conn, resolve_run(conn, RUN), fmt, out, chunk_rows=chunk_rows, progress=chunks.append
        )
    return result.directory, chunks


def test_csv_round_trips_values_and_units(odd_db: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    directory, chunks = export(odd_db, out, "csv")
    truth = stored(odd_db, "signals")
    n = len(truth["sample_idx"])
    assert max(chunks) <= 7 and sum(chunks) == n + len(stored(odd_db, "specs")["sample_idx"])
    with (directory / "signals.csv").open(newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    header, body = rows[0], rows[1:]
    assert header[:3] == ["sample_idx", "dt_s [s]", "read_s [s]"]
    assert "Current/Ref [A]" in header and "Wave [V]" in header and "Count" in header
    assert len(body) == n
    col = {h.split(" [")[0]: i for i, h in enumerate(header)}
    for k, row in enumerate(body):
        assert same(float(row[col["Current/Ref"]]), truth["Current/Ref"][k])
        assert int(row[col["Count"]]) == truth["Count"][k]
        assert row[col["Flag"]] == ("true" if truth["Flag"][k] else "false")
        assert row[col["Word"]] == truth["Word"][k]
        assert json.loads(row[col["Wave"]]) == truth["Wave"][k].tolist()
        assert float(row[col["dt_s"]]) == truth["dt_s"][k]
    with (directory / "channels.csv").open(newline="", encoding="utf-8") as f:
        catalog = {r["label"]: r for r in csv.DictReader(f)}
    assert catalog["Current/Ref"]["unit"] == "A" and catalog["Knob"]["group"] == "specs"
    with (directory / "actions.csv").open(newline="", encoding="utf-8") as f:
        (action,) = list(csv.DictReader(f))
    assert action["spec_label"] == "Knob" and action["unit"] == "V"
    assert float(action["old_value"]) == 0.0 and float(action["new_value"]) == 0.25
    doc = json.loads((directory / "run.json").read_text(encoding="utf-8"))
    assert doc["run_name"] == RUN and doc["status"] == "completed"


def test_parquet_round_trips_with_unit_metadata_and_row_groups(
    odd_db: Path, tmp_path: Path
) -> None:
    directory, _ = export(odd_db, tmp_path, "parquet")
    truth = stored(odd_db, "signals")
    pf = pq.ParquetFile(directory / "signals.parquet")
    assert pf.metadata.num_row_groups == math.ceil(len(truth["sample_idx"]) / 7)  # streamed
    table = pf.read()
    assert table.schema.field("Current/Ref").metadata[b"unit"] == b"A"
    assert table.schema.field("dt_s").metadata[b"unit"] == b"s"
    data = table.to_pydict()
    for label in ("Current/Ref", "Count", "Flag", "Word", "dt_s", "sample_idx"):
        assert all(same(a, b) for a, b in zip(data[label], truth[label], strict=True)), label
    assert [json.loads(w) for w in data["Wave"]] == [w.tolist() for w in truth["Wave"]]
    assert data["Mixed"][:4] == ["1", "a", "2.5", "true"]
    actions = pq.read_table(directory / "actions.parquet").to_pylist()
    assert actions[0]["spec_label"] == "Knob" and actions[0]["delta"] == pytest.approx(0.25)


def test_netcdf_round_trips_with_dt_coordinate_and_units(odd_db: Path, tmp_path: Path) -> None:
    directory, _ = export(odd_db, tmp_path, "netcdf")
    truth = stored(odd_db, "signals")
    with xr.open_dataset(directory / "signals.nc", engine="h5netcdf") as ds:
        assert list(ds.coords) == ["dt_s"] and ds["dt_s"].attrs["units"] == "s"
        np.testing.assert_array_equal(ds["dt_s"].values, truth["dt_s"])
        current = ds["Current_Ref"]  # '/' cannot appear in a netCDF name
        assert current.attrs["units"] == "A" and current.attrs["label"] == "Current/Ref"
        assert all(
            same(float(a), b) for a, b in zip(current.values, truth["Current/Ref"], strict=True)
        )
        assert ds["Flag"].dtype == bool and ds["Flag"].values.tolist() == truth["Flag"]
        assert ds["Count"].dtype == np.int64 and ds["Count"].values.tolist() == truth["Count"]
        assert ds["Word"].values.tolist() == truth["Word"]
        window = ds.sel(dt_s=slice(0.1, 0.2))
        assert 0 < window.sizes["dt_s"] < ds.sizes["dt_s"]
    with xr.open_dataset(directory / "specs.nc", engine="h5netcdf") as ds:
        assert ds["Knob"].attrs["units"] == "V"
    with xr.open_dataset(directory / "actions.nc", engine="h5netcdf") as ds:
        assert ds["spec_label"].values.tolist() == ["Knob"]


def test_hostile_run_name_stays_inside_out(odd_db: Path, tmp_path: Path) -> None:
    out = tmp_path / "a" / "out"
    directory, _ = export(odd_db, out, "csv")
    assert directory.parent == out.resolve()
    everything = {p.relative_to(tmp_path) for p in tmp_path.rglob("*")}
    inside = Path("a", "out", directory.name)
    assert {p for p in everything if p.parent != inside} == {Path("a"), Path("a", "out"), inside}
    assert not (tmp_path / "evil").exists() and not (tmp_path / "a" / "evil").exists()


@pytest.mark.parametrize(
    "name", ["..", ".", "", "a/b", "a\\b", "../../etc/passwd", "CON", 'q"uote', "é" * 200, "x\x00y"]
)
def test_safe_filename_is_one_harmless_component(name: str) -> None:
    safe = safe_filename(name)
    assert safe and safe not in (".", "..") and not safe.startswith(".")
    assert not any(c in safe for c in '/\\"\x00:')
    assert len(safe.encode()) <= 130
    assert safe.lower() != "con"


def test_safe_filename_keeps_distinct_names_distinct() -> None:
    names = ["a/b", "a_b", "a\\b", "a:b", "plain run-1"]
    assert len({safe_filename(n) for n in names}) == len(names)
    assert safe_filename("plain run-1") == "plain run-1"


def test_cli_export_json_refuses_overwrite_and_unknown_run(odd_db: Path, tmp_path: Path) -> None:
    args = ["export", RUN, "--db", str(odd_db), "--out", str(tmp_path), "--format", "parquet"]
    first = runner.invoke(app, [*args, "--json"])
    assert first.exit_code == 0, first.stderr
    files = json.loads(first.stdout)["files"]
    assert {Path(f["path"]).name for f in files} >= {"signals.parquet", "run.json"}
    again = runner.invoke(app, args)
    assert again.exit_code == 2 and "--overwrite" in again.stderr
    assert runner.invoke(app, [*args, "--overwrite"]).exit_code == 0
    unknown = runner.invoke(app, ["export", "nope", "--db", str(odd_db), "--out", str(tmp_path)])
    assert unknown.exit_code == 2
    assert unknown.stderr.strip() == "trajmon: error: unknown run 'nope'"
    missing = runner.invoke(app, ["export", "r", "--db", str(tmp_path / "no.db")])
    assert missing.exit_code == 2 and "database not found" in missing.stderr


@pytest.mark.parametrize("terminal", [True, False])
def test_progress_bar_only_for_long_exports_on_a_terminal(
    monkeypatch: pytest.MonkeyPatch, terminal: bool
) -> None:
    from io import StringIO

    from rich.console import Console

    from trajmon.cli import export_cmd

    err = StringIO()
    monkeypatch.setattr(export_cmd, "err_console", Console(file=err, force_terminal=terminal))
    with export_cmd._progress(10, "short") as short:
        assert short is None
    with export_cmd._progress(1_000_000, "exporting big") as advance:
        assert (advance is not None) == terminal
        if advance is not None:
            advance(500_000)
    assert ("exporting big" in err.getvalue()) == terminal


def test_parquet_int_column_beyond_int64_becomes_null(tmp_path: Path) -> None:
    """The C-speed int64 conversion falls back to per-value checks only when it must."""
    from trajmon.export_sinks import Column, ParquetSink

    path = tmp_path / "ints.parquet"
    sink = ParquetSink(path, [Column("n", "int"), Column("x", "float")], {})
    sink.write([[1, 2**64 + 3, -(2**63)], [0.5, 1.5, 2.5]])
    sink.write([[7, 8, 9], [1.0, 2.0, 3.0]])
    sink.close()
    table = pq.read_table(path)
    assert table.column("n").to_pylist() == [1, None, -(2**63), 7, 8, 9]
    assert table.column("x").to_pylist() == [0.5, 1.5, 2.5, 1.0, 2.0, 3.0]


@pytest.mark.parametrize("fmt", ["csv", "parquet", "netcdf"])
def test_a_file_appears_only_once_complete(fmt: Format, tmp_path: Path) -> None:
    """Written under ``.partial`` and renamed at close; an abort (an export interrupted or
    failing half-way) leaves neither the partial file nor one that looks finished."""
    cols = [Column("dt_s", "float", "s", has_nulls=False), Column("I", "float", "A")]
    for outcome in ("abort", "close"):
        path = tmp_path / f"{outcome}.{fmt}"
        sink = open_sink(fmt, path, cols, index="dt_s", metadata={"run": "r"})
        sink.write([[0.0, 0.1], [1e-9, None]])
        partial = path.with_name(path.name + ".partial")
        assert partial.exists() and not path.exists()
        if outcome == "abort":
            sink.abort()
            assert not partial.exists() and not path.exists()
        else:
            sink.close()
            assert path.exists() and not partial.exists()


EDGE = [  # label, parameter, group: groups named like the catalog and like its rename
    *[(k, p, "channels") for k, p in ((".", "f"), ("..", "g"), ("_nc4_non_coord_dt_s", "f"))],
    *[(k, k, "channels") for k in ("big", "small")],
    *[(k, p, "group0-channels") for k, p in (("x [V]", "u"), ("x", "g"), ("dt_s [s]", "u"))],
]


@pytest.fixture(scope="module")
def edge_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Labels, groups and integers that once broke an export, with constant values."""
    db = tmp_path_factory.mktemp("edge") / "edge.db"
    edge = Instrument("edge")
    units = {"f": "A", "g": "V"}
    for p, x in {"f": 1.5, "g": 2.5, "u": 0.5, "big": 2**70, "small": 3}.items():
        vals = v.Ints() if isinstance(x, int) else v.Numbers()
        edge.add_parameter(p, unit=units.get(p, ""), vals=vals, get_cmd=lambda x=x: x)
    channels = [
        ChannelSpec(label=k, source=f"edge.{p}", kind="signal", group=g) for k, p, g in EDGE
    ]
    channels.append(ChannelSpec(label="Knob", source="edge.u", kind="spec"))
    config = MonitorConfig(
        run_name="edge", db=db, channels=channels, interval_s=0.02, duration_s=0.2
    )
    assert recorded_from(edge, config).status == "completed"
    return db


def export_edge(db: Path, out: Path, fmt: Format) -> list[Path]:
    with closing(connect_readonly(db)) as conn:
        return export_run(conn, resolve_run(conn, "edge"), fmt, out).files


def disk_full(*_: Any) -> Any:
    raise OSError(errno.ENOSPC, "No space left on device")


def test_netcdf_int_beyond_int64_without_nulls_gets_a_fill(edge_db: Path, tmp_path: Path) -> None:
    """No NULL in the column, yet 2**70 cannot be an int64: it needs the fill value too."""
    export_edge(edge_db, tmp_path, "netcdf")
    with xr.open_dataset(tmp_path / "edge" / "group0-channels.nc", engine="h5netcdf") as ds:
        assert np.isnan(ds["big"].values).all()  # the fill value, decoded as missing
        assert ds["small"].dtype == np.int64 and set(ds["small"].values.tolist()) == {3}


def test_netcdf_names_are_safe_and_unique(edge_db: Path, tmp_path: Path) -> None:
    export_edge(edge_db, tmp_path, "netcdf")
    with xr.open_dataset(tmp_path / "edge" / "group0-channels.nc", engine="h5netcdf") as ds:
        assert ds["_."].attrs["label"] == "." and ds["_.."].attrs["label"] == ".."
        assert ds["_nc4-non-coord_dt_s"].attrs["label"] == "_nc4_non_coord_dt_s"
        assert list(ds.coords) == ["dt_s"] and ds["_."].values.tolist() == [1.5] * ds.sizes["dt_s"]
    cols = [Column("dt_s ", "float"), Column("dt_s", "float", "s"), Column("-1", "int")]
    sink = open_sink("netcdf", tmp_path / "t.nc", cols, index="dt_s", metadata={})
    sink.write([[9.0], [0.5], [7]])
    sink.close()
    with xr.open_dataset(tmp_path / "t.nc", engine="h5netcdf") as ds:  # the index keeps its name
        assert ds["dt_s"].values.tolist() == [0.5] and ds["dt_s_2"].values.tolist() == [9.0]
        assert ds["_-1"].values.tolist() == [7]


@pytest.mark.parametrize("fmt", ["csv", "parquet", "netcdf"])
def test_every_exported_file_name_is_unique(edge_db: Path, tmp_path: Path, fmt: Format) -> None:
    """Group 0 is `channels` (renamed `group0-channels`), group 1 is `group0-channels`."""
    files = export_edge(edge_db, tmp_path, fmt)
    names = [p.name.casefold() for p in files]
    assert len(set(names)) == len(names) == 7
    assert all(p.exists() for p in files) and len(list((tmp_path / "edge").iterdir())) == 7


def test_csv_headers_are_unique(edge_db: Path, tmp_path: Path) -> None:
    export_edge(edge_db, tmp_path, "csv")
    with (tmp_path / "edge" / "group1-group0-channels.csv").open(encoding="utf-8") as f:
        header = next(csv.reader(f))
    assert header == [
        "sample_idx", "dt_s [s]", "read_s [s]", "x [V]", "x [V] (2)", "dt_s [s] (2)"
    ]  # fmt: skip
    cols = [Column("a", "int", "V"), Column("a [V]", "int"), Column("a [V] (2)", "int")]
    assert csv_headers(cols) == ["a [V]", "a [V] (3)", "a [V] (2)"]


@pytest.mark.parametrize("fmt", ["csv", "parquet", "netcdf"])
def test_failed_export_leaves_nothing_and_can_be_retried(
    odd_db: Path, tmp_path: Path, fmt: Format, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Disk full at the first group's file, after three finished ones: no partial file, no
    finished ones that stop a retry."""
    from trajmon import files  # the rename every export file goes through

    real = files.os.replace
    fail = lambda a, b: disk_full() if Path(b).name.startswith("signals") else real(a, b)  # noqa: E731
    monkeypatch.setattr(files.os, "replace", fail)
    with pytest.raises(OSError, match="No space"):
        export(odd_db, tmp_path, fmt)
    assert list(tmp_path.iterdir()) == []  # nor the run's directory the export made
    monkeypatch.setattr(files.os, "replace", real)
    export(odd_db, tmp_path, fmt)  # no --overwrite needed
    (directory,) = tmp_path.iterdir()
    assert {p.suffix for p in directory.iterdir()} == {".json", f".{EXTENSIONS[fmt]}"}


@pytest.mark.parametrize("fmt", ["csv", "parquet", "netcdf"])
@pytest.mark.parametrize("stage", ["open", "close"])
def test_sink_failing_to_open_or_close_removes_its_partial_file(
    fmt: Format, stage: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pyarrow.parquet

    from trajmon import export_sinks as s

    if stage == "close":  # the last buffer's flush fails
        cls = {"csv": s.CsvSink, "parquet": s.ParquetSink, "netcdf": s.NetcdfSink}[fmt]
        real = cls._close_file
        monkeypatch.setattr(cls, "_close_file", lambda self: (real(self), disk_full()))
    elif fmt == "csv":  # the header's write fails
        monkeypatch.setattr(s, "csv_headers", disk_full)
    elif fmt == "parquet":  # the file is created, its magic bytes are not written
        touch = lambda p, _: (Path(p).touch(), disk_full())  # noqa: E731
        monkeypatch.setattr(pyarrow.parquet, "ParquetWriter", touch)
    else:  # a variable cannot be created
        monkeypatch.setattr(s.NetcdfSink, "_add", disk_full)
    with pytest.raises(OSError, match="No space"):
        path = tmp_path / f"x.{fmt}"
        sink = open_sink(fmt, path, [Column("dt_s", "float")], index="dt_s", metadata={})
        sink.write([[0.5]])
        sink.close()
    assert list(tmp_path.iterdir()) == []


def test_cli_chunk_rows_out_of_range_is_a_usage_error(odd_db: Path, tmp_path: Path) -> None:
    args = ["export", RUN, "--db", str(odd_db), "--out", str(tmp_path)]
    for n in (0, MAX_CHUNK_ROWS + 1, 2**31):
        result = runner.invoke(app, [*args, "--chunk-rows", str(n)])
        assert result.exit_code == 2 and "--chunk-rows" in result.stderr, n
    assert list(tmp_path.iterdir()) == []
    assert runner.invoke(app, [*args, "--chunk-rows", str(MAX_CHUNK_ROWS)]).exit_code == 0


class FlakyInstrument(Instrument):
    """Four reads of ``level`` in a row raise (one streak), a later one answers text."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        calls = itertools.count()

        def level() -> Any:
            n = next(calls)
            if 3 <= n <= 6:
                raise RuntimeError(f"overload {n}")
            return "clipped" if n == 9 else 1.5

        self.add_parameter("level", unit="A", vals=v.Numbers(), get_cmd=level)
        self.add_parameter("knob", unit="V", vals=v.Numbers(), get_cmd=lambda: 0.0)


@pytest.fixture(scope="module")
def flaky_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    db = tmp_path_factory.mktemp("flaky") / "flaky.db"
    flaky = FlakyInstrument("flaky")
    channels = [
        ChannelSpec(label="Level", source="flaky.level", kind="signal"),
        ChannelSpec(label="Knob", source="flaky.knob", kind="spec"),
    ]
    config = MonitorConfig(
        run_name="flaky", db=db, channels=channels, interval_s=0.01, duration_s=0.2
    )
    assert recorded_from(flaky, config).status == "completed"
    return db


def read_back(path: Path) -> list[dict[str, Any]]:
    """An exported table as dicts keyed by column name (CSV headers without their unit)."""
    if path.suffix == ".csv":
        with path.open(newline="", encoding="utf-8") as f:
            return [{k.split(" [")[0]: x for k, x in row.items()} for row in csv.DictReader(f)]
    if path.suffix == ".parquet":
        return list(pq.read_table(path).to_pylist())
    with xr.open_dataset(path, engine="h5netcdf") as ds:
        frame = ds.to_dataframe().reset_index()
    return list(frame.to_dict("records"))


@pytest.mark.parametrize("fmt", ["csv", "parquet", "netcdf"])
def test_errors_export_one_row_per_streak_with_its_reads(
    flaky_db: Path, tmp_path: Path, fmt: Format
) -> None:
    with closing(connect_readonly(flaky_db)) as conn:
        result = export_run(conn, resolve_run(conn, "flaky"), fmt, tmp_path)
        stored_rows = [dict(r) for r in conn.execute("SELECT * FROM monitor_errors")]
    path = result.directory / f"errors.{EXTENSIONS[fmt]}"
    assert path in result.files and result.rows[path.name] == 2
    got = read_back(path)
    assert [(r["error_type"], int(r["reads"])) for r in got] == [
        ("RuntimeError", 4),
        ("bad_value", 1),
    ]
    for row, want in zip(got, stored_rows, strict=True):
        assert float(row["dt_s"]) == want["dt_s"] and float(row["last_dt_s"]) == want["last_dt_s"]
        assert (row["channel"], row["message"], row["last_message"]) == (
            "Level",
            want["message"],
            want["last_message"],
        )
    assert "overload 3" in got[0]["message"] and "overload 6" in got[0]["last_message"]
