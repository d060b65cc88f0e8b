"""Value typing and encoding: every value a channel can produce survives a real SQLite column.

Each round trip goes through ``sqlite3`` with the column declared exactly as the writer declares it
(``sql_type(value_type)``), because column affinity is where values get silently changed: SQLite
stores NaN as NULL, and a REAL column stores integral floats as integers on disk.
"""

from __future__ import annotations

import math
import sqlite3
import struct
from collections.abc import Iterator
from enum import StrEnum
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from qcodes import validators as v

from trajmon.channels import (
    RESERVED_COLUMNS,
    ValueType,
    canonical_for,
    check_label,
    decode_value,
    encoder_for,
    numeric_delta,
    sql_type,
)
from trajmon.detection import values_equal
from trajmon.resolve import value_type_from_vals

ALL_TYPES: tuple[ValueType, ...] = ("float", "int", "bool", "str", "array", "any")


def _bits(x: float) -> bytes:
    return struct.pack(">d", x)


def _from_bits(hex_bits: str) -> float:
    return float(struct.unpack(">d", bytes.fromhex(hex_bits))[0])


NAN_WITH_PAYLOAD = _from_bits("7ff8000000000123")
NEGATIVE_NAN = _from_bits("fff8000000000000")


@pytest.fixture(scope="module")
def con(tmp_path_factory: pytest.TempPathFactory) -> Iterator[sqlite3.Connection]:
    """A file database (not :memory:), so values go through SQLite's on-disk record format."""
    path: Path = tmp_path_factory.mktemp("channels") / "values.db"
    connection = sqlite3.connect(path)
    for vt in ALL_TYPES:
        connection.execute(f'CREATE TABLE "t_{vt}" (id INTEGER PRIMARY KEY, v {sql_type(vt)})')
    connection.commit()
    yield connection
    connection.close()


def roundtrip(con: sqlite3.Connection, vt: ValueType, value: Any) -> Any:
    """Encode, insert, commit, select back and decode, as the writer and the queries do."""
    stored = None if value is None else encoder_for(vt)(value)
    cur = con.execute(f'INSERT INTO "t_{vt}" (v) VALUES (?)', (stored,))
    con.commit()
    (back,) = con.execute(f'SELECT v FROM "t_{vt}" WHERE id = ?', (cur.lastrowid,)).fetchone()
    return decode_value(vt, back)


def assert_same_float(got: Any, expected: float) -> None:
    """Same IEEE-754 bits: catches NaN payloads, the sign of zero and any rounding."""
    assert type(got) is float, f"{got!r} is a {type(got).__name__}, not a float"
    assert _bits(got) == _bits(expected), f"{got!r} != {expected!r}"


class Mode(StrEnum):
    CONSTANT_CURRENT = "constant current"
    CONSTANT_HEIGHT = "constant height"


# --------------------------------------------------------------------------------------------
# sql_type
# --------------------------------------------------------------------------------------------


def test_sql_types_give_the_intended_affinity(con: sqlite3.Connection) -> None:
    assert {vt: sql_type(vt) for vt in ALL_TYPES} == {
        "float": "REAL",
        "int": "INTEGER",
        "bool": "INTEGER",
        "str": "TEXT",
        "array": "BLOB",
        "any": "",
    }
    # A column without a declared type has BLOB affinity: SQLite converts nothing stored in it.
    con.execute('INSERT INTO "t_any" (v) VALUES (?)', ("1.5",))
    assert con.execute('SELECT typeof(v) FROM "t_any" ORDER BY id DESC LIMIT 1').fetchone() == (
        "text",
    )
    con.rollback()


# --------------------------------------------------------------------------------------------
# float
# --------------------------------------------------------------------------------------------

FLOATS: list[Any] = [
    pytest.param(math.nan, id="nan"),
    pytest.param(NAN_WITH_PAYLOAD, id="nan-payload"),
    pytest.param(NEGATIVE_NAN, id="nan-negative"),
    pytest.param(math.inf, id="inf"),
    pytest.param(-math.inf, id="-inf"),
    pytest.param(5e-324, id="min-subnormal"),
    pytest.param(1.7976931348623157e308, id="max"),
    pytest.param(-1.7976931348623157e308, id="-max"),
    pytest.param(-0.0, id="negative-zero"),
    pytest.param(0.0, id="zero"),
    pytest.param(3.0, id="integral"),
    pytest.param(-42.0, id="integral-negative"),
    pytest.param(2.0**53, id="integral-2**53"),
    pytest.param(0.1, id="0.1"),
    pytest.param(1.23456789e-10, id="small"),
]


@pytest.mark.parametrize("value", FLOATS)
@pytest.mark.parametrize("vt", ["float", "any"])
def test_float_round_trip_is_bit_exact(
    con: sqlite3.Connection, vt: ValueType, value: float
) -> None:
    assert_same_float(roundtrip(con, vt, value), value)


@pytest.mark.parametrize("vt", ["float", "any"])
def test_nan_is_not_stored_as_null(con: sqlite3.Connection, vt: ValueType) -> None:
    """NULL means "the read failed"; a NaN that was read must stay distinguishable from it."""
    stored = encoder_for(vt)(math.nan)
    assert stored is not None
    cur = con.execute(f'INSERT INTO "t_{vt}" (v) VALUES (?)', (stored,))
    (is_null,) = con.execute(
        f'SELECT v IS NULL FROM "t_{vt}" WHERE id = ?', (cur.lastrowid,)
    ).fetchone()
    con.commit()
    assert is_null == 0


NUMPY_FLOATS: list[Any] = [
    pytest.param(np.float32(0.1), float(np.float32(0.1)), id="float32"),
    pytest.param(np.float32(-0.0), -0.0, id="float32-negative-zero"),
    pytest.param(np.float32(np.inf), math.inf, id="float32-inf"),
    pytest.param(np.float64(-2.5), -2.5, id="float64"),
    pytest.param(np.float64(NAN_WITH_PAYLOAD), NAN_WITH_PAYLOAD, id="float64-nan-payload"),
]


@pytest.mark.parametrize(("value", "expected"), NUMPY_FLOATS)
@pytest.mark.parametrize("vt", ["float", "any"])
def test_numpy_floats_come_back_as_python_floats(
    con: sqlite3.Connection, vt: ValueType, value: Any, expected: float
) -> None:
    assert_same_float(roundtrip(con, vt, value), expected)


def test_float32_keeps_its_own_value_not_the_decimal_it_was_written_from(
    con: sqlite3.Connection,
) -> None:
    got = roundtrip(con, "float", np.float32(0.1))
    assert got == 0.10000000149011612
    assert got != 0.1


def test_float32_nan_comes_back_as_nan(con: sqlite3.Connection) -> None:
    got = roundtrip(con, "float", np.float32(np.nan))
    assert type(got) is float
    assert math.isnan(got)


@pytest.mark.parametrize(
    ("value", "expected"),
    [(12, 12.0), (-(2**53), -(2.0**53)), (np.int64(7), 7.0), (np.int32(-3), -3.0)],
)
def test_ints_in_a_float_column_become_floats(
    con: sqlite3.Connection, value: Any, expected: float
) -> None:
    assert_same_float(roundtrip(con, "float", value), expected)


@pytest.mark.parametrize("junk", ["abc", "", "1,5", None, object(), [1.0, 2.0]])
def test_float_encoder_refuses_junk(junk: Any) -> None:
    with pytest.raises((ValueError, TypeError)):
        encoder_for("float")(junk)


# --------------------------------------------------------------------------------------------
# int
# --------------------------------------------------------------------------------------------

INTS: list[Any] = [
    pytest.param(0, id="0"),
    pytest.param(-1, id="-1"),
    pytest.param(2**53 + 1, id="2**53+1"),
    pytest.param(-(2**63), id="int64-min"),
    pytest.param(2**63 - 1, id="int64-max"),
    pytest.param(2**63, id="int64-max+1"),
    pytest.param(-(2**63) - 1, id="int64-min-1"),
    pytest.param(2**64 + 3, id="2**64+3"),
    pytest.param(-(2**70), id="-(2**70)"),
    pytest.param(10**40 + 7, id="10**40+7"),
]


@pytest.mark.parametrize("value", INTS)
@pytest.mark.parametrize("vt", ["int", "any"])
def test_int_round_trip_is_exact(con: sqlite3.Connection, vt: ValueType, value: int) -> None:
    got = roundtrip(con, vt, value)
    assert type(got) is int
    assert got == value


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param(np.int64(-(2**63)), -(2**63), id="np.int64-min"),
        pytest.param(np.int64(2**53 + 1), 2**53 + 1, id="np.int64"),
        pytest.param(np.uint64(2**64 - 1), 2**64 - 1, id="np.uint64-max"),
        pytest.param(np.int8(-5), -5, id="np.int8"),
        pytest.param(4.0, 4, id="integral-float"),
        pytest.param(np.float64(-6.0), -6, id="integral-np.float64"),
    ],
)
@pytest.mark.parametrize("vt", ["int", "any"])
def test_numpy_ints_in_an_int_column(
    con: sqlite3.Connection, vt: ValueType, value: Any, expected: int
) -> None:
    got = roundtrip(con, vt, value)
    if vt == "any" and isinstance(value, float):
        assert_same_float(got, float(expected))  # untyped: a float stays a float
    else:
        assert type(got) is int
        assert got == expected


@pytest.mark.parametrize("junk", [1.5, -0.25, math.nan, math.inf, "abc", "1.5", None, object()])
def test_int_encoder_refuses_junk(junk: Any) -> None:
    with pytest.raises((ValueError, TypeError, OverflowError)):
        encoder_for("int")(junk)


# --------------------------------------------------------------------------------------------
# bool
# --------------------------------------------------------------------------------------------

BOOLS: list[Any] = [
    pytest.param(True, True, id="True"),
    pytest.param(False, False, id="False"),
    pytest.param(np.bool_(True), True, id="np.True_"),
    pytest.param(np.bool_(False), False, id="np.False_"),
]


@pytest.mark.parametrize(("value", "expected"), BOOLS)
@pytest.mark.parametrize("vt", ["bool", "any"])
def test_bool_round_trip_comes_back_as_bool(
    con: sqlite3.Connection, vt: ValueType, value: Any, expected: bool
) -> None:
    """True must not come back as 1: the detector treats True and 1 as different values."""
    got = roundtrip(con, vt, value)
    assert type(got) is bool
    assert got is expected


@pytest.mark.parametrize(("value", "expected"), [(1, True), (0, False), (np.int64(1), True)])
def test_bool_column_accepts_0_and_1(con: sqlite3.Connection, value: Any, expected: bool) -> None:
    assert roundtrip(con, "bool", value) is expected


@pytest.mark.parametrize("junk", ["x", "True", ""])
def test_bool_encoder_refuses_text(junk: str) -> None:
    with pytest.raises(ValueError):
        encoder_for("bool")(junk)


# --------------------------------------------------------------------------------------------
# str and enums
# --------------------------------------------------------------------------------------------

STRINGS: list[Any] = [
    pytest.param("", id="empty"),
    pytest.param("plain", id="plain"),
    pytest.param("Δz = 3 Å, µ±°", id="unicode"),
    pytest.param("emoji 🧪 and 中文", id="astral"),
    pytest.param('it\'s "quoted" `and` [bracketed]', id="quotes"),
    pytest.param("x'); DROP TABLE t; --", id="sql"),
    pytest.param("tab\there\nnewline\r\x1b[31mred\x7f", id="control-ish"),
    pytest.param("1.5", id="numeric-text"),
    pytest.param("  padded  ", id="padded"),
    pytest.param("int:12", id="looks-like-bigint-tag"),
]


@pytest.mark.parametrize("value", STRINGS)
@pytest.mark.parametrize("vt", ["str", "any"])
def test_str_round_trip_is_exact(con: sqlite3.Connection, vt: ValueType, value: str) -> None:
    got = roundtrip(con, vt, value)
    assert type(got) is str
    assert got == value


@pytest.mark.parametrize("vt", ["str", "any"])
def test_enum_members_are_stored_as_their_text(con: sqlite3.Connection, vt: ValueType) -> None:
    got = roundtrip(con, vt, Mode.CONSTANT_HEIGHT)
    assert type(got) is str
    assert got == "constant height"
    assert roundtrip(con, vt, np.str_("numpy text")) == "numpy text"


# --------------------------------------------------------------------------------------------
# arrays
# --------------------------------------------------------------------------------------------

ARRAYS: list[Any] = [
    pytest.param(np.array([1.0, np.nan, -np.inf, -0.0, 5e-324]), id="float64-nan"),
    pytest.param(np.array([0.1, 0.2], dtype=np.float32), id="float32"),
    pytest.param(np.array([2**63 - 1, -(2**63)], dtype=np.int64), id="int64"),
    pytest.param(np.array([1, 2, 3], dtype=np.int16), id="int16"),
    pytest.param(np.arange(6, dtype=np.uint8).reshape(2, 3), id="2d-uint8"),
    pytest.param(np.array([[1.5, 2.5], [3.5, 4.5]]).T, id="2d-fortran"),
    pytest.param(np.array([True, False, True]), id="bool"),
    pytest.param(np.zeros((0, 3)), id="empty-2d"),
    pytest.param(np.array(7.25), id="0-d"),
]


def assert_same_array(got: Any, expected: np.ndarray) -> None:
    assert isinstance(got, np.ndarray)
    assert got.dtype == expected.dtype
    assert got.shape == expected.shape
    assert got.tobytes() == np.ascontiguousarray(expected).tobytes()  # bit-exact, NaNs included


@pytest.mark.parametrize("value", ARRAYS)
@pytest.mark.parametrize("vt", ["array", "any"])
def test_array_round_trip_keeps_dtype_shape_and_bits(
    con: sqlite3.Connection, vt: ValueType, value: np.ndarray
) -> None:
    assert_same_array(roundtrip(con, vt, value), value)


@pytest.mark.parametrize("vt", ["array", "any"])
def test_lists_are_stored_as_arrays(con: sqlite3.Connection, vt: ValueType) -> None:
    assert_same_array(roundtrip(con, vt, [1.0, 2.0, 3.5]), np.array([1.0, 2.0, 3.5]))
    assert_same_array(roundtrip(con, vt, (1, 2)), np.array([1, 2]))


@pytest.mark.parametrize("value", [["a", 1], ("on", 2.5), [b"x", 3], [["a", "b"], ["c", 4]]])
def test_text_mixed_with_numbers_is_never_changed_into_all_text(
    con: sqlite3.Connection, value: Any
) -> None:
    """numpy makes ["a", 1] an array of ["a", "1"]: stored so, the 1 would come back as "1"
    and a spec going from one to the other would be no action. An array column refuses it
    (a bad_value row); an untyped one keeps its text, like any other object."""
    with pytest.raises(ValueError, match="text mixed with other values"):
        encoder_for("array")(value)
    assert roundtrip(con, "any", value) == str(value)
    canonical = canonical_for("any")  # what change detection compares
    assert not values_equal(canonical(["a", 1]), canonical(["a", "1"]))
    assert_same_array(roundtrip(con, "any", ["a", "1"]), np.array(["a", "1"]))


def test_array_encoder_refuses_object_arrays() -> None:
    """Pickled objects are never stored: allow_pickle stays off."""
    with pytest.raises(ValueError):
        encoder_for("array")(np.array([{"a": 1}, None], dtype=object))


# --------------------------------------------------------------------------------------------
# None = failed read
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("vt", ALL_TYPES)
def test_none_stays_none(con: sqlite3.Connection, vt: ValueType) -> None:
    assert decode_value(vt, None) is None
    assert roundtrip(con, vt, None) is None


# --------------------------------------------------------------------------------------------
# value_type_from_vals
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("vals", "expected"),
    [
        pytest.param(v.Numbers(), "float", id="Numbers"),
        pytest.param(v.Numbers(-10, 10), "float", id="Numbers-range"),
        pytest.param(v.Ints(), "int", id="Ints"),
        pytest.param(v.Ints(0, 3), "int", id="Ints-range"),
        pytest.param(v.PermissiveInts(), "int", id="PermissiveInts"),
        pytest.param(v.Multiples(divisor=4), "int", id="Multiples"),
        pytest.param(v.Bool(), "bool", id="Bool"),
        pytest.param(v.Enum(0, 1), "int", id="Enum(0,1)"),
        pytest.param(v.Enum(True, False), "bool", id="Enum(True,False)"),
        pytest.param(v.Enum("a", "b"), "str", id="Enum(a,b)"),
        pytest.param(v.Enum(0.5, 1), "float", id="Enum(0.5,1)"),
        pytest.param(v.Enum("a", 1), "any", id="Enum-mixed"),
        pytest.param(v.Strings(), "str", id="Strings"),
        pytest.param(v.Arrays(shape=(3,)), "array", id="Arrays"),
        pytest.param(v.Anything(), "any", id="Anything"),
        pytest.param(None, "any", id="None"),
    ],
)
def test_value_type_from_vals(vals: Any, expected: ValueType) -> None:
    assert value_type_from_vals(vals) == expected


# --------------------------------------------------------------------------------------------
# check_label
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "label",
    [
        pytest.param("", id="empty"),
        pytest.param("   ", id="blank"),
        pytest.param("a\x00b", id="nul"),
        pytest.param("a\nb", id="newline"),
        pytest.param("a\tb", id="tab"),
        pytest.param("a\rb", id="cr"),
        pytest.param("\x1b[31mred", id="escape"),
        pytest.param("del\x7f", id="del"),
        pytest.param("a\x85b", id="c1-next-line"),
        pytest.param("a\x9b31mb", id="c1-csi"),
        pytest.param("dt_s", id="dt_s"),
        pytest.param("DT_S", id="DT_S"),
        pytest.param(" sample_idx ", id="sample_idx-padded"),
        pytest.param("segment_id", id="segment_id"),
        pytest.param("read_s", id="read_s"),
        pytest.param("rowid", id="rowid"),
        pytest.param("x" * 201, id="too-long"),
    ],
)
def test_check_label_refuses(label: str) -> None:
    with pytest.raises(ValueError, match="invalid channel label"):
        check_label(label)


@pytest.mark.parametrize(
    "label",
    [
        pytest.param("Tunnel Current", id="spaces"),
        pytest.param('He said "hi"', id="double-quote"),
        pytest.param("it's", id="single-quote"),
        pytest.param("DROP TABLE x; --", id="sql"),
        pytest.param("select", id="keyword"),
        pytest.param("Δz (Å)", id="unicode"),
        pytest.param("a/b", id="slash"),
        pytest.param("[x] `y`", id="brackets"),
        pytest.param("dt_s2", id="reserved-prefix"),
        pytest.param("x" * 200, id="200-chars"),
    ],
)
def test_check_label_accepts(label: str) -> None:
    assert check_label(label) == label


def test_check_label_strips_surrounding_whitespace() -> None:
    assert check_label("  Bias  ") == "Bias"


def test_reserved_columns_cover_the_sample_table() -> None:
    assert {"sample_idx", "dt_s", "read_s", "segment_id"} <= RESERVED_COLUMNS


# --------------------------------------------------------------------------------------------
# numeric_delta
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        pytest.param(1, 3, 2.0, id="ints"),
        pytest.param(0.5, 0.25, -0.25, id="floats"),
        pytest.param(2, 0.5, -1.5, id="int-float"),
        pytest.param(np.int64(2), np.float32(0.5), -1.5, id="numpy"),
        pytest.param(-(2**40), 2**40, 2.0**41, id="big-ints"),
    ],
)
def test_numeric_delta_of_numbers_is_a_float(old: Any, new: Any, expected: float) -> None:
    delta = numeric_delta(old, new)
    assert type(delta) is float
    assert delta == expected


@pytest.mark.parametrize(
    ("old", "new"),
    [
        pytest.param(True, False, id="bools"),
        pytest.param(np.bool_(False), np.bool_(True), id="np-bools"),
        pytest.param(1, True, id="int-bool"),
        pytest.param(False, 1.0, id="bool-float"),
        pytest.param("a", "b", id="strings"),
        pytest.param("1", 2, id="str-int"),
        pytest.param(None, 1.0, id="none"),
        pytest.param(np.array([1.0]), np.array([2.0]), id="arrays"),
        pytest.param(math.nan, 1.0, id="nan"),
        pytest.param(math.inf, math.inf, id="inf-inf"),
    ],
)
def test_numeric_delta_is_none_without_a_size(old: Any, new: Any) -> None:
    assert numeric_delta(old, new) is None
