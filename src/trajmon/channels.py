"""Channels and poll groups: what is read, from where, and how its values are typed.

A channel's value type is decided once, from the driver's validator, before the first read: the
storage column is typed by it and every value is coerced to it, so a float channel never turns
into text halfway through a run and queries can trust the column.
"""

from __future__ import annotations

import math
import numbers
import re
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction
from io import BytesIO
from typing import Any, Literal

import numpy as np

__all__ = [
    "INT64_MAX",
    "INT64_MIN",
    "RESERVED_COLUMNS",
    "Channel",
    "Kind",
    "PollGroup",
    "ValueType",
    "canonical_for",
    "decode_value",
    "encoder_for",
    "sql_type",
    "unique_name",
]

Kind = Literal["signal", "spec"]
ValueType = Literal["float", "int", "bool", "str", "array", "any"]

#: Columns every sample table has; a label may not shadow them.
RESERVED_COLUMNS = frozenset(
    {"sample_idx", "dt_s", "read_s", "segment_id", "rowid", "oid", "_rowid_"}
)

_SQL_TYPES: dict[str, str] = {
    "float": "REAL",
    "int": "INTEGER",
    "bool": "INTEGER",
    "str": "TEXT",
    "array": "BLOB",
    "any": "",
}
_NAN = struct.Struct(">d")
#: SQLite's INTEGER range: a larger int is stored as a tagged blob, and no index can exceed it.
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
_BIGINT_PREFIX = b"int:"
# Untyped ("any") columns tag what SQLite would otherwise conflate: bools with ints, raw bytes
# with the float blobs above.
_BOOL_TRUE, _BOOL_FALSE = b"bool:1", b"bool:0"
_BYTES_PREFIX = b"bytes:"
# A complex number: the tag, then its real and imaginary parts as big-endian doubles.
_COMPLEX_PREFIX = b"complex:"
_COMPLEX = struct.Struct(">dd")
# A tuple of arrays of different shapes (a QCoDeS MultiParameter) is one .npz archive.
_NPZ_MAGIC = b"PK\x03\x04"


@dataclass(frozen=True, slots=True)
class Channel:
    """One readable quantity, with the metadata the catalog records for it."""

    label: str
    kind: Kind
    source: str
    instrument: str
    group: str
    unit: str = ""
    value_type: ValueType = "any"
    vals: str | None = None
    tolerance_abs: float | None = None
    tolerance_rel: float | None = None
    #: The live QCoDeS parameter; not part of equality or the catalog.
    parameter: Any = field(default=None, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class PollGroup:
    """Channels read together on one absolute schedule, with their own ``sample_idx`` sequence."""

    name: str
    kind: Kind
    interval_s: float
    channels: tuple[Channel, ...]


def sql_type(value_type: ValueType) -> str:
    return _SQL_TYPES[value_type]


def _scalar(value: Any) -> Any:
    """numpy scalars become their Python equivalent, so sqlite3 can bind them."""
    if isinstance(value, np.generic):
        return value.item()
    return value


def _not_text(value: Any, kind: str) -> Any:
    """float() and int() parse text ("nan", "5"): a driver answering a string for a numeric
    channel is a fault to record (``bad_value``), not a number to guess."""
    if isinstance(value, str | bytes):
        raise TypeError(f"{value!r} is text, not {kind}")
    return value


def _encode_float(value: Any) -> Any:
    raw = _not_text(_scalar(value), "a number")
    number = float(raw)
    # SQLite stores NaN as NULL (and NULL means "read failed") and -0.0 as integer 0: keep the
    # exact bits of both instead.
    if number != number or (number == 0.0 and math.copysign(1.0, number) < 0):
        return _NAN.pack(number)
    if (number == math.inf or number == -math.inf) and raw != number:
        # Decimal("1e400") floats to inf, where int 2**1100 raises: a value beyond every
        # float is a bad_value either way, not an infinity the instrument never answered.
        raise OverflowError(f"{raw!r} is beyond every float")
    return number


def _encode_int(value: Any) -> Any:
    number = _not_text(_scalar(value), "an integer")
    if not isinstance(number, int):
        # int() truncates: 3.5 (a float, a Decimal, a Fraction) would be stored as 3.
        whole = int(number)
        if whole != number:
            raise ValueError(f"{number!r} is not an integer")
        number = whole
    number = int(number)
    if INT64_MIN <= number <= INT64_MAX:
        return number
    return _BIGINT_PREFIX + str(number).encode()


def _encode_bool(value: Any) -> Any:
    """0 or 1, from a boolean or a number that is 0 or 1 (a driver's 0/1 flag). Not from
    whatever is truthy: a raw answer ``b"0"`` (off), NaN or a flag reading 2 were all stored as
    1 (on), and a change between two of them was no action."""
    flag = _scalar(value)
    if isinstance(flag, bool):
        return 1 if flag else 0
    if isinstance(flag, numbers.Number):
        number: Any = flag  # an int, a float, a Decimal…: compared as itself
        if number in (0, 1):
            return 1 if number == 1 else 0
    raise ValueError(f"{flag!r} is not a boolean")


def _utf8(text: str) -> str:
    """SQLite text is UTF-8: a string with unpaired surrogates (bytes decoded with
    ``errors="surrogateescape"``) cannot be bound and would fail the whole commit."""
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise ValueError(f"not valid Unicode text ({exc.reason} at {exc.start})") from None
    return text


def _encode_str(value: Any) -> Any:
    value = _scalar(value)
    if isinstance(value, bytes):  # a raw instrument answer: UTF-8 text, or not text at all
        return value.decode("utf-8")
    return _utf8(str(value))


class _MixedText(ValueError):
    """numpy would turn ["a", 1] into ["a", "1"]: a value would come back changed."""


def _as_array(value: Any) -> np.ndarray:
    array = np.asarray(value)
    if array.dtype.kind in "US" and not isinstance(value, np.ndarray):
        text = str if array.dtype.kind == "U" else bytes
        if not all(isinstance(x, text) for x in np.asarray(value, dtype=object).flat):
            raise _MixedText("text mixed with other values is not an array")
    return array


def _encode_array(value: Any) -> Any:
    array = _as_array(value)
    buffer = BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def _encode_arrays(values: list[Any] | tuple[Any, ...]) -> bytes:
    """Arrays of different shapes (``MultiParameter``) as one ``.npz`` archive, no pickles."""
    arrays = [_as_array(v) for v in values]
    if any(a.dtype.hasobject for a in arrays):
        raise ValueError("object arrays cannot be stored without pickling")
    buffer = BytesIO()
    np.savez(buffer, *arrays)
    return buffer.getvalue()


def _encode_any(value: Any) -> Any:
    value = _scalar(value)
    if isinstance(value, bool):
        return _BOOL_TRUE if value else _BOOL_FALSE
    if isinstance(value, float):
        return _encode_float(value)
    if isinstance(value, int):
        return _encode_int(value)
    if isinstance(value, str):
        return _utf8(value)
    if isinstance(value, bytes):
        return _BYTES_PREFIX + value
    if isinstance(value, complex):
        return _COMPLEX_PREFIX + _COMPLEX.pack(value.real, value.imag)
    if isinstance(value, np.ndarray | list | tuple):
        # A MultiParameter's arrays, perhaps beside scalars ((x, trace) of a lock-in): as
        # text, numpy abbreviates an array past 1000 points ("[0., 1., ..., 1999.]").
        nested = (
            isinstance(value, list | tuple)
            and bool(value)
            and all(isinstance(v, np.ndarray | list | tuple) for v in value)
        ) or (
            isinstance(value, list | tuple)
            and any(isinstance(v, np.ndarray) for v in value)
            and all(isinstance(v, np.ndarray | np.number | int | float | complex) for v in value)
        )
        try:
            if nested and not isinstance(value, np.ndarray):  # (narrows the type)
                try:
                    return _encode_array(value)
                except ValueError:  # "inhomogeneous shape": one array per element instead
                    return _encode_arrays(value)
            return _encode_array(value)
        except _MixedText:  # kept as its text, like any other object
            pass
        except ValueError:
            # A list of scalars numpy can hold only as objects (a None among numbers, dicts,
            # ints past int64) or not at all (1 and [2, 3]): no .npy without pickles, so it is
            # kept as its text like any other object, not lost as a bad_value on every read.
            # An object array, alone or among arrays, stays refused.
            if nested or not isinstance(value, list | tuple):
                raise
    return _utf8(str(value))


_ENCODERS: dict[str, Callable[[Any], Any]] = {
    "float": _encode_float,
    "int": _encode_int,
    "bool": _encode_bool,
    "str": _encode_str,
    "array": _encode_array,
    "any": _encode_any,
}


def encoder_for(value_type: ValueType) -> Callable[[Any], Any]:
    """Return the function that turns a read value into what its column stores (raises on junk)."""
    return _ENCODERS[value_type]


def _decode_blob(value_type: str, data: bytes) -> Any:
    if data.startswith(b"\x93NUMPY") and value_type in ("array", "any"):
        return np.load(BytesIO(data), allow_pickle=False)
    if value_type == "any" and data.startswith(_NPZ_MAGIC) and len(data) > _NAN.size:
        with np.load(BytesIO(data), allow_pickle=False) as archive:
            return tuple(archive[f"arr_{i}"] for i in range(len(archive.files)))
    if value_type == "any" and data in (_BOOL_TRUE, _BOOL_FALSE):
        return data == _BOOL_TRUE
    if value_type == "any" and data.startswith(_BYTES_PREFIX):
        return data[len(_BYTES_PREFIX) :]
    if (
        value_type == "any"
        and data.startswith(_COMPLEX_PREFIX)
        and len(data) == len(_COMPLEX_PREFIX) + _COMPLEX.size
    ):
        return complex(*_COMPLEX.unpack_from(data, len(_COMPLEX_PREFIX)))
    if data.startswith(_BIGINT_PREFIX) and value_type in ("int", "any"):
        return int(data[len(_BIGINT_PREFIX) :])
    if len(data) == _NAN.size and value_type in ("float", "any"):
        return _NAN.unpack(data)[0]
    return data


def decode_value(value_type: ValueType | str, stored: Any) -> Any:
    """Inverse of :func:`encoder_for`; ``None`` (a failed read) stays ``None``."""
    if stored is None:
        return None
    if isinstance(stored, bytes):
        return _decode_blob(value_type, stored)
    if value_type == "bool":
        return bool(stored)
    if value_type == "float":
        return float(stored)
    return stored


def canonical_for(value_type: ValueType) -> Callable[[Any], Any]:
    """The value a read becomes once stored and read back (``decode_value`` of the encoding):
    what change detection compares, so an action is a change of the stored value — never of a
    value's Python type (``5`` then ``"5"`` in a text column), and never from a read the column
    cannot hold (stored as NULL, a gap). Raises like the encoder on such a value. Objects an
    untyped column stores as text stay themselves."""
    encode = _ENCODERS[value_type]

    def canonical(value: Any) -> Any:
        stored = encode(value)
        if type(stored) is str and value_type == "any" and not isinstance(value, str):
            # Stored as its str() (a dict): compared as the object it is, so a
            # dict that lists the same items in another order is not an action. A list kept
            # as text (numbers mixed with text) is its text: as a list, numpy would compare
            # ["a", 1] equal to the array ["a", "1"].
            return stored if isinstance(value, list | tuple) else _scalar(value)
        return decode_value(value_type, stored)

    return canonical


def unique_name(base: str, taken: Callable[[str], bool], suffix: Callable[[int], str]) -> str:
    """``base``, or the first of ``base + suffix(2)``, ``base + suffix(3)``… not ``taken``: how a
    starter file's labels, CSV headers, export file names and netCDF variables stay unique
    (each with its own suffix and its own idea of taken, e.g. case-insensitive)."""
    out, n = base, 1
    while taken(out):
        n += 1
        out = base + suffix(n)
    return out


# No control characters, no line/paragraph separators (they break tables and CSV headers), no
# unpaired surrogates (not UTF-8: SQLite cannot take them as a column name).
_LABEL_OK = re.compile(r"^[^\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]+$")


def check_label(label: str) -> str:
    """Labels become column names; refuse what cannot be one, accept any printable text."""
    text = label.strip()
    if not text or not _LABEL_OK.match(text):
        raise ValueError(
            f"invalid channel label {label!r}: empty, or has control characters, line"
            " separators or unpaired surrogates"
        )
    if len(text) > 200:
        raise ValueError(f"invalid channel label {label!r}: longer than 200 characters")
    if text.lower() in RESERVED_COLUMNS:
        raise ValueError(f"invalid channel label {label!r}: reserved column name")
    return text


def is_number(value: Any) -> bool:
    return isinstance(value, int | float | np.integer | np.floating) and not isinstance(
        value, bool | np.bool_
    )


def numeric_delta(old: Any, new: Any) -> float | None:
    """new - old where both are plain numbers (booleans excluded: their change has no size).

    Ints are subtracted exactly, then rounded (``2**60 + 1`` after ``2**60`` is 1.0), also
    from a finite float (``2**53 + 1`` after ``2.0**53`` is 1.0, where ``int - float`` rounds
    the int first and gives 0.0); a difference beyond every float (ints past 1.8e308) has no
    delta."""
    if is_number(old) and is_number(new):
        a, b = _scalar(old), _scalar(new)
        try:
            if isinstance(a, int) != isinstance(b, int) and math.isfinite(a) and math.isfinite(b):
                delta = float(Fraction(b) - Fraction(a))
            else:
                delta = float(b - a)
        except OverflowError:
            return None
        return delta if not math.isnan(delta) else None
    return None
