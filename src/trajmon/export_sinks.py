"""Streaming table writers for exports: CSV, Parquet and netCDF, fed one chunk at a time.

Each sink receives columns of already-decoded Python values, one chunk (a few tens of thousands
of rows) at a time, and writes them out before the next chunk is read — so an export of tens of
millions of samples holds one chunk in memory, whatever the format:

* CSV: :mod:`csv` rows appended to the file;
* Parquet: one row group per chunk through :class:`pyarrow.parquet.ParquetWriter`;
* netCDF-4: an unlimited dimension grown by each chunk through :mod:`h5netcdf` (xarray cannot
  append along a dimension, so it only *reads* these files).

Files are written to ``<name>.partial`` and renamed when complete: a reader never mistakes an
interrupted export for a whole one.
"""

from __future__ import annotations

import contextlib
import csv
import io
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

import numpy as np

from .channels import INT64_MIN, unique_name
from .export_values import fits_int64, text_value
from .files import replacing

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer

__all__ = ["COLUMN_KINDS", "Column", "MetaValue", "Metadata", "Sink", "open_sink", "text_value"]

#: Column kinds after decoding: numbers, flags, strings, and ``text`` (anything else, as JSON).
ColumnKind = Literal["float", "int", "bool", "str", "text"]
#: A channel's column kind, by its ``value_type``: arrays and ``any`` are text in every format.
COLUMN_KINDS: dict[str, ColumnKind] = {"float": "float", "int": "int", "bool": "bool", "str": "str"}
_NC4_HIDDEN = "_nc4_non_coord_"
_NC_MAX_NAME = 255  # bytes: netCDF-C reads 256 (NC_MAX_NAME) without the final NUL
#: A file-level metadata value. Numbers stay numbers until a sink spells them: netCDF attributes
#: are typed (float64), Parquet key-value metadata is text only (the ``repr``, exact).
MetaValue = str | float
Metadata = Mapping[str, MetaValue]


@dataclass(slots=True)
class Column:
    """One output column: its name, kind, unit and descriptive attributes."""

    name: str
    kind: ColumnKind
    unit: str = ""
    attrs: dict[str, str] = field(default_factory=dict)
    has_nulls: bool = True  # netCDF only: whether a fill value is needed
    fill: int = INT64_MIN  # netCDF only: an int column's fill value (one no sample holds)


def csv_headers(columns: list[Column]) -> list[str]:
    """``label [unit]`` headers, made unique: a unitless label ``x [V]`` next to ``x`` in V,
    or a label ``dt_s [s]``, would repeat a header, and most CSV readers then silently drop or
    rename a column. A repeated header gets `` (2)``, `` (3)``… appended (never one another
    column has); the exact labels and units are in the catalog."""
    natural = [f"{c.name} [{c.unit}]" if c.unit else c.name for c in columns]
    reserved, used, out = set(natural), set[str](), []
    for header in natural:
        unique = header
        if header in used:  # numbered, never onto another column's natural header
            unique = unique_name(header, (used | reserved).__contains__, " ({})".format)
        used.add(unique)
        out.append(unique)
    return out


def _csv_cell(value: Any) -> Any:
    if value is None:
        return ""
    return text_value(value)


def _csv_float(text: str) -> str:
    """A float's ``repr``, but NaN as ``NaN``: the spelling every CSV reader takes for a number
    (polars reads a column holding ``nan`` as strings; pandas, R and numpy accept either)."""
    return "NaN" if text == "nan" else text


def _nc_text(value: str) -> str:
    """netCDF strings are C strings: HDF5 refuses an embedded NUL (the whole export failed),
    so it becomes U+FFFD, the replacement character."""
    return value.replace("\x00", "\ufffd") if "\x00" in value else value


def _nc_attr(value: MetaValue) -> Any:
    """Typed, unlike Parquet's: a number stays a number a reader can compute with."""
    return _nc_text(value) if isinstance(value, str) else np.float64(value)


class Sink(Protocol):
    def write(self, columns: list[list[Any]]) -> None: ...
    def close(self) -> None: ...
    def abort(self) -> None: ...


class _FileSink:
    """Writes to ``<name>.partial`` and renames it into place only once complete, so an
    interrupted export never leaves a file that looks finished."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.partial = path.with_name(path.name + ".partial")

    def _close_file(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Finish the file and rename it into place; if that fails (a full disk often shows
        only when the last buffer is flushed), the partial file goes, so a retry starts clean."""
        with replacing(self.path, self.partial):
            self._close_file()

    def abort(self) -> None:
        """Remove the partial file. Also called from a constructor that failed half-way, and
        while another error propagates: closing is best effort (a full disk can fail it too)
        and that first error is the one worth reporting."""
        try:
            with contextlib.suppress(Exception):
                self._close_file()
        finally:
            self.partial.unlink(missing_ok=True)


class CsvSink(_FileSink):
    """Header ``label [unit]``; empty cell = no value (a failed read); floats round-trip."""

    def __init__(self, path: Path, columns: list[Column]) -> None:
        super().__init__(path)
        self._kinds = [c.kind for c in columns]
        try:
            self._file = self.partial.open("w", newline="", encoding="utf-8")
            self._csv = csv.writer(self._file)
            self._csv.writerow(csv_headers(columns))
        except BaseException:
            self.abort()
            raise

    def write(self, columns: list[list[Any]]) -> None:
        cells = []
        for kind, values in zip(self._kinds, columns, strict=True):
            if kind == "float":  # the bulk of any export: skip the generic path
                texts = ["" if v is None else repr(v) for v in values]
                if "nan" in texts:  # rare: fixed up in a second pass, checked at C speed
                    texts = [_csv_float(t) for t in texts]
                cells.append(texts)
            elif kind in ("int", "str"):
                cells.append(["" if v is None else v for v in values])
            else:
                cells.append([_csv_cell(v) for v in values])
        self._csv.writerows(zip(*cells, strict=True))

    def _close_file(self) -> None:
        self._file.close()


class ParquetSink(_FileSink):
    """One row group per chunk; units and labels in each field's metadata."""

    def __init__(self, path: Path, columns: list[Column], metadata: Metadata) -> None:
        import pyarrow as pa  # type: ignore[import-untyped]
        import pyarrow.parquet as pq  # type: ignore[import-untyped]

        super().__init__(path)
        self._pa = pa
        types = {
            "float": pa.float64(),
            "int": pa.int64(),
            "bool": pa.bool_(),
            "str": pa.string(),
            "text": pa.string(),
        }
        fields = []
        for c in columns:
            meta = {"unit": c.unit, **c.attrs}
            fields.append(pa.field(c.name, types[c.kind], nullable=True, metadata=meta))
        self._kinds = [c.kind for c in columns]
        text = {k: v if isinstance(v, str) else repr(float(v)) for k, v in metadata.items()}
        self._schema = pa.schema(fields, metadata=text)
        try:
            self._writer = pq.ParquetWriter(self.partial, self._schema)
        except BaseException:
            self.abort()
            raise

    def write(self, columns: list[list[Any]]) -> None:
        arrays = []
        pa = self._pa
        for kind, values, f in zip(self._kinds, columns, self._schema, strict=True):
            if kind == "int":
                try:  # every value fits int64 unless a huge int was stored: convert in C
                    arrays.append(pa.array(values, type=f.type))
                    continue
                except (OverflowError, pa.ArrowInvalid):
                    values = [v if fits_int64(v) else None for v in values]
            elif kind == "text":
                values = [text_value(v) for v in values]
            arrays.append(pa.array(values, type=f.type))
        self._writer.write_table(self._pa.Table.from_arrays(arrays, schema=self._schema))

    def _close_file(self) -> None:
        self._writer.close()


class _GuardedFile(io.FileIO):
    """The netCDF file's bytes, handed to HDF5 as a Python file object.

    HDF5 keeps data it could not write (a full disk) and tries again when the file closes; when
    that fails too it is left with a file id nothing can close, and h5py crashes the interpreter
    at exit (h5py issue 914) — after trajmon has printed its error. So the first failed write
    is kept here and every later one dropped: HDF5 closes cleanly, and the sink raises the kept
    error and removes the half-written file.
    """

    failure: OSError | None = None

    def write(self, data: ReadableBuffer, /) -> int:
        if self.failure is None:
            try:
                return super().write(data)
            except OSError as exc:
                self.failure = exc
        return memoryview(data).nbytes

    def truncate(self, size: int | None = None, /) -> int:
        if self.failure is None:
            try:
                return super().truncate(size)
            except OSError as exc:
                self.failure = exc
        return self.tell() if size is None else size

    def check(self) -> None:
        if self.failure is not None:
            raise self.failure


class NetcdfSink(_FileSink):
    """A netCDF-4 file whose unlimited dimension is the ``index`` column (its coordinate).

    Floats use NaN for a missing value; ints and bools get a fill value only if the column has
    missing values (otherwise xarray would turn them into floats). Bools without gaps carry
    ``dtype="bool"``, which xarray decodes back to booleans.
    """

    def __init__(self, path: Path, columns: list[Column], index: str, attrs: Metadata) -> None:
        import h5netcdf  # type: ignore[import-untyped]
        import h5py  # type: ignore[import-untyped]

        super().__init__(path)
        self._dim = index
        self._vars: list[Any] = []
        self._kinds = [c.kind for c in columns]
        self._fills: list[Any] = []
        self._text_dtype = h5py.string_dtype()
        self._io = _GuardedFile(self.partial, "w+")
        self._file: Any = None
        try:
            self._file = h5netcdf.File(self._io, "w")
            self._file.dimensions = {index: None}
            self._file.attrs.update({k: _nc_attr(a) for k, a in attrs.items()})
            names = {index}  # the index column alone may have it: it is the coordinate
            for c in columns:
                self._add(c, index if c.name == index else _nc_name(c.name, names))
        except BaseException:
            self.abort()
            raise

    def _add(self, c: Column, name: str) -> None:
        fill: Any = None
        if c.kind == "float":
            dtype: Any = "f8"
        elif c.kind == "int":
            dtype, fill = "i8", (c.fill if c.has_nulls else None)
        elif c.kind == "bool":
            dtype, fill = "i1", (-1 if c.has_nulls else None)
        else:
            dtype = self._text_dtype
        var = self._file.create_variable(name, (self._dim,), dtype, fillvalue=fill)
        if c.unit:
            var.attrs["units"] = _nc_text(c.unit)
        if c.kind == "bool" and not c.has_nulls:
            var.attrs["dtype"] = "bool"
        var.attrs.update({k: _nc_text(a) for k, a in {"long_name": c.name, **c.attrs}.items()})
        self._vars.append(var)
        self._fills.append(fill)

    def write(self, columns: list[list[Any]]) -> None:
        if not columns or not columns[0]:
            return
        start = self._file.dimensions[self._dim].size
        stop = start + len(columns[0])
        self._file.resize_dimension(self._dim, stop)
        for var, kind, fill, values in zip(
            self._vars, self._kinds, self._fills, columns, strict=True
        ):
            if kind == "float":
                data: Any = np.array([math.nan if v is None else v for v in values], "f8")
            elif kind == "int":
                data = np.array([v if fits_int64(v) else fill for v in values], "i8")
            elif kind == "bool":
                data = np.array([fill if v is None else int(bool(v)) for v in values], "i1")
            elif kind == "str":
                data = np.array(
                    ["" if v is None else _nc_text(str(v)) for v in values], dtype=object
                )
            else:
                data = np.array([_nc_text(text_value(v) or "") for v in values], dtype=object)
            var[start:stop] = data
        self._io.check()

    def _close_file(self) -> None:
        try:
            if self._file is not None:
                self._file.close()
        finally:
            self._io.close()
        self._io.check()


def _nc_name(name: str, taken: set[str]) -> str:
    """A variable name every netCDF reader accepts, unique in the file.

    netCDF names may not contain ``/`` (the HDF5 group separator) or end in a space, and must
    start with a letter, digit, ``_`` or a non-ASCII character: HDF5 itself resolves ``.`` to
    the file's root group (so creating it fails), and netCDF-C refuses ``..``, ``-1`` or
    ``[A]``: such a name gets a leading ``_``. h5netcdf drops ``_nc4_non_coord_`` from any name
    it reads, so that becomes ``_nc4-non-coord_``. A name already taken, the dimension's
    included, gets ``_2``, ``_3``…; the ``label`` attribute keeps the original. netCDF-C reads
    names of up to 255 bytes: a longer one (a label of 200 non-ASCII characters) came back cut
    inside a character and netCDF4 could not open the file; it is cut here, between characters.
    """
    base = name.replace("/", "_").rstrip()
    first = base[:1]
    if not (first.isalnum() or first == "_" or not first.isascii()):
        base = "_" + base
    while _NC4_HIDDEN in base:  # a loop: replacing one occurrence can complete another
        base = base.replace(_NC4_HIDDEN, "_nc4-non-coord_")
    out, n = _nc_fit(base, _NC_MAX_NAME), 1
    while out in taken:
        n += 1
        out = _nc_fit(base, _NC_MAX_NAME - len(f"_{n}")) + f"_{n}"
    taken.add(out)
    return out


def _nc_fit(name: str, max_bytes: int) -> str:
    return name.encode("utf-8")[:max_bytes].decode("utf-8", "ignore").rstrip()


Format = Literal["csv", "parquet", "netcdf"]
EXTENSIONS: dict[str, str] = {"csv": "csv", "parquet": "parquet", "netcdf": "nc"}


def open_sink(
    fmt: Format, path: Path, columns: list[Column], *, index: str, metadata: Metadata
) -> Sink:
    if fmt == "csv":
        return CsvSink(path, columns)
    if fmt == "parquet":
        return ParquetSink(path, columns, metadata)
    return NetcdfSink(path, columns, index, metadata)
