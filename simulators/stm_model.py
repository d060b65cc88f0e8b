"""A small physical model of a scanning tunnelling microscope, advanced by an injected clock.

The model exists so that trajmon can be exercised end to end without hardware: the signals must
react to the specs the way a real STM does (the current follows the bias, the Z feedback pulls the
current back to the setpoint, the tip wanders over the frame while scanning), otherwise an action
detector could pass tests that a real instrument would fail.

Time is never read implicitly: every query first integrates the state from the previous query up
to ``clock()`` in fixed sub-steps. With a fake clock and a fixed seed the same query times give
the same values, which is what makes simulator-based tests reproducible.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Sequence
from typing import NamedTuple

import numpy as np

__all__ = [
    "G_TUNNEL",
    "KAPPA",
    "MAX_BIAS_V",
    "MAX_SETPOINT_A",
    "SIGNAL_NAMES",
    "STMModel",
    "ScanFrame",
    "f32",
    "float32_setting",
]

KAPPA = 1.0e10
"""Inverse decay length of the tunnelling barrier (1/m); ~4 eV work function."""
G_TUNNEL = 2 * 7.748091729e-5
"""Contact conductance (S): with KAPPA this gives ~95 pA at 0.1 V and a 6 Å gap."""
MAX_BIAS_V = 10.0
"""Largest bias magnitude the controller accepts (V)."""
MAX_SETPOINT_A = 1e-6
"""Largest current setpoint the controller accepts (A)."""

SIGNAL_NAMES: tuple[str, ...] = (
    "Current (A)",
    "Input 1 (V)",
    "Input 2 (V)",
    "Bias (V)",
    "X (m)",
    "Y (m)",
    "Z (m)",
)
"""Signal list as served by Signals.NamesGet; the driver looks up Current, Z and Bias by name."""

_LATTICE_M = 0.4e-9
_CORRUGATION_M = 30e-12
_TERRACE_WIDTH_M = 40e-9
_STEP_HEIGHT_M = 0.2e-9
_MIN_GAP_M = 0.5e-10
_PREAMP_V_PER_A = 1.0e9
_INPUT_V = 10.0  # an analog input's range: the preamplifier output saturates there (10 nA)


def f32(value: float) -> float:
    """Round to the nearest float32, the precision of every float on the Nanonis wire."""
    return float(np.float32(value))


def float32_setting(name: str, value: float, *, positive: bool = False) -> float:
    """A setting as the controller keeps it (float32), refused when float32 cannot hold it:
    numpy would only warn and store inf (or 0 for a tiny gain, and divide by it next)."""
    with np.errstate(over="ignore", under="ignore"):
        stored = float(np.float32(value))
    if not math.isfinite(stored) or (positive and stored <= 0.0):
        kind = "a positive float32" if positive else "a finite float32"
        raise ValueError(f"{name} must be {kind}, got {value}")
    return stored


class ScanFrame(NamedTuple):
    """Scan frame as in Scan.FrameGet: centre and size in metres, angle in degrees."""

    center_x: float
    center_y: float
    width: float
    height: float
    angle: float


class STMModel:
    """Tip over a corrugated, terraced surface with a logarithmic integral Z controller.

    Physics (see docs/simulators.md): ``I = V·G·exp(-2κ·gap)`` with ``gap = z - h(x, y) - drift``;
    while the feedback is on, each sub-step moves z so that ``ln(|I|/setpoint)`` decays with rate
    ``2κ·i_gain`` (integrated exactly, so it is stable for any gain and step). All methods take
    the lock: the in-process QCoDeS instrument and the TCP server may share one model.
    """

    def __init__(
        self,
        seed: int = 0,
        clock: Callable[[], float] = time.monotonic,
        *,
        noise: bool = True,
        drift: bool = True,
        step_s: float = 1e-3,
        max_steps: int = 1000,
        line_time_s: float = 0.2,
        lines_per_frame: int = 32,
    ) -> None:
        self._clock = clock
        self._rng = np.random.default_rng(seed)
        self._lock = threading.RLock()
        self._step_s = step_s
        self._max_steps = max_steps
        self._line_time_s = line_time_s
        self._lines = lines_per_frame
        self._noise_rel = 0.03 if noise else 0.0
        self._noise_abs = 1e-12 if noise else 0.0
        self._drift_on = drift
        # Specs (float32-representable so the wire round trip is exact).
        self._bias = f32(0.1)
        self._setpoint = f32(100e-12)
        self._feedback_on = True
        self._p_gain = f32(6e-12)
        self._time_constant = f32(2e-4)
        self._i_gain = f32(self._p_gain / self._time_constant)
        self._frame = ScanFrame(0.0, 0.0, f32(50e-9), f32(50e-9), 0.0)
        self._scan_status = 0
        self._scan_paused = False
        self._scan_up = True
        self._scan_t = 0.0
        # Hidden state.
        angle = float(self._rng.uniform(0.0, 2 * math.pi))
        self._drift_v_xy = (2e-11 * math.cos(angle), 2e-11 * math.sin(angle))
        self._drift_v_z = 2e-12 if drift else 0.0
        self._drift_xy = (0.0, 0.0)
        self._drift_z = 0.0
        self._n_rel = 0.0
        self._n_abs = 0.0
        self._n_in2 = 0.0
        self._x, self._y = 0.0, 0.0
        self._t0 = clock()
        self._t_last = self._t0
        self._t_sim = 0.0
        self._z = self._surface(self._x, self._y) + self._gap_for(self._setpoint)

    # ------------------------------------------------------------------ physics
    def _surface(self, x: float, y: float) -> float:
        xs, ys = x + self._drift_xy[0], y + self._drift_xy[1]
        k = 2 * math.pi / _LATTICE_M
        atoms = 0.5 * _CORRUGATION_M * (math.cos(k * xs) + math.cos(k * ys))
        terraces = _STEP_HEIGHT_M * math.floor((xs + 0.3 * ys) / _TERRACE_WIDTH_M + 0.5)
        return atoms + terraces + self._drift_z

    def _gap_for(self, current: float) -> float:
        """Gap at which the noiseless current equals ``current`` at the present bias."""
        ratio = abs(self._bias) * G_TUNNEL / abs(current)
        return math.log(ratio) / (2 * KAPPA) if ratio > 1.0 else _MIN_GAP_M

    def _true_current(self, surface: float | None = None) -> float:
        h = self._surface(self._x, self._y) if surface is None else surface
        gap = max(self._z - h, _MIN_GAP_M)
        return self._bias * G_TUNNEL * math.exp(-2 * KAPPA * gap)

    def _scan_position(self) -> tuple[float, float]:
        """Tip position for the scan time ``_scan_t``: forward/backward trace per line."""
        lt = self._line_time_s
        line_idx = int(self._scan_t // (2 * lt)) % self._lines
        phase = self._scan_t % (2 * lt)
        u_frac = phase / lt if phase < lt else 2.0 - phase / lt
        v_frac = (line_idx + 0.5) / self._lines
        if not self._scan_up:
            v_frac = 1.0 - v_frac
        fr = self._frame
        u, v = (u_frac - 0.5) * fr.width, (v_frac - 0.5) * fr.height
        a = -math.radians(fr.angle)  # Nanonis frame angles are clockwise
        return (
            fr.center_x + u * math.cos(a) - v * math.sin(a),
            fr.center_y + u * math.sin(a) + v * math.cos(a),
        )

    def _advance(self) -> None:
        """Integrate from the last query to ``clock()``; bounded work for huge jumps."""
        now = self._clock()
        span = now - self._t_last
        if span <= 0.0:
            return
        self._t_last = now
        n = min(max(1, math.ceil(span / self._step_s - 1e-9)), self._max_steps)
        dt = span / n
        draws = self._rng.standard_normal((n, 4))
        frame_s = 2 * self._line_time_s * self._lines
        k_fb = 2 * KAPPA * self._i_gain
        decay = 1.0 - math.exp(-k_fb * dt) if k_fb > 0 else 0.0
        for row in draws:
            self._t_sim += dt
            if self._drift_on:
                self._drift_z += self._drift_v_z * dt + 1e-12 * math.sqrt(dt) * row[0]
                self._drift_xy = (
                    self._drift_xy[0] + self._drift_v_xy[0] * dt,
                    self._drift_xy[1] + self._drift_v_xy[1] * dt,
                )
            if self._scan_status == 1:
                self._scan_t += dt
                if self._scan_t >= frame_s:  # continuous scan: next frame in the other direction
                    self._scan_t -= frame_s
                    self._scan_up = not self._scan_up
                self._x, self._y = self._scan_position()
            if self._feedback_on and self._bias != 0.0 and self._setpoint > 0.0:
                h = self._surface(self._x, self._y)
                error = math.log(abs(self._true_current(h)) / self._setpoint)
                # The tip stops at point contact: a setpoint the gap cannot give (1 µA at 1 mV)
                # would otherwise drive z through the sample without end, micrometres an hour.
                self._z = max(self._z + error / (2 * KAPPA) * decay, h + _MIN_GAP_M)
            self._n_rel, self._n_abs, self._n_in2 = float(row[1]), float(row[2]), float(row[3])

    def _measured_current(self) -> float:
        i_true = self._true_current()
        return i_true * (1.0 + self._noise_rel * self._n_rel) + self._noise_abs * self._n_abs

    # ------------------------------------------------------------------ reads
    def get_bias(self) -> float:
        with self._lock:
            self._advance()
            return self._bias

    def get_current(self) -> float:
        with self._lock:
            self._advance()
            return f32(self._measured_current())

    def get_z(self) -> float:
        with self._lock:
            self._advance()
            return f32(self._z)

    def get_setpoint(self) -> float:
        with self._lock:
            self._advance()
            return self._setpoint

    def get_feedback_on(self) -> bool:
        with self._lock:
            self._advance()
            return self._feedback_on

    def get_gains(self) -> tuple[float, float, float]:
        """(P gain in m, time constant in s, I gain in m/s), as ZCtrl.GainGet."""
        with self._lock:
            self._advance()
            return self._p_gain, self._time_constant, self._i_gain

    def get_scan_status(self) -> int:
        """1 while the scan is running, 0 when stopped or paused (Scan.StatusGet)."""
        with self._lock:
            self._advance()
            return 1 if self._scan_status == 1 else 0

    def get_scan_frame(self) -> ScanFrame:
        with self._lock:
            self._advance()
            return self._frame

    def get_position(self) -> tuple[float, float]:
        """Lateral tip position (m), float32-rounded."""
        with self._lock:
            self._advance()
            return f32(self._x), f32(self._y)

    def signal_names(self) -> list[str]:
        return list(SIGNAL_NAMES)

    def signal_values(self, indexes: Sequence[int]) -> list[float]:
        """Values of the signals at ``indexes`` at one instant (Signals.ValsGet)."""
        with self._lock:
            self._advance()
            current = self._measured_current()
            values = {
                "Current (A)": current,
                "Input 1 (V)": min(max(current * _PREAMP_V_PER_A, -_INPUT_V), _INPUT_V),
                "Input 2 (V)": 0.5 * math.sin(2 * math.pi * 0.2 * self._t_sim) + 0.01 * self._n_in2,
                "Bias (V)": self._bias,
                "X (m)": self._x,
                "Y (m)": self._y,
                "Z (m)": self._z,
            }
            out = []
            for index in indexes:
                if not 0 <= index < len(SIGNAL_NAMES):
                    raise IndexError(
                        f"signal index {index} out of range 0..{len(SIGNAL_NAMES) - 1}"
                    )
                out.append(f32(values[SIGNAL_NAMES[index]]))
            return out

    # ------------------------------------------------------------------ writes
    def set_bias(self, volts: float) -> None:
        if not math.isfinite(volts) or abs(volts) > MAX_BIAS_V:
            raise ValueError(f"bias {volts} V outside -10..10 V")
        with self._lock:
            self._advance()
            self._bias = f32(volts)

    def set_setpoint(self, amps: float) -> None:
        if not math.isfinite(amps) or not 0.0 < amps <= MAX_SETPOINT_A:
            raise ValueError(f"setpoint {amps} A outside (0, 1 µA]")
        with self._lock:
            self._advance()
            self._setpoint = f32(amps)

    def set_feedback_on(self, on: bool) -> None:
        with self._lock:
            self._advance()
            self._feedback_on = bool(on)

    def set_gains(
        self,
        p_gain: float | None = None,
        time_constant: float | None = None,
        i_gain: float | None = None,
    ) -> None:
        """Keep Nanonis' relation I = P/T coherent whatever subset is given.

        P and I win when given (T is recomputed, as the GUI does when the I gain is edited);
        a new time constant alone recomputes I.
        """
        with self._lock:
            self._advance()
            p = self._p_gain if p_gain is None else float32_setting("p_gain", p_gain, positive=True)
            if i_gain is not None:
                i = float32_setting("i_gain", i_gain, positive=True)
                t = float32_setting("time_constant (P/I)", p / i, positive=True)
            else:
                t = self._time_constant
                if time_constant is not None:
                    t = float32_setting("time_constant", time_constant, positive=True)
                i = float32_setting("i_gain (P/T)", p / t, positive=True)
            self._p_gain, self._time_constant, self._i_gain = p, t, i

    def scan_action(self, action: int, direction_up: bool = True) -> None:
        """Scan.Action: 0 start, 1 stop, 2 pause, 3 resume."""
        with self._lock:
            self._advance()
            if action == 0:
                self._scan_status, self._scan_paused = 1, False
                self._scan_t, self._scan_up = 0.0, bool(direction_up)
                self._x, self._y = self._scan_position()
            elif action == 1:
                self._scan_status, self._scan_paused, self._scan_t = 0, False, 0.0
            elif action == 2:
                if self._scan_status == 1:
                    self._scan_status, self._scan_paused = 0, True
            elif action == 3:
                if self._scan_paused:
                    self._scan_status, self._scan_paused = 1, False
            else:
                raise ValueError(
                    f"unsupported scan action {action} (0 start, 1 stop, 2 pause, 3 resume)"
                )

    def set_scan_frame(
        self,
        center_x: float | None = None,
        center_y: float | None = None,
        width: float | None = None,
        height: float | None = None,
        angle: float | None = None,
    ) -> None:
        """Replace the given fields of the frame; the others are kept."""
        with self._lock:
            self._advance()
            old = self._frame
            given = (center_x, center_y, width, height, angle)
            new = ScanFrame(
                *(
                    float32_setting(name, v) if v is not None else o
                    for name, v, o in zip(ScanFrame._fields, given, old, strict=True)
                )
            )
            if new.width <= 0 or new.height <= 0:
                raise ValueError(f"invalid scan frame {new}")
            self._frame = new
            if self._scan_status == 1:
                self._x, self._y = self._scan_position()
