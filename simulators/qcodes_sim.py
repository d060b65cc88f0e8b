"""An in-process QCoDeS instrument over :class:`~simulators.stm_model.STMModel` (no TCP).

Unit tests and benchmarks of trajmon's pollers should not pay for sockets, yet they must see the
same parameter names, units and validators as the real Nanonis driver so that configurations and
channel labels carry over unchanged. ``get_many`` mirrors the driver's one-hop multi-read.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from qcodes.instrument import Instrument
from qcodes.parameters import ParameterBase
from qcodes.validators import Bool, Enum, Numbers

from simulators.stm_model import STMModel

__all__ = ["SimulatedSTM"]

_FRAME_FIELDS = ("center_x", "center_y", "width", "height", "angle")


def _frame_accessors(
    model: STMModel, idx: int, field: str
) -> tuple[Callable[[], float], Callable[[float], None]]:
    def get() -> float:
        return model.get_scan_frame()[idx]

    def set_(value: float) -> None:
        model.set_scan_frame(**{field: value})

    return get, set_


class SimulatedSTM(Instrument):
    """Nanonis-like STM with the driver's parameter names; every spec parameter is settable.

    ``latency_s`` is slept once per hop (one get/set, or one whole ``get_many``), like a round
    trip to the controller.
    """

    def __init__(
        self,
        name: str,
        model: STMModel | None = None,
        seed: int = 0,
        latency_s: float = 0.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(name, **kwargs)
        self.model = model if model is not None else STMModel(seed=seed)
        self.latency_s = latency_s
        self._batch = threading.local()
        m = self.model

        def param(
            pname: str,
            unit: str,
            getter: Callable[[], Any],
            setter: Callable[[Any], None] | None = None,
            vals: Any = None,
            label: str = "",
        ) -> None:
            self.add_parameter(
                pname,
                label=label,
                unit=unit,
                get_cmd=self._hop(getter),
                set_cmd=self._hop(setter) if setter is not None else False,
                vals=vals,
            )

        # Labels, units and validators as in trajmon.drivers.nanonis (the model range-checks).
        param("bias", "V", m.get_bias, m.set_bias, Numbers(), "Bias")
        param("current", "A", m.get_current, label="Tunnel current", vals=Numbers())
        param("z_position", "m", m.get_z, label="Z position", vals=Numbers())
        param("z_setpoint", "A", m.get_setpoint, m.set_setpoint, Numbers(), "Z setpoint")
        param(
            "z_controller_enabled",
            "",
            m.get_feedback_on,
            m.set_feedback_on,
            Bool(),
            "Z controller on",
        )
        gains = m.get_gains
        param(
            "z_p_gain",
            "m",
            lambda: gains()[0],
            lambda v: m.set_gains(p_gain=v),
            Numbers(),
            "Z P gain",
        )
        param(
            "z_time_constant",
            "s",
            lambda: gains()[1],
            lambda v: m.set_gains(time_constant=v),
            Numbers(),
            "Z time constant",
        )
        param(
            "z_i_gain",
            "m/s",
            lambda: gains()[2],
            lambda v: m.set_gains(i_gain=v),
            Numbers(),
            "Z I gain",
        )
        param(
            "scan_status", "", m.get_scan_status, self._set_scan_status, Enum(0, 1), "Scan status"
        )
        for idx, field in enumerate(_FRAME_FIELDS):
            unit = "deg" if field == "angle" else "m"
            label = "Frame " + field.replace("center_", "center ").replace(" x", " X").replace(
                " y", " Y"
            )
            param(f"scan_frame_{field}", unit, *_frame_accessors(m, idx, field), Numbers(), label)

    def _hop(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        """Wrap ``fn`` with the simulated round-trip latency (skipped inside ``get_many``)."""

        def call(*args: Any) -> Any:
            if self.latency_s > 0 and not getattr(self._batch, "active", False):
                time.sleep(self.latency_s)
            return fn(*args)

        return call

    def _set_scan_status(self, value: int) -> None:
        self.model.scan_action(0 if value else 1)

    def get_many(self, params: Sequence[ParameterBase]) -> list[object]:
        """Read several parameters of this instrument in one hop.

        Each entry is the value, or the exception raised for that entry, so one failing channel
        does not cost the others their sample.
        """
        if self.latency_s > 0:
            time.sleep(self.latency_s)
        out: list[object] = []
        self._batch.active = True
        try:
            for p in params:
                try:
                    if p.root_instrument is not self:
                        raise ValueError(f"{p.full_name} does not belong to {self.name}")
                    out.append(p.get())
                except Exception as exc:
                    out.append(exc)
        finally:
            self._batch.active = False
        return out

    def get_idn(self) -> dict[str, str | None]:
        return {"vendor": "trajmon", "model": "SimulatedSTM", "serial": None, "firmware": None}
