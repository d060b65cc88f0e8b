"""Exporting one run to CSV, Parquet or netCDF, in bounded memory, with units.

Layout, for a run named ``R`` exported to ``OUT`` (``EXT`` is ``csv``, ``parquet`` or ``nc``)::

    OUT/<safe R>/run.json         the run row (status, start, config, counts), each format's range
    OUT/<safe R>/channels.EXT     the channel catalog (label, kind, group, unit, type, source…)
    OUT/<safe R>/actions.EXT      the action events, old/new values as text, numeric delta
    OUT/<safe R>/errors.EXT       the monitor errors: one row per streak of failed reads
    OUT/<safe R>/<group>.EXT      one file per poll group: sample_idx, dt_s, read_s, channels…

A Parquet or netCDF file also stands without ``run.json``: its metadata names the run (and the
group) and gives the run's start, from which ``dt_s`` counts (:mod:`.export_meta`).

The export reads inside one read transaction, so it is a consistent snapshot even while the run
is still recording (rows committed later are not included), and it streams: sample rows are
fetched ``chunk_rows`` at a time in ``sample_idx`` order (the tables' primary key) and each
chunk is written before the next is read.

Run names are operator text and may contain ``/``, ``..``, quotes or anything printable: the
directory name is sanitized (:func:`safe_filename`) and checked to stay inside ``OUT``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sqlite3
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from .channels import INT64_MIN, decode_value, unique_name
from .export_meta import (
    ExportError,
    ExportResult,
    exports,
    run_directory,
    run_document,
    run_metadata,
)
from .export_range import DtRange, count_rows, dt_range, group_rows, sample_filter, streak_overlaps
from .export_sinks import (
    COLUMN_KINDS,
    EXTENSIONS,
    Column,
    ColumnKind,
    Format,
    MetaValue,
    Sink,
    open_sink,
)
from .export_values import (
    beyond_int64,
    block_rows,
    columns_of,
    decode_column,
    fetch_chunks,
    joined,
    netcdf_fills,
)
from .files import safe_filename
from .gcpause import gc_paused
from .queries import RunRef
from .schema import quote_ident
from .streaks import error_columns

__all__ = [
    "DEFAULT_CHUNK_ROWS",
    "MAX_CHUNK_ROWS",
    "ExportError",
    "ExportResult",
    "count_rows",
    "export_run",
    "safe_filename",
]

DEFAULT_CHUNK_ROWS = 50_000
#: Memory grows with the chunk; SQLite's fetchmany also takes no more than a C int.
MAX_CHUNK_ROWS = 1_000_000
_OWN_FILES = {"run", "channels", "actions", "errors"}
_NOT_NULL = {"channel_id", "group_id", "position"}
#: Points a reader of the file alone to the metadata key that holds the origin.
_DT_LONG_NAME = "seconds since the run's start (trajmon_run_start_utc)"


class _Exporter:
    def __init__(
        self,
        conn: sqlite3.Connection,
        ref: RunRef,
        fmt: Format,
        directory: Path,
        chunk_rows: int,
        progress: Callable[[int], None] | None,
        rng: DtRange,
    ) -> None:
        self.conn, self.ref, self.fmt, self.dir = conn, ref, fmt, directory
        self.chunk_rows, self.progress, self.rng = chunk_rows, progress, rng
        self.ext = EXTENSIONS[fmt]
        self.result = ExportResult(ref.run_name, fmt, directory, since=rng.since, until=rng.until)
        self.run_meta = {**run_metadata(conn, ref), **rng.metadata()}  # a slice says so
        self.meta: dict[str, MetaValue] = self.run_meta

    def path(self, stem: str) -> Path:
        return self.dir / f"{stem}.{self.ext}"

    def targets(self) -> dict[str, Path]:
        """Every file of the export, each name used once: a group named ``channels``, or two
        groups whose names sanitize alike, would otherwise overwrite another file. A group whose
        name is taken (by the run's own files or an earlier group; compared case-insensitively,
        as on macOS and Windows) gets ``group<id>-`` in front, then ``-2``, ``-3``… if needed."""
        stems = {stem: self.path(stem) for stem in ("channels", "actions", "errors")}
        taken = {stem.casefold() for stem in _OWN_FILES}
        for gid, name in self.groups():
            stem = safe_filename(name)
            if stem.casefold() in taken:
                stem = unique_name(
                    f"group{gid}-{stem}", lambda name: name.casefold() in taken, "-{}".format
                )
            taken.add(stem.casefold())
            stems[f"group:{gid}"] = self.path(stem)
        return stems

    def groups(self) -> list[tuple[int, str]]:
        rows = self.conn.execute(
            "SELECT group_id, name FROM poll_groups WHERE run_id = ? ORDER BY group_id",
            (self.ref.run_id,),
        )
        return [(int(r[0]), str(r[1])) for r in rows]

    def stream(
        self, path: Path, cols: list[Column], index: str, chunks: Any, key: str, total: int
    ) -> None:
        # A sink that fails to open, or to close, removes its partial file itself; one that
        # fails in between is aborted here. Nothing half-written is left for a retry to find.
        sink: Sink = open_sink(self.fmt, path, cols, index=index, metadata=self.meta)
        block = block_rows(self.chunk_rows, total)
        if self.fmt != "csv" and block > self.chunk_rows:  # see block_rows
            chunks = joined(chunks, block)
        n = 0
        try:
            for chunk in chunks:
                sink.write(chunk)
                n += len(chunk[0]) if chunk else 0
                if self.progress is not None and key.startswith("group:"):
                    self.progress(len(chunk[0]) if chunk else 0)
        except BaseException:
            sink.abort()
            raise
        sink.close()
        self.result.files.append(path)
        self.result.rows[path.name] = n

    def channels(self, path: Path) -> None:
        fields = (
            "channel_id", "label", "kind", "group_id", "position", "unit", "value_type", "vals",
            "source", "instrument", "tolerance_abs", "tolerance_rel",
        )  # fmt: skip
        kinds: dict[str, ColumnKind] = {
            "channel_id": "int", "group_id": "int", "position": "int",
            "tolerance_abs": "float", "tolerance_rel": "float",
        }  # fmt: skip
        cols = [Column(f, kinds.get(f, "str"), has_nulls=f not in _NOT_NULL) for f in fields]
        cols.insert(4, Column("group", "str"))
        sql = (
            f"SELECT {', '.join('c.' + f for f in fields[:4])}, g.name,"
            f" {', '.join('c.' + f for f in fields[4:])} FROM channels c JOIN poll_groups g"
            " ON g.run_id = c.run_id AND g.group_id = c.group_id WHERE c.run_id = ?"
            " ORDER BY c.channel_id"
        )
        self.rows_as_stored(path, cols, sql, "channel_id", (self.ref.run_id,))

    def errors(self, path: Path) -> None:
        """Why the gaps are there: a streak's first and latest failed read, and how many; of a
        range, the streaks that overlap it (one that began before it may explain its gaps)."""
        cols = [
            Column("error_idx", "int", has_nulls=False),
            Column("dt_s", "float", "s", has_nulls=False),
            Column("channel", "str"),
            Column("instrument", "str"),
            Column("error_type", "str", has_nulls=False),
            Column("message", "str", has_nulls=False),
            Column("reads", "int", has_nulls=False),
            Column("last_dt_s", "float", "s"),
            Column("last_message", "str"),
        ]
        sql = (
            "SELECT error_idx, dt_s, channel, instrument, error_type, message,"
            f" {error_columns(self.conn)} FROM monitor_errors WHERE run_id = ?1"
            f" AND {streak_overlaps(self.conn)} ORDER BY error_idx"
        )
        self.rows_as_stored(path, cols, sql, "error_idx", (self.ref.run_id, *self.rng.ends))

    def rows_as_stored(
        self, path: Path, cols: list[Column], sql: str, index: str, args: tuple[Any, ...]
    ) -> None:
        """A catalog table's rows, written as SQLite gives them."""
        chunks = (
            columns_of(rows, len(cols))
            for rows in fetch_chunks(self.conn, sql, args, self.chunk_rows)
        )
        (total,) = self.conn.execute(f"SELECT count(*) FROM ({sql})", args).fetchone()
        self.stream(path, cols, index, chunks, path.stem, total)

    def actions(self, path: Path) -> None:
        cols = [
            Column("action_idx", "int", has_nulls=False),
            Column("dt_s", "float", "s"),
            Column("sample_idx", "int", has_nulls=False),
            Column("prev_dt_s", "float", "s"),
            Column("detected_at_utc", "str"),
            Column("spec_label", "str"),
            Column("unit", "str"),
            Column("old_value", "text"),
            Column("new_value", "text"),
            Column("delta", "float"),
            Column("window_start_s", "float", "s"),
            Column("window_end_s", "float", "s"),
        ]
        sql = (
            "SELECT a.action_idx, a.dt_s, a.sample_idx, a.prev_dt_s, a.detected_at_utc,"
            " a.spec_label, c.unit, c.value_type, a.old_value, a.new_value, a.delta,"
            " a.window_start_s, a.window_end_s FROM actions a LEFT JOIN channels c"
            " ON c.run_id = a.run_id AND c.channel_id = a.channel_id WHERE a.run_id = ?"
            " AND a.dt_s BETWEEN ? AND ? ORDER BY a.action_idx"
        )
        args = (self.ref.run_id, *self.rng.ends)

        def decoded() -> Iterator[list[list[Any]]]:
            for rows in fetch_chunks(self.conn, sql, args, self.chunk_rows):
                out = []
                for r in rows:
                    vtype = r[7] or "any"
                    old, new = decode_value(vtype, r[8]), decode_value(vtype, r[9])
                    out.append((*r[:7], old, new, *r[10:]))
                yield columns_of(out, len(cols))

        (total,) = self.conn.execute(
            "SELECT count(*) FROM actions WHERE run_id = ? AND dt_s BETWEEN ? AND ?", args
        ).fetchone()
        self.stream(path, cols, "action_idx", decoded(), "actions", total)

    def group(self, gid: int, path: Path) -> None:
        g = self.conn.execute(
            "SELECT name, kind, interval_s, table_name FROM poll_groups"
            " WHERE run_id = ? AND group_id = ?",
            (self.ref.run_id, gid),
        ).fetchone()
        chans = self.conn.execute(
            "SELECT label, unit, value_type, source, kind FROM channels"
            " WHERE run_id = ? AND group_id = ? ORDER BY position",
            (self.ref.run_id, gid),
        ).fetchall()
        table = quote_ident(g["table_name"])
        labels = [quote_ident(c["label"]) for c in chans]
        types = [str(c["value_type"]) for c in chans]
        where, args = sample_filter(self.conn, self.ref, gid, self.rng)
        nulls, fills = [True] * len(chans), [INT64_MIN] * len(chans)
        if self.fmt == "netcdf" and chans:  # netCDF ints and bools: a fill only if needed
            nulls, fills = netcdf_fills(self.conn, table, labels, types, where, args)
        cols = [
            Column("sample_idx", "int", has_nulls=False),
            Column("dt_s", "float", "s", {"long_name": _DT_LONG_NAME}),
            Column("read_s", "float", "s", {"long_name": "duration of the read"}),
        ]
        for c, has_nulls, fill in zip(chans, nulls, fills, strict=True):
            cols.append(
                Column(
                    c["label"],
                    COLUMN_KINDS.get(c["value_type"], "text"),
                    c["unit"],
                    {"label": c["label"], "value_type": c["value_type"], "source": c["source"]},
                    has_nulls,
                    fill,
                )
            )
        sql = (
            f"SELECT sample_idx, dt_s, read_s{''.join(', ' + q for q in labels)}"
            f" FROM {table}{where} ORDER BY sample_idx"
        )
        lost = [0] * len(types)  # per channel: ints no int64 holds (CSV writes them exact)

        def decoded() -> Iterator[list[list[Any]]]:
            for rows in fetch_chunks(self.conn, sql, args, self.chunk_rows):
                columns = columns_of(rows, len(cols))
                for i, vtype in enumerate(types, start=3):
                    stored, columns[i] = columns[i], decode_column(vtype, columns[i])
                    if vtype == "int" and columns[i] is not stored:  # it held a blob
                        lost[i - 3] += beyond_int64(columns[i])
                yield columns

        self.meta = {
            **self.run_meta,
            "trajmon_group": g["name"],
            "trajmon_kind": g["kind"],
            "interval_s": float(g["interval_s"]),  # the sink spells it (Parquet: text)
        }
        if self.rng.whole:  # sample_idx has no holes: the last one gives the count, no scan
            (last,) = self.conn.execute(f"SELECT max(sample_idx) FROM {table}").fetchone()
            total = 0 if last is None else last + 1
        else:
            total = group_rows(self.conn, self.ref, gid, g["table_name"], self.rng)
        self.stream(path, cols, "dt_s", decoded(), f"group:{gid}", total)
        written_as = {"parquet": "null", "netcdf": "the fill value (read back as missing)"}
        for c, n in zip(chans, lost, strict=True):
            if n and self.fmt in written_as:  # as a failed read would be: say so
                self.result.warnings.append(
                    f"{path.name}: {n} value(s) of {c['label']!r} beyond int64 written as"
                    f" {written_as[self.fmt]}; a CSV export holds them exact"
                )


def export_run(
    conn: sqlite3.Connection,
    ref: RunRef,
    fmt: Format,
    out: str | os.PathLike[str],
    *,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    overwrite: bool = False,
    progress: Callable[[int], None] | None = None,
    since: float | None = None,
    until: float | None = None,
) -> ExportResult:
    """Write the run's samples, actions, errors, catalog and run document under ``out``.

    With ``since`` and/or ``until`` (seconds of ``dt_s``, as ``list_actions`` takes them), only
    part of the run: the samples and actions with ``since <= dt_s <= until``, the error streaks
    that overlap that range, the whole catalog; the files record the range.

    ``progress`` is called with the sample rows of each chunk as it is written. A notebook's
    slips are one-line exceptions, not a ``KeyError`` from deep inside: a run's name for
    ``ref`` (``TypeError``), an unknown ``fmt`` (``ValueError``), an ``out`` that is a file
    (:class:`ExportError`)."""
    if not isinstance(ref, RunRef):
        raise TypeError(f"ref must be a RunRef (resolve_run(conn, name)), not {ref!r}")
    if fmt not in EXTENSIONS:
        raise ValueError(f"fmt must be one of {', '.join(map(repr, EXTENSIONS))}, not {fmt!r}")
    if not 1 <= chunk_rows <= MAX_CHUNK_ROWS:
        raise ValueError(f"chunk_rows must be between 1 and {MAX_CHUNK_ROWS}")
    rng = dt_range(since, until)
    directory = run_directory(Path(out), ref.run_name)
    # One read transaction: a consistent snapshot of a live run (the caller's, if it has one:
    # the CLI looks the run up and counts its rows in the same snapshot).
    own_snapshot = not conn.in_transaction
    if own_snapshot:
        conn.execute("BEGIN")
    try:
        document = run_document(conn, ref)  # as of the snapshot: later, a live run read crashed
        document["export_range"] = rng.as_json()  # the files may hold only part of the run
        document["export_format"] = fmt  # whose range that is: run.json is shared (exports)
        ex = _Exporter(conn, ref, fmt, directory, chunk_rows, progress, rng)
        targets = ex.targets()
        # run.json is shared by the formats and always rewritten; data files are not.
        existing = [p for p in targets.values() if p.exists()]
        if existing and not overwrite:
            raise ExportError(
                f"{existing[0]} already exists ({len(existing)} file(s)); use --overwrite"
            )
        # Found only when moving the files in, one of them would fail the export half-replaced.
        if in_way := [p for p in (*existing, directory / "run.json") if p.is_dir()]:
            raise ExportError(f"{in_way[0]} is a directory, not a file an export may replace")
        made = not directory.exists()
        directory.mkdir(parents=True, exist_ok=True)
        # Every file is written into a hidden directory beside them and moved into place only
        # once all are complete: a failed export (disk full) leaves nothing of itself to stop
        # a retry, and an --overwrite that fails leaves the earlier export whole.
        staging = Path(tempfile.mkdtemp(prefix=".export-", dir=directory))
        try:
            staged = {key: staging / path.name for key, path in targets.items()}
            ex.channels(staged.pop("channels"))
            ex.actions(staged.pop("actions"))
            ex.errors(staged.pop("errors"))
            with gc_paused():  # millions of row tuples, none in a cycle (see gcpause)
                for key, path in staged.items():
                    ex.group(int(key.removeprefix("group:")), path)
            document["exports"] = exports(directory, ex.result, EXTENSIONS)
            text = json.dumps(document, indent=2, ensure_ascii=False, default=str) + "\n"
            (staging / "run.json").write_text(text, encoding="utf-8")
            ex.result.files.insert(0, staging / "run.json")
            for done in [*ex.result.files[1:], ex.result.files[0]]:  # run.json, the end, last
                os.replace(done, directory / done.name)
            staging.rmdir()
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            if made:  # nor the run's directory it made (left empty, it looks like an export)
                with contextlib.suppress(OSError):
                    directory.rmdir()
            raise
        ex.result.files = [directory / done.name for done in ex.result.files]
    finally:
        if own_snapshot:
            conn.execute("ROLLBACK")
    return ex.result
