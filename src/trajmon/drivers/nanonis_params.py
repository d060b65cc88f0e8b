"""What the Nanonis driver can read: one row per QCoDeS parameter, and the signal list entries.

A table rather than code, so a read-only parameter from a command the codec knows
(:data:`~trajmon.drivers.nanonis_protocol.COMMANDS`) is one line: the command, the position of
its value in the reply, and the Python type the wire value becomes. The driver
(:mod:`trajmon.drivers.nanonis`) groups parameters by command when it plans a read.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

from qcodes.validators import Bool, Enum, Numbers, Validator

__all__ = [
    "SIGNALS_GET",
    "SIGNAL_CHANNELS",
    "SPECS",
    "SPEC_BY_NAME",
    "Plan",
    "PlannedRequest",
    "Spec",
]

SIGNALS_GET = "Signals.ValsGet"

# Parameters backed by an entry of the controller's signal list (Signals.NamesGet), read together.
SIGNAL_CHANNELS: dict[str, str] = {"current": "Current (A)", "z_position": "Z (m)"}


class Spec(NamedTuple):
    """Where one parameter comes from: a command and the position of its value in the reply."""

    name: str
    label: str
    unit: str
    command: str
    slot: int  # position of the value in the reply
    kind: type  # float, int or bool: what the wire value is converted to
    doc: str

    @property
    def trajmon_kind(self) -> str:
        """A measured signal (the signal list's entries) or a setting the operator changes."""
        return "signal" if self.command == SIGNALS_GET else "spec"

    def validator(self) -> Validator[Any]:
        if self.kind is bool:
            return Bool()
        return Enum(0, 1) if self.kind is int else Numbers()


_SIG, _GAIN, _FRAME, _ONOFF = SIGNALS_GET, "ZCtrl.GainGet", "Scan.FrameGet", "ZCtrl.OnOffGet"
# fmt: off
SPECS: tuple[Spec, ...] = (
    Spec("bias", "Bias", "V", "Bias.Get", 0, float, "Tip-sample bias voltage."),
    Spec("current", "Tunnel current", "A", _SIG, 0, float, "Signal 'Current (A)'."),
    Spec("z_position", "Z position", "m", _SIG, 0, float, "Tip height, signal 'Z (m)'."),
    Spec("z_setpoint", "Z setpoint", "A", "ZCtrl.SetpntGet", 0, float, "Current setpoint."),
    Spec("z_controller_enabled", "Z controller on", "", _ONOFF, 0, bool, "Z feedback on."),
    Spec("z_p_gain", "Z P gain", "m", _GAIN, 0, float, "Z-controller proportional gain."),
    Spec("z_time_constant", "Z time constant", "s", _GAIN, 1, float, "Z time constant T."),
    Spec("z_i_gain", "Z I gain", "m/s", _GAIN, 2, float, "Z-controller integral gain P/T."),
    Spec("scan_status", "Scan status", "", "Scan.StatusGet", 0, int, "0 stopped, 1 running."),
    Spec("scan_frame_center_x", "Frame center X", "m", _FRAME, 0, float, "Frame center X."),
    Spec("scan_frame_center_y", "Frame center Y", "m", _FRAME, 1, float, "Frame center Y."),
    Spec("scan_frame_width", "Frame width", "m", _FRAME, 2, float, "Scan frame width."),
    Spec("scan_frame_height", "Frame height", "m", _FRAME, 3, float, "Scan frame height."),
    Spec("scan_frame_angle", "Frame angle", "deg", _FRAME, 4, float, "Angle, clockwise."),
)
# fmt: on
SPEC_BY_NAME = {spec.name: spec for spec in SPECS}


class PlannedRequest(NamedTuple):
    """One round trip of a plan; ``picks`` are (result position, reply index, converter)."""

    command: str
    args: tuple[Any, ...]
    picks: tuple[tuple[int, int, Callable[[Any], object]], ...]


class Plan(NamedTuple):
    """Precomputed requests for one tuple of parameters, so hot polls only do I/O and unpacking."""

    size: int
    requests: tuple[PlannedRequest, ...]
    errors: tuple[tuple[int, str], ...]
    signals: tuple[tuple[int, str], ...]  # (result position, signal name) of signal entries
