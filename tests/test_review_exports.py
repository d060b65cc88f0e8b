"""Review of exports: what a lab user reads back from each format is what the database holds
(a recorded -2**63 is not a gap in netCDF, the documented pandas recipe reads NaN as a number),
a failed export leaves nothing behind, and tiny chunks do not cost a row group each."""

from __future__ import annotations

import ast
import errno
import itertools
import math
import os
import re
import sqlite3
import struct
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.parquet as pq
import pytest
import xarray as xr
from qcodes import validators as v
from qcodes.instrument import Instrument
from recordings import decoded_table, record_every_tick

from trajmon import MonitorConfig
from trajmon.channels import INT64_MIN
from trajmon.config import ChannelSpec
from trajmon.export import export_run
from trajmon.export_sinks import Format
from trajmon.export_values import joined
from trajmon.queries import connect_readonly, resolve_run

RUN = "review"
DOCS = Path(__file__).resolve().parents[1] / "docs" / "cli.md"


class Unreadable(Exception):
    """A read that fails: the sample holds NULL for the channel."""


def _cycled(values: list[Any]) -> Any:
    source = itertools.cycle(values)

    def get() -> Any:
        value = next(source)
        if value is Unreadable:
            raise Unreadable("no answer")
        return value

    return get


VALUES: dict[str, tuple[Any, list[Any]]] = {  # label: (validator, values read in turn)
    "Count": (v.Ints(), [INT64_MIN, Unreadable, INT64_MIN + 1, 2**53 + 1, -5]),
    "Current": (v.Numbers(), [math.nan, -0.0, Unreadable, 1e-300, 0.1]),
    "Word": (v.Strings(), ["NA", "", Unreadable, 'a,"b"\nc', "nan"]),
}


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    path = tmp_path_factory.mktemp("review") / "review.db"
    inst = Instrument("rev")
    for label, (vals, seq) in VALUES.items():
        inst.add_parameter(label.lower(), vals=vals, get_cmd=_cycled(seq), unit="A")
    channels = [
        ChannelSpec(label=label, source=f"rev.{label.lower()}", kind="signal") for label in VALUES
    ]
    channels.append(ChannelSpec(label="Knob", source="rev.current", kind="spec"))
    config = MonitorConfig(
        run_name=RUN, db=path, channels=channels, interval_s=0.01, duration_s=0.5
    )
    try:
        summary = record_every_tick(config, {"rev": inst})
    finally:
        inst.close()
    assert summary.status == "completed"
    rows = stored(path)
    assert len(rows["Count"]) == 50  # every tick: each value was read ten times
    yield path


def stored(db: Path) -> dict[str, list[Any]]:
    """The signals table decoded from SQLite: what an export must give back."""
    return decoded_table(db, f"{RUN}/signals", "float")


def export(db: Path, out: Path, fmt: Format, chunk_rows: int = 50_000) -> Path:
    with closing(connect_readonly(db)) as conn:
        return export_run(conn, resolve_run(conn, RUN), fmt, out, chunk_rows=chunk_rows).directory


def bits(x: float) -> bytes:
    return struct.pack(">d", x)


def test_netcdf_int_fill_never_hides_a_recorded_value(db: Path, tmp_path: Path) -> None:
    """The fill was always -2**63: a recorded -2**63 read back as a failed read, and so did
    -2**63 + 1, which xarray rounds to the same float64 before it masks the fill."""
    want = stored(db)["Count"]
    path = export(db, tmp_path, "netcdf") / "signals.nc"
    with xr.open_dataset(path, engine="h5netcdf") as ds:
        decoded = ds["Count"].values.tolist()
    assert [x is None for x in want] == [math.isnan(x) for x in decoded]
    assert [float(x) for x in want if x is not None] == [x for x in decoded if not math.isnan(x)]
    with xr.open_dataset(path, engine="h5netcdf", mask_and_scale=False) as ds:  # as documented
        raw, fill = ds["Count"].values.tolist(), int(ds["Count"].attrs["_FillValue"])
    assert [fill if x is None else x for x in want] == raw
    assert float(fill) not in {float(x) for x in want if x is not None}


def _documented_read_csv_kwargs() -> dict[str, Any]:
    """The keyword arguments of the pandas recipe in the CSV part of ``trajmon export``."""
    text = DOCS.read_text(encoding="utf-8")
    section = text[text.index("## `trajmon export`") :]
    match = re.search(r"With pandas,\s+`([^`]*)`", section)
    assert match, "the CSV notes give a pandas recipe"
    call = re.sub(r"\s+", " ", match.group(1))
    call = call.removeprefix("pandas.read_csv(").removeprefix("path, ").removesuffix(")")
    parsed = ast.parse(f"f({call})", mode="eval").body
    assert isinstance(parsed, ast.Call)
    return {kw.arg: ast.literal_eval(kw.value) for kw in parsed.keywords if kw.arg}


def test_the_documented_pandas_recipe_reads_csv_values_back(db: Path, tmp_path: Path) -> None:
    """It read a float column holding a NaN as text (``keep_default_na=False`` drops the NaN
    spelling from pandas' default engine), so no float of that channel came back as one."""
    want = stored(db)
    path = export(db, tmp_path, "csv") / "signals.csv"
    df = pd.read_csv(path, **_documented_read_csv_kwargs())
    current = df["Current [A]"]
    assert current.dtype == "float64"
    got = current.tolist()
    for w, g in zip(want["Current"], got, strict=True):
        assert math.isnan(g) if w is None or math.isnan(w) else bits(w) == bits(g)
    words = df["Word [A]"].tolist()
    for w, g in zip(want["Word"], words, strict=True):
        assert g == w if w else pd.isna(g)  # "NA" and "nan" stay text; "" and gaps are empty


def test_an_export_whose_run_json_fails_leaves_nothing_to_refuse_a_retry(
    db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """run.json was written after the cleanup's reach: a full disk there left every data file,
    and the retry was refused ("already exists; use --overwrite"). The run's directory the
    export made was left behind empty, looking like an export."""
    real = Path.write_text

    def full_disk(self: Path, *args: Any, **kwargs: Any) -> int:
        if "run.json" in self.name:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, *args, **kwargs)

    with monkeypatch.context() as patched:
        patched.setattr(Path, "write_text", full_disk)
        with pytest.raises(OSError, match="No space"):
            export(db, tmp_path, "csv")
    assert not (tmp_path / RUN).exists()  # nor the directory it made, left empty
    files = sorted(p.name for p in export(db, tmp_path, "csv").iterdir())
    assert files == ["actions.csv", "channels.csv", "errors.csv", "run.json", "signals.csv",
                     "specs.csv"]  # fmt: skip


@pytest.mark.parametrize("fmt", ["csv", "parquet", "netcdf"])
def test_an_overwrite_that_fails_leaves_the_earlier_export_whole(
    db: Path, tmp_path: Path, fmt: Format, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each finished file replaced its old one at once, and the failure's cleanup then deleted
    it: a disk full at the last file of an --overwrite left the earlier export with its
    catalog and actions gone and its samples still there."""
    directory = export(db, tmp_path, fmt)
    before = {p.name: p.read_bytes() for p in directory.iterdir()}
    real = os.replace

    def full_disk(src: Any, dst: Any) -> None:
        if Path(dst).name.startswith("specs"):
            raise OSError(errno.ENOSPC, "No space left on device")
        real(src, dst)

    with monkeypatch.context() as patched, closing(connect_readonly(db)) as conn:
        patched.setattr(os, "replace", full_disk)
        with pytest.raises(OSError, match="No space"):
            export_run(conn, resolve_run(conn, RUN), fmt, tmp_path, overwrite=True)
    assert {p.name: p.read_bytes() for p in directory.iterdir()} == before

    with closing(connect_readonly(db)) as conn:
        result = export_run(conn, resolve_run(conn, RUN), fmt, tmp_path, overwrite=True)
    assert sorted(p.name for p in directory.iterdir()) == sorted(before)  # nothing hidden left
    assert sorted(result.files) == sorted(directory / name for name in before)
    assert result.files[0].name == "run.json"


@pytest.fixture(scope="module")
def long_db(db: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The recorded run with 3000 more signal samples, written as the writer stores them."""
    path = tmp_path_factory.mktemp("long") / "long.db"
    with closing(sqlite3.connect(db)) as src, closing(sqlite3.connect(path)) as dst:
        src.backup(dst)
        (last,) = dst.execute(f'SELECT max(sample_idx) FROM "{RUN}/signals"').fetchone()
        rows = [(i, i * 0.01, 1e-4, i - 2**62, i / 7, f"w{i}") for i in range(last + 1, 3000)]
        with dst:
            dst.executemany(f'INSERT INTO "{RUN}/signals" VALUES (?, ?, ?, ?, ?, ?)', rows)
    return path


@pytest.mark.parametrize("fmt", ["parquet", "netcdf"])
def test_one_row_chunks_write_the_same_file_in_few_blocks(
    long_db: Path, tmp_path: Path, fmt: Format
) -> None:
    """``--chunk-rows 1`` gave Parquet one row group per row (their metadata, a few kB each,
    all held until the file closed: ``--chunk-rows 10`` took 2 GB for 2M rows) and netCDF
    one HDF5 write per row and variable (150 rows a second). The values are the same."""
    one = export(long_db, tmp_path / "one", fmt, chunk_rows=1)
    whole = export(long_db, tmp_path / "whole", fmt)
    want = stored(long_db)
    assert len(want["sample_idx"]) == 3000
    if fmt == "parquet":
        assert pq.ParquetFile(one / "signals.parquet").num_row_groups <= 200
        a, b = pq.read_table(one / "signals.parquet"), pq.read_table(whole / "signals.parquet")
        assert a.schema.equals(b.schema, check_metadata=True)
        assert repr(a.to_pydict()) == repr(b.to_pydict())
        assert a.column("sample_idx").to_pylist() == want["sample_idx"]
    else:
        with (
            xr.open_dataset(one / "signals.nc", engine="h5netcdf", mask_and_scale=False) as a,
            xr.open_dataset(whole / "signals.nc", engine="h5netcdf", mask_and_scale=False) as b,
        ):
            assert a.identical(b)
            assert a["sample_idx"].values.tolist() == want["sample_idx"]
            assert a["Count"].values.tolist()[-1] == 2999 - 2**62


def test_joined_chunks_keep_every_row_in_order() -> None:
    chunks = [[[i], [str(i)]] for i in range(7)] + [[list(range(7, 20)), list("x" * 13)]]
    out = list(joined(iter(chunks), 3))
    assert [len(c[0]) for c in out] == [3, 3, 14]
    assert [x for c in out for x in c[0]] == list(range(20))
    big = [[list(range(5))], [list(range(5, 6))]]
    assert [c[0] for c in joined(iter(big), 3)] == [[0, 1, 2, 3, 4], [5]]
