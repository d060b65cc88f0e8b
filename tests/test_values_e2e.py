"""Promise 8 end to end: hard values go through pollers, detector, writer and queries
unchanged."""

from __future__ import annotations

import math
import struct
from collections.abc import Iterator
from contextlib import closing
from itertools import cycle
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from qcodes.instrument import Instrument
from qcodes.validators import Arrays, Bool, Enum, Ints, Numbers, Strings

from trajmon import ChannelSpec, MonitorConfig, Recorder
from trajmon.queries import connect_readonly, list_actions, resolve_run
from trajmon.windows import window_rows

NAN_PAYLOAD = struct.unpack(">d", bytes.fromhex("7ff8000000c0ffee"))[0]
SEQUENCES: dict[str, tuple[Any, Any, list[Any]]] = {
    # name: (validator, kind of value, values cycled through, one per read)
    "floats": (
        Numbers(),
        "float",
        [math.nan, math.inf, -math.inf, 5e-324, 1.7976931348623157e308, -0.0, NAN_PAYLOAD],
    ),
    "npfloat": (Numbers(), "float", [np.float32(0.1), np.float64(-2.5)]),
    "ints": (Ints(), "int", [2**53 + 1, -(2**63), 2**63 - 1, np.int64(-7)]),
    "bools": (Bool(), "bool", [True, False, np.bool_(True)]),
    "text": (Strings(), "str", ["quote \" and '", "unicode µm Å ✓", "DROP TABLE runs; --"]),
    "enum": (Enum("scan", "idle"), "str", ["scan", "idle"]),
    "array": (Arrays(shape=(3,)), "array", [np.array([1.0, math.nan, -0.0]), np.arange(3.0)]),
}


class Odd(Instrument):
    """Returns each value of its sequences in turn; records what it returned."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.returned: dict[str, list[Any]] = {key: [] for key in SEQUENCES}
        for key, (vals, _, values) in SEQUENCES.items():
            source = cycle(values)

            def get(key: str = key, source: Any = source) -> Any:
                value = next(source)
                self.returned[key].append(value)
                return value

            self.add_parameter(key, get_cmd=get, set_cmd=False, vals=vals)


@pytest.fixture
def odd() -> Iterator[Odd]:
    instrument = Odd("odd")
    yield instrument
    instrument.close()


def same(a: Any, b: Any) -> bool:
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        a, b = np.asarray(a), np.asarray(b)
        return a.dtype == b.dtype and a.tobytes() == b.tobytes()
    if isinstance(a, float) and isinstance(b, float):
        return struct.pack(">d", a) == struct.pack(">d", b)
    return type(a) is type(b) and a == b


def plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    return value


async def test_hard_values_round_trip_exactly(db_path: Path, odd: Odd) -> None:
    specs = [
        ChannelSpec(label=key, source=f"odd.{key}", kind="spec" if i % 2 else "signal")
        for i, key in enumerate(SEQUENCES)
    ]
    config = MonitorConfig(
        run_name="values", db=db_path, interval_s=0.01, duration_s=0.3, channels=specs
    )
    summary = await Recorder(config, {"odd": odd}).run()
    assert summary.status == "completed" and summary.errors == 0
    with closing(connect_readonly(db_path)) as conn:
        ref = resolve_run(conn, "values")
        stored: dict[str, list[Any]] = {}
        for kind in ("signal", "spec"):
            for group in window_rows(conn, ref, kind, -1.0, 1e9):
                for row in group["rows"]:
                    for label, value in row["values"].items():
                        stored.setdefault(label, []).append(value)
        actions = list_actions(conn, ref)
    for key in SEQUENCES:
        returned = [plain(v) for v in odd.returned[key]]
        assert len(stored[key]) == len(returned) > 0, key
        for got, want in zip(stored[key], returned, strict=True):
            assert same(got, want), (key, got, want)
    # Actions carry the same exact values; NaN -> NaN (same payload or not) is no change.
    assert actions, "alternating specs produce actions"
    for act in actions:
        assert not same(act["old_value"], act["new_value"])
