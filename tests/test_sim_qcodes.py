"""SimulatedSTM: the driver's parameter names, units and validators, get_many, cross-thread sets."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
from qcodes.instrument import Instrument
from qcodes.validators import Bool, Enum, Numbers

from simulators.qcodes_sim import SimulatedSTM
from simulators.stm_model import STMModel, f32

EXPECTED_UNITS = {
    "bias": "V",
    "current": "A",
    "z_position": "m",
    "z_setpoint": "A",
    "z_controller_enabled": "",
    "z_p_gain": "m",
    "z_time_constant": "s",
    "z_i_gain": "m/s",
    "scan_status": "",
    "scan_frame_center_x": "m",
    "scan_frame_center_y": "m",
    "scan_frame_width": "m",
    "scan_frame_height": "m",
    "scan_frame_angle": "deg",
}


class FakeTime:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def stm() -> Iterator[SimulatedSTM]:
    inst = SimulatedSTM("sim_stm", model=STMModel(seed=0, clock=FakeTime()))
    yield inst
    Instrument.close_all()


def test_parameters_units_and_validators(stm: SimulatedSTM) -> None:
    for name, unit in EXPECTED_UNITS.items():
        assert getattr(stm.parameters[name], "unit", None) == unit, name
    assert isinstance(stm.z_controller_enabled.vals, Bool)
    assert isinstance(stm.scan_status.vals, Enum)
    assert isinstance(stm.bias.vals, Numbers)
    assert not stm.current.settable and not stm.z_position.settable
    assert stm.z_setpoint.settable and stm.scan_frame_angle.settable
    with pytest.raises(ValueError):
        stm.scan_status.set(2)
    with pytest.raises(ValueError):
        stm.bias.set(20.0)


def test_get_many_equals_individual_gets(stm: SimulatedSTM) -> None:
    # The fake clock does not move, so the model state is identical for both reads.
    params = [stm.parameters[name] for name in EXPECTED_UNITS]
    many = stm.get_many(params)
    assert many == [p.get() for p in params]
    assert many[list(EXPECTED_UNITS).index("z_controller_enabled")] is True


def test_get_many_returns_exceptions_per_entry(stm: SimulatedSTM) -> None:
    def broken() -> float:
        raise RuntimeError("sensor unplugged")

    stm.add_parameter("broken", get_cmd=broken)
    other = SimulatedSTM("other_stm", model=STMModel(seed=1, clock=FakeTime()))
    out = stm.get_many([stm.bias, stm.broken, other.bias, stm.scan_status])
    assert out[0] == f32(0.1) and out[3] == 0
    assert isinstance(out[1], RuntimeError) and "sensor unplugged" in str(out[1])
    assert isinstance(out[2], ValueError)


def test_set_from_another_thread_is_seen(stm: SimulatedSTM) -> None:
    done = threading.Event()

    def operator() -> None:
        stm.bias.set(0.75)
        stm.z_controller_enabled.set(False)
        stm.scan_status.set(1)
        stm.scan_frame_width.set(1.2e-7)
        stm.z_i_gain.set(6e-8)
        done.set()

    threading.Thread(target=operator).start()
    assert done.wait(10)
    assert stm.bias.get() == f32(0.75)
    assert stm.z_controller_enabled.get() is False
    assert stm.scan_status.get() == 1
    assert stm.scan_frame_width.get() == f32(1.2e-7)
    p, t, i = stm.z_p_gain.get(), stm.z_time_constant.get(), stm.z_i_gain.get()
    assert i == f32(6e-8) and t == f32(p / i)


def test_latency_once_per_hop() -> None:
    inst = SimulatedSTM("slow_stm", latency_s=0.05)
    try:
        t0 = time.monotonic()
        inst.get_many([inst.bias, inst.current, inst.z_position, inst.z_setpoint])
        batch = time.monotonic() - t0
        assert 0.05 <= batch < 0.15
    finally:
        inst.close()
