"""Drivers for tests/test_review_instruments.py, loadable from a station file
(``type: review_drivers.Unreachable``): the tests directory is on ``sys.path`` under pytest, and
subprocesses get it through ``PYTHONPATH``."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

from qcodes.instrument import Instrument
from qcodes.parameters import Parameter, ParameterBase
from qcodes.validators import Arrays, Ints, OnOff

log = logging.getLogger("review_drivers")


class Unreachable(Instrument):
    """Like a VISA driver whose instrument is off: QCoDeS's ``VisaInstrument`` logs the
    failure with ``log.exception("Could not connect at …")`` (a traceback), then raises."""

    def __init__(self, name: str, address: str, **kwargs: Any) -> None:
        super().__init__(name, **kwargs)
        try:
            raise ConnectionRefusedError(f"connection refused at {address}")
        except ConnectionRefusedError:
            self.log.exception(f"Could not connect at {address}")
            raise


class Chatty(Instrument):
    """Loads fine, logging one warning on the way (old firmware, say)."""

    def __init__(self, name: str, **kwargs: Any) -> None:
        super().__init__(name, **kwargs)
        self.add_parameter("x", get_cmd=lambda: 1.0, set_cmd=False)
        log.warning("%s: firmware 1.2 is old", name)

    def get_idn(self) -> dict[str, str | None]:
        return {"vendor": "review", "model": "chatty", "serial": None, "firmware": None}


class ShortGetMany(Instrument):
    """A driver whose batched read answers one value fewer than it was asked for."""

    def __init__(self, name: str, **kwargs: Any) -> None:
        super().__init__(name, **kwargs)
        self.add_parameter("a", get_cmd=lambda: 1.0, set_cmd=False)
        self.add_parameter("b", get_cmd=lambda: 2.0, set_cmd=False)

    def get_many(self, params: Sequence[ParameterBase]) -> list[object]:
        return [p.get() for p in params][:-1]

    def get_idn(self) -> dict[str, str | None]:
        return {"vendor": "review", "model": "short", "serial": None, "firmware": None}


class GetManyParameter(Instrument):
    """An instrument with a *parameter* called ``get_many``: setting it is a command."""

    def __init__(self, name: str, **kwargs: Any) -> None:
        super().__init__(name, **kwargs)
        self.sets: list[object] = []
        self.add_parameter("get_many", get_cmd=lambda: 0, set_cmd=self.sets.append)
        self.add_parameter("a", get_cmd=lambda: 1.0, set_cmd=False)

    def get_idn(self) -> dict[str, str | None]:
        return {"vendor": "review", "model": "param", "serial": None, "firmware": None}


class Odd(Instrument):
    """Values a driver may answer that do not fit the obvious storage."""

    def __init__(self, name: str, **kwargs: Any) -> None:
        super().__init__(name, **kwargs)
        # A driver parsing SCPI with Decimal: 2.5 from an Ints parameter is not an integer.
        self.add_parameter("steps", get_cmd=lambda: Decimal("2.5"), set_cmd=False, vals=Ints())
        # A status list with a missing entry: no .npy without pickles.
        self.add_parameter("status", get_cmd=lambda: [1.0, None, 3.0], set_cmd=False)
        self.add_parameter("relay", get_cmd=lambda: "on", set_cmd=None, vals=OnOff())
        self.add_parameter("n", get_cmd=lambda: 3, set_cmd=None, vals=Ints(1, 10))
        self.add_parameter(
            "trace",
            parameter_class=Parameter,
            get_cmd=lambda: [0.0, 1.0, 2.0],
            set_cmd=False,
            vals=Arrays(shape=(self.n,)),
        )

    def get_idn(self) -> dict[str, str | None]:
        return {"vendor": "review", "model": "odd", "serial": None, "firmware": None}
