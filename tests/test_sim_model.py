"""STMModel: determinism under a seed and a fake clock, and the physics the detector relies on."""

from __future__ import annotations

import math
import threading

import pytest

from simulators.stm_model import SIGNAL_NAMES, STMModel, f32


class FakeTime:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _trace(seed: int, times: list[float]) -> list[tuple[float, ...]]:
    clock = FakeTime()
    model = STMModel(seed=seed, clock=clock)
    model.scan_action(0)
    out = []
    for t in times:
        clock.now = 100.0 + t
        out.append((model.get_current(), model.get_z(), *model.signal_values(range(7))))
    return out


def test_deterministic_under_seed_and_clock() -> None:
    times = [0.013, 0.1, 0.25, 0.25, 1.0, 3.7, 50.0]
    assert _trace(7, times) == _trace(7, times)
    assert _trace(7, times) != _trace(8, times)


def test_signal_names_contain_driver_names() -> None:
    names = STMModel(seed=0).signal_names()
    assert {"Current (A)", "Z (m)", "Bias (V)"} <= set(names)
    assert names == list(SIGNAL_NAMES)


def test_signal_values_match_direct_reads_at_one_instant() -> None:
    clock = FakeTime()
    model = STMModel(seed=3, clock=clock)
    clock.now += 0.5
    idx = {name: i for i, name in enumerate(model.signal_names())}
    current, z, bias = model.signal_values([idx["Current (A)"], idx["Z (m)"], idx["Bias (V)"]])
    assert (current, z, bias) == (model.get_current(), model.get_z(), model.get_bias())
    with pytest.raises(IndexError):
        model.signal_values([len(SIGNAL_NAMES)])


def test_feedback_converges_to_setpoint() -> None:
    clock = FakeTime()
    model = STMModel(seed=1, clock=clock, noise=False)
    model.set_setpoint(300e-12)
    clock.now += 0.5
    assert model.get_current() == pytest.approx(300e-12, rel=0.02)
    model.set_bias(0.8)  # the loop retracts the tip to restore the setpoint
    z_before = model.get_z()
    clock.now += 0.5
    assert model.get_current() == pytest.approx(300e-12, rel=0.02)
    assert model.get_z() > z_before


def test_feedback_off_holds_z_and_bias_scales_current() -> None:
    clock = FakeTime()
    model = STMModel(seed=2, clock=clock, noise=False, drift=False)
    model.set_feedback_on(False)
    z0, i0 = model.get_z(), model.get_current()
    clock.now += 2.0
    assert model.get_z() == z0
    model.set_bias(0.3)  # 3x the default 0.1 V
    assert model.get_current() == pytest.approx(3 * i0, rel=1e-5)
    assert model.get_z() == z0


def test_current_magnitude_at_default_gap() -> None:
    # ~100 pA at 0.1 V and a ~6 Å gap, the operating point the defaults are built around.
    model = STMModel(seed=0, clock=FakeTime(), noise=False)
    assert 50e-12 < model.get_current() < 200e-12
    gap = math.log(0.1 * 2 * 7.748091729e-5 / 100e-12) / 2e10
    assert 5e-10 < gap < 7e-10


def test_scan_moves_tip_and_stop_freezes_it() -> None:
    clock = FakeTime()
    model = STMModel(seed=0, clock=clock)
    assert model.get_scan_status() == 0
    start = model.get_position()
    clock.now += 1.0
    assert model.get_position() == start
    model.scan_action(0)
    assert model.get_scan_status() == 1
    seen = set()
    for _ in range(20):
        clock.now += 0.037
        seen.add(model.get_position())
    assert len(seen) == 20
    xs = [p[0] for p in seen]
    width = model.get_scan_frame().width
    assert max(xs) - min(xs) > 0.5 * width
    model.scan_action(2)  # pause
    paused = model.get_position()
    clock.now += 1.0
    assert model.get_scan_status() == 0 and model.get_position() == paused
    model.scan_action(3)  # resume
    assert model.get_scan_status() == 1
    model.scan_action(1)
    assert model.get_scan_status() == 0


def test_specs_are_float32_and_gains_coherent() -> None:
    model = STMModel(seed=0, clock=FakeTime())
    model.set_bias(0.123456789)
    assert model.get_bias() == f32(0.123456789)
    model.set_gains(p_gain=1e-11, i_gain=5e-8)
    p, t, i = model.get_gains()
    assert (p, i) == (f32(1e-11), f32(5e-8)) and t == f32(p / i)
    model.set_gains(time_constant=1e-3)
    p, t, i = model.get_gains()
    assert t == f32(1e-3) and i == f32(p / t)
    model.set_scan_frame(width=1e-7, angle=12.5)
    frame = model.get_scan_frame()
    assert frame.width == f32(1e-7) and frame.angle == 12.5 and frame.height == f32(50e-9)
    with pytest.raises(ValueError):
        model.set_setpoint(-1e-12)
    with pytest.raises(ValueError):
        model.set_gains(i_gain=0.0)
    with pytest.raises(ValueError):
        model.set_scan_frame(width=0.0)


@pytest.mark.parametrize(
    ("setter", "kwargs", "message"),
    [
        ("set_gains", {"i_gain": 1e-50}, "i_gain must be a positive float32"),  # rounds to 0
        ("set_gains", {"p_gain": 1e39}, "p_gain must be a positive float32"),  # float32 max 3.4e38
        ("set_gains", {"time_constant": 1e-46}, "time_constant must be a positive float32"),
        ("set_gains", {"p_gain": 1e38, "i_gain": 1e-38}, r"time_constant \(P/I\) must be"),
        ("set_gains", {"p_gain": 1e-38, "time_constant": 1e38}, r"i_gain \(P/T\) must be"),
        ("set_scan_frame", {"width": 1e39}, "width must be a finite float32"),
    ],
)
def test_settings_float32_cannot_hold_are_refused_and_change_nothing(
    setter: str, kwargs: dict[str, float], message: str
) -> None:
    """The controller keeps settings as float32: numpy would store inf (with only a warning)
    or round a tiny gain to 0 and divide by it next."""
    model = STMModel(seed=0, clock=FakeTime())
    before = (model.get_gains(), model.get_scan_frame())
    with pytest.raises(ValueError, match=message):
        getattr(model, setter)(**kwargs)
    assert (model.get_gains(), model.get_scan_frame()) == before


def test_thread_safe_concurrent_access() -> None:
    model = STMModel(seed=0)
    errors: list[BaseException] = []

    def worker(k: int) -> None:
        try:
            for j in range(200):
                model.set_bias(0.1 + 0.001 * ((j + k) % 7))
                model.signal_values([0, 3, 6])
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors
