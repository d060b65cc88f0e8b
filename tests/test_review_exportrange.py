"""``trajmon export --since/--until`` and ``export_run(since=, until=)``: part of a run, read
through the segments index, exactly the rows with ``since <= dt_s <= until`` in every format,
the files saying which part they hold."""

from __future__ import annotations

import csv
import itertools
import json
import math
import re
import shutil
import sqlite3
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import anyio
import numpy as np
import pyarrow.parquet as pq
import pytest
import xarray as xr
from recordings import record_every_tick
from test_export import LABELS, OddInstrument
from typer.testing import CliRunner

from trajmon import MonitorConfig, Recorder, RunSummary
from trajmon.cli import app
from trajmon.clock import FakeClock
from trajmon.config import ChannelSpec
from trajmon.export import count_rows, export_run
from trajmon.export_range import DtRange
from trajmon.export_sinks import EXTENSIONS, Format
from trajmon.queries import connect_readonly, resolve_run

RUN = "slice"
ROTATE = 8  # 40 signal rows: five segments, so a slice crosses their boundaries
FORMATS: list[Format] = ["csv", "parquet", "netcdf"]
runner = CliRunner()


def config(db: Path, duration_s: float | None = 0.4) -> MonitorConfig:
    channels = [ChannelSpec(label=k, source=f"odd.{p}", kind="signal") for k, p in LABELS.items()]
    channels.append(ChannelSpec(label="Knob", source="odd.knob", kind="spec"))
    return MonitorConfig(
        run_name=RUN,
        db=db,
        channels=channels,
        interval_s=0.01,
        duration_s=duration_s,
        rotate_entries=ROTATE,
    )


@pytest.fixture(scope="module")
def run_db(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    db = tmp_path_factory.mktemp("exportrange") / "slice.db"
    odd = OddInstrument("odd")
    try:
        summary = record_every_tick(config(db), {"odd": odd})
    finally:
        odd.close()
    assert summary.signal_samples == 40 and summary.actions == 1
    yield db


def session(db: Path, wall_offset_s: float, ticks: int, *, before: int) -> None:
    """One recording session of ``ticks`` ticks, every one read, stopped (interrupted, so it
    can be resumed); ``wall_offset_s`` after the first session's wall-clock start. ``before``
    is the reads of each group in earlier sessions: a resumed recorder's counts start there,
    so this session's n-th read is the one that makes them ``before + n``."""
    cfg = config(db, duration_s=None)
    odd = OddInstrument("odd")
    clock = FakeClock(wall_start=1_700_000_000.0 + wall_offset_s)
    recorder = Recorder(cfg, {"odd": odd}, clock=clock, resume=before > 0)

    def reads() -> int:
        return min((s.samples_read for s in recorder.stats), default=0)

    async def main() -> None:
        done: list[RunSummary] = []

        async def go() -> None:
            done.append(await recorder.run())

        async with anyio.create_task_group() as tg:
            tg.start_soon(go)
            for target in range(before + 1, before + ticks + 1):
                with anyio.fail_after(10):
                    await recorder.wait_until(lambda t=target: reads() >= t)
                if target < before + ticks:
                    await clock.advance(0.01 * (1 + 1e-9))
            recorder.request_stop()
        assert done[0].status == "interrupted"

    try:
        anyio.run(main)
    finally:
        odd.close()


def two_sessions(db: Path) -> None:
    """20 ticks, an outage of about 30 s, 20 more ticks."""
    session(db, 0.0, 20, before=0)
    session(db, 30.0, 20, before=20)
    assert len(dts(db)) == len(dts(db, "specs")) == 40  # every tick read


def dts(db: Path, group: str = "signals") -> list[float]:
    with closing(sqlite3.connect(db)) as conn:
        return [r[0] for r in conn.execute(f'SELECT dt_s FROM "{RUN}/{group}" ORDER BY sample_idx')]


def truth(db: Path, group: str, since: float | None, until: float | None) -> list[int]:
    """The rows in the range, from the whole table (no index, no segments)."""
    lo = -math.inf if since is None else since
    hi = math.inf if until is None else until
    with closing(sqlite3.connect(db)) as conn:
        rows = conn.execute(
            f'SELECT sample_idx, dt_s FROM "{RUN}/{group}" ORDER BY sample_idx'
        ).fetchall()
    return [i for i, t in rows if lo <= t <= hi]


def export(db: Path, out: Path, fmt: Format, **kw: Any) -> tuple[Path, list[int]]:
    chunks: list[int] = []
    with closing(connect_readonly(db)) as conn:
        result = export_run(
            conn, resolve_run(conn, RUN), fmt, out, chunk_rows=5, progress=chunks.append, **kw
        )
    since, until = kw.get("since"), kw.get("until")
    assert result.since == (None if since == -math.inf else since)
    assert result.until == (None if until == math.inf else until)
    return result.directory, chunks


def _same(value: Any) -> Any:
    """A cell as compared: NaN equal to NaN, numpy scalars as Python's."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, bytes):
        value = value.decode()
    if isinstance(value, float) and math.isnan(value):
        return "NaN"
    return value


def rows_of(path: Path, fmt: Format) -> list[tuple[Any, ...]]:
    """A file's data rows, whichever format, each cell comparable."""
    if fmt == "csv":
        with path.open(newline="", encoding="utf-8") as f:
            return [tuple(r) for r in list(csv.reader(f))[1:]]
    if fmt == "parquet":
        table = pq.read_table(path)
        return [tuple(_same(v) for v in r.values()) for r in table.to_pylist()]
    with xr.open_dataset(path, engine="h5netcdf", mask_and_scale=False) as ds:
        names = [ds[n].dims[0] for n in ds.variables][:1] + [str(n) for n in ds.data_vars]
        columns = [[_same(v) for v in ds[n].values.tolist()] for n in names]
    return list(zip(*columns, strict=True))


def meta_of(path: Path, fmt: Format) -> dict[str, Any]:
    if fmt == "parquet":
        meta = pq.read_schema(path).metadata
        return {k.decode(): v.decode() for k, v in meta.items()}
    with xr.open_dataset(path, engine="h5netcdf") as ds:
        return dict(ds.attrs)


def idx_column(path: Path, fmt: Format) -> list[int]:
    if fmt == "csv":
        return [int(r[0]) for r in rows_of(path, fmt)]
    if fmt == "parquet":
        return [int(v) for v in pq.read_table(path).column("sample_idx").to_pylist()]
    with xr.open_dataset(path, engine="h5netcdf") as ds:
        return [int(v) for v in ds["sample_idx"].values]


def check_slice(db: Path, tmp_path: Path, fmt: Format, since: float, until: float) -> Path:
    """The slice holds exactly the rows of the whole export with ``since <= dt_s <= until``."""
    whole, _ = export(db, tmp_path / "whole", fmt)
    part, chunks = export(db, tmp_path / "part", fmt, since=since, until=until)
    ext = EXTENSIONS[fmt]
    expected_total = 0
    for group in ("signals", "specs"):
        want = truth(db, group, since, until)
        expected_total += len(want)
        assert idx_column(part / f"{group}.{ext}", fmt) == want, group
        by_idx = dict(
            zip(
                idx_column(whole / f"{group}.{ext}", fmt),
                rows_of(whole / f"{group}.{ext}", fmt),
                strict=True,
            )
        )
        assert rows_of(part / f"{group}.{ext}", fmt) == [by_idx[i] for i in want], group
    assert sum(chunks) == expected_total  # the progress counts the slice's rows
    with closing(connect_readonly(db)) as conn:
        counted = count_rows(conn, resolve_run(conn, RUN), DtRange(since, until))
    assert counted == expected_total
    return part


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_slice_is_exactly_the_rows_in_range_with_its_edges_across_segments(
    run_db: Path, tmp_path: Path, fmt: Format
) -> None:
    """Edges exactly on a sample's dt_s are inside (``since <= dt_s <= until``), and the slice
    spans the boundaries of segments 1..3 (rows 8..31 of 40)."""
    t = dts(run_db)
    since, until = t[11], t[29]
    part = check_slice(run_db, tmp_path, fmt, since, until)
    assert truth(run_db, "signals", since, until) == list(range(11, 30))
    doc = json.loads((part / "run.json").read_text(encoding="utf-8"))
    assert doc["export_range"] == {"since_s": since, "until_s": until}
    if fmt != "csv":  # a data file passed on alone says it holds a slice
        for stem in ("signals", "specs", "actions", "errors", "channels"):
            meta = meta_of(part / f"{stem}.{EXTENSIONS[fmt]}", fmt)
            got = (meta["trajmon_since_s"], meta["trajmon_until_s"])
            assert got == ((repr(since), repr(until)) if fmt == "parquet" else (since, until))


@pytest.mark.parametrize("fmt", FORMATS)
def test_one_open_side(run_db: Path, tmp_path: Path, fmt: Format) -> None:
    t = dts(run_db)
    part = check_slice(run_db, tmp_path, fmt, t[33], math.inf)
    doc = json.loads((part / "run.json").read_text(encoding="utf-8"))
    assert doc["export_range"] == {"since_s": t[33], "until_s": None}  # inf: the open side
    if fmt != "csv":
        meta = meta_of(part / f"signals.{EXTENSIONS[fmt]}", fmt)
        assert "trajmon_since_s" in meta and "trajmon_until_s" not in meta


def test_the_whole_run_says_it_is_the_whole_run(run_db: Path, tmp_path: Path) -> None:
    directory, _ = export(run_db, tmp_path, "parquet")
    doc = json.loads((directory / "run.json").read_text(encoding="utf-8"))
    assert doc["export_range"] == {"since_s": None, "until_s": None}
    assert not {"trajmon_since_s", "trajmon_until_s"} & set(
        meta_of(directory / "signals.parquet", "parquet")
    )


def test_actions_and_error_streaks_of_the_range(run_db: Path, tmp_path: Path) -> None:
    """Actions with dt_s in the range; error streaks (dt_s .. last_dt_s) overlapping it,
    a row without last_dt_s (an older trajmon's) being one read."""
    db = tmp_path / "errors.db"
    shutil.copy(run_db, db)
    streaks = {  # error_idx: (dt_s, last_dt_s)
        0: (0.0, 0.05),  # before
        1: (0.05, 0.15),  # overlaps the start
        2: (0.2, 0.2),  # inside
        3: (0.25, 0.5),  # overlaps the end
        4: (0.01, 0.39),  # spans all of it
        5: (0.35, 0.39),  # after
        6: (0.12, None),  # one read, inside
        7: (0.31, None),  # one read, after
    }
    with closing(sqlite3.connect(db)) as conn, conn:
        (run_id,) = conn.execute("SELECT run_id FROM runs").fetchone()
        conn.execute("DELETE FROM monitor_errors")
        for idx, (first, last) in streaks.items():
            conn.execute(
                "INSERT INTO monitor_errors (run_id, error_idx, dt_s, channel, instrument,"
                " error_type, message, reads, last_dt_s) VALUES (?, ?, ?, 'Count', 'odd',"
                " 'E', 'm', 2, ?)",
                (run_id, idx, first, last),
            )
        (action_dt,) = conn.execute("SELECT dt_s FROM actions").fetchone()
    for since, until in ((0.1, 0.3), (action_dt, action_dt), (action_dt + 1e-9, 0.3)):
        directory, _ = export(db, tmp_path / f"{since}", "csv", since=since, until=until)
        errors = [int(r[0]) for r in rows_of(directory / "errors.csv", "csv")]
        want = [
            i
            for i, (first, last) in streaks.items()
            if first <= until and (first if last is None else last) >= since
        ]
        assert errors == want
        actions = [float(r[1]) for r in rows_of(directory / "actions.csv", "csv")]
        assert actions == ([action_dt] if since <= action_dt <= until else [])
        channels = rows_of(directory / "channels.csv", "csv")
        assert len(channels) == len(LABELS) + 1  # the catalog whole


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_slice_across_a_resume_gap(tmp_path: Path, fmt: Format) -> None:
    db = tmp_path / "resumed.db"
    two_sessions(db)
    t = dts(db)
    first_session = [x for x in t if x < 1.0]
    second = [x for x in t if x > 1.0]
    assert first_session and second and second[0] > first_session[-1] + 29
    check_slice(db, tmp_path, fmt, first_session[-5], second[4])


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_slice_where_dt_s_falls_back_across_sessions(tmp_path: Path, fmt: Format) -> None:
    """A second session whose dt_s lie among the first's (a wall clock set back before a
    resume by an older trajmon): sample_idx order is no longer dt_s order, and the segments
    that hold both sessions span both. Still exactly the rows with dt_s in the range."""
    db = tmp_path / "fallback.db"
    two_sessions(db)
    with closing(sqlite3.connect(db)) as conn, conn:
        for group in ("signals", "specs"):
            table = f'"{RUN}/{group}"'
            (start,) = conn.execute(f"SELECT min(dt_s) FROM {table} WHERE dt_s > 1").fetchone()
            conn.execute(f"UPDATE {table} SET dt_s = dt_s - ? + 0.005 WHERE dt_s > 1", (start,))
        # the segments as the writer's upsert keeps them: each one's least and greatest dt_s
        conn.execute(
            'UPDATE segments SET first_dt_s = (SELECT min(dt_s) FROM "slice/signals" s'
            " WHERE s.sample_idx BETWEEN first_idx AND last_idx), last_dt_s = (SELECT"
            ' max(dt_s) FROM "slice/signals" s WHERE s.sample_idx BETWEEN first_idx AND'
            " last_idx) WHERE group_id = (SELECT group_id FROM poll_groups WHERE name ="
            " 'signals')"
        )
        conn.execute(
            'UPDATE segments SET first_dt_s = (SELECT min(dt_s) FROM "slice/specs" s'
            " WHERE s.sample_idx BETWEEN first_idx AND last_idx), last_dt_s = (SELECT"
            ' max(dt_s) FROM "slice/specs" s WHERE s.sample_idx BETWEEN first_idx AND'
            " last_idx) WHERE group_id = (SELECT group_id FROM poll_groups WHERE name ="
            " 'specs')"
        )
    want = truth(db, "signals", 0.05, 0.12)
    assert min(want) < 20 <= max(want)  # rows of both sessions, dt_s not in sample_idx order
    assert any(b - a > 1 for a, b in itertools.pairwise(want))
    check_slice(db, tmp_path, fmt, 0.05, 0.12)


def test_a_slice_reads_only_its_span_of_the_primary_key(run_db: Path, tmp_path: Path) -> None:
    """The group's rows are read by primary-key range (no table scan), over the segments that
    overlap the range: its rows plus at most a segment at each end."""
    t = dts(run_db)
    since, until = t[18], t[21]  # inside segment 2 (rows 16..23)
    statements: list[str] = []
    with closing(connect_readonly(run_db)) as conn:
        conn.set_trace_callback(statements.append)
        export_run(conn, resolve_run(conn, RUN), "csv", tmp_path, since=since, until=until)
        conn.set_trace_callback(None)
        reads = [s for s in statements if f'"{RUN}/signals"' in s and "ORDER BY sample_idx" in s]
        assert len(reads) == 1, reads
        (read,) = reads
        span = re.search(r"sample_idx BETWEEN (\d+) AND (\d+)", read)
        assert span is not None, read
        lo, hi = int(span[1]), int(span[2])
        assert lo <= 18 and hi >= 21 and hi - lo + 1 <= 4 + 2 * ROTATE
        assert (lo, hi) == (16, 23)  # exactly the one segment holding the range
        runnable = read.replace("-Inf", "-1e999").replace("Inf", "1e999")
        plan = conn.execute(f"EXPLAIN QUERY PLAN {runnable}").fetchall()
    details = [str(row[3]) for row in plan]
    assert any("USING INTEGER PRIMARY KEY (rowid>? AND rowid<?)" in d for d in details), details
    assert not any(d.startswith("SCAN") for d in details), details


# -- the command line ---------------------------------------------------------------------------


def cli(db: Path, out: Path, *args: str) -> Any:
    return runner.invoke(app, ["export", RUN, "--db", str(db), "-o", str(out), *args])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--since", "nan"], "--since must be a number of seconds, got nan"),
        (["--until", "nan"], "--until must be a number of seconds, got nan"),
        (["--since", "0.3", "--until", "0.1"], "--since 0.3 is after --until 0.1"),
        (["--since", "inf"], "--since inf leaves no time to export"),
        (["--until", "-inf"], "--until -inf leaves no time to export"),
    ],
)
def test_bad_ranges_are_refused_in_one_line(
    run_db: Path, tmp_path: Path, args: list[str], message: str
) -> None:
    result = cli(run_db, tmp_path, *args)
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert not any(tmp_path.iterdir())  # nothing written


def test_library_refuses_them_too(run_db: Path, tmp_path: Path) -> None:
    with closing(connect_readonly(run_db)) as conn:
        ref = resolve_run(conn, RUN)
        for kw in ({"since": math.nan}, {"since": 0.3, "until": 0.1}, {"since": math.inf}):
            with pytest.raises(ValueError):
                export_run(conn, ref, "csv", tmp_path, **kw)  # type: ignore[arg-type]
        with pytest.raises(TypeError):
            export_run(conn, ref, "csv", tmp_path, since="1")  # type: ignore[arg-type]
    assert not any(tmp_path.iterdir())


def test_open_bounds_given_as_numbers_export_the_whole_run(run_db: Path, tmp_path: Path) -> None:
    """A negative --since (before the run's start) and --until inf exclude nothing."""
    result = cli(run_db, tmp_path, "--since", "-5", "--until", "inf", "--json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["range"] == {"since_s": -5.0, "until_s": None}
    rows = {Path(f["path"]).name: f["rows"] for f in doc["files"]}
    assert rows["signals.csv"] == 40 and rows["actions.csv"] == 1


def test_json_and_text_summaries_give_the_range(run_db: Path, tmp_path: Path) -> None:
    t = dts(run_db)
    result = cli(run_db, tmp_path / "a", "--since", repr(t[11]), "--until", repr(t[29]), "--json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["range"] == {"since_s": t[11], "until_s": t[29]}
    rows = {Path(f["path"]).name: f["rows"] for f in doc["files"]}
    assert rows["signals.csv"] == 19
    whole = json.loads(cli(run_db, tmp_path / "b", "--json").stdout)
    assert whole["range"] == {"since_s": None, "until_s": None}
    text = cli(run_db, tmp_path / "c", "--since", "0.1")
    assert text.exit_code == 0 and "(dt_s 0.1 .. … s)" in text.stdout.splitlines()[0]


def test_a_range_without_samples_exports_empty_tables_with_a_note(
    run_db: Path, tmp_path: Path
) -> None:
    for fmt in FORMATS:
        result = cli(run_db, tmp_path / fmt, "--since", "100", "--until", "200", "-f", fmt)
        assert result.exit_code == 0, result.output
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("note: no samples in dt_s 100 .. 200 s")
        assert "0.000 .. 0.39" in lines[0]  # where the run's samples are
        directory = tmp_path / fmt / RUN
        for stem in ("signals", "specs", "actions"):
            assert rows_of(directory / f"{stem}.{EXTENSIONS[fmt]}", fmt) == []
