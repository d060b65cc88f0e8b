"""Review of the simulators as a user writing their own scenario and fault plan files meets them:
faults found and their fixes."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from simulators.faults import FaultPlanError, load_fault_plan
from simulators.operator import ScenarioError, load_scenario
from simulators.stm_model import SIGNAL_NAMES, STMModel
from trajmon.cli import app

HUGE = "1" + "0" * 400  # an int YAML reads fine and no float can hold


def _file(tmp_path: Path, text: str, name: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def _scenario(tmp_path: Path, entry: str) -> Path:
    return _file(tmp_path, f"name: mine\nchanges:\n  - {entry}\n", "s.yaml")


def _plan(tmp_path: Path, *entries: str, top: str = "") -> Path:
    body = "".join(f"  - {entry}\n" for entry in entries)
    return _file(tmp_path, f"{top}faults:\n{body}", "plan.yaml")


@pytest.mark.parametrize(
    ("entry", "complaint"),
    [
        (f"{{at_s: {HUGE}, spec: Bias, value: 0.2}}", "at_s must be a non-negative number"),
        (f"{{at_s: 1.0, spec: Bias, value: {HUGE}}}", "value must be a finite number"),
        (f"{{at_s: 1.0, spec: Scan Frame, value: {{angle: {HUGE}}}}}", "field angle: value"),
    ],
)
def test_an_integer_too_large_for_a_float_in_a_scenario_is_a_scenario_error(
    tmp_path: Path, entry: str, complaint: str
) -> None:
    """It used to escape as a bare OverflowError (math.isfinite on the int): a traceback from
    ``trajmon sim serve`` instead of the one line naming the entry."""
    with pytest.raises(ScenarioError, match=r"s\.yaml: changes\[0\]") as info:
        load_scenario(_scenario(tmp_path, entry))
    assert complaint in str(info.value)


@pytest.mark.parametrize(
    ("entry", "complaint"),
    [
        (f"{{at_s: {HUGE}, fault: drop}}", "at_s must be a finite number >= 0"),
        (f"{{at_s: 1, fault: hang, seconds: {HUGE}}}", "seconds must be a finite number >= 0"),
    ],
)
def test_an_integer_too_large_for_a_float_in_a_fault_plan_is_a_fault_plan_error(
    tmp_path: Path, entry: str, complaint: str
) -> None:
    with pytest.raises(FaultPlanError, match=r"plan\.yaml: faults\[0\]: ") as info:
        load_fault_plan(_plan(tmp_path, entry))
    assert complaint in str(info.value)


@pytest.mark.parametrize(
    ("entry", "advice"),
    [
        ("{at_s: 1.0, spec: Z Setpoint, value: 2e-10}", "(YAML reads 2e-10 as text: write 2.0e-10"),
        ("{at_s: 1.0, spec: Scan Frame, value: {width: 1e-7}}", "write 1.0e-7)"),
        ("{at_s: 1.0, spec: Scan Frame Angle, value: 1.0e30}", "write 1.0e+30)"),
        ("{at_s: '1.5', spec: Bias, value: 0.2}", "(a quoted number is text: write it without"),
    ],
)
def test_a_number_yaml_reads_as_text_says_how_to_write_it(
    tmp_path: Path, entry: str, advice: str
) -> None:
    """A complaint "value must be a finite number, got '2e-10'" contradicts the file as the
    user sees it: 2e-10 *is* a number to them; only YAML 1.1 reads it as text."""
    with pytest.raises(ScenarioError) as info:
        load_scenario(_scenario(tmp_path, entry))
    assert advice in str(info.value)
    assert "\n" not in str(info.value)


def test_a_word_is_not_taken_for_a_number(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError) as info:
        load_scenario(_scenario(tmp_path, "{at_s: 1.0, spec: Bias, value: nan}"))
    assert str(info.value).endswith("value must be a finite number, got 'nan'")


def test_a_fault_plan_time_yaml_reads_as_text_says_how_to_write_it(tmp_path: Path) -> None:
    advice = r"got '2e3' \(YAML reads 2e3 as text: write 2\.0e\+3\)"
    with pytest.raises(FaultPlanError, match=advice):
        load_fault_plan(_plan(tmp_path, "{at_s: 2e3, fault: drop}"))


@pytest.mark.parametrize(
    ("entry", "complaint"),
    [
        (
            "{at_s: 1, fault: outage, command: Signals.ValsGet}",
            "command does not apply to fault outage (it takes at_s, fault, seconds)",
        ),
        ("{at_s: 1, fault: outage, n: 3}", "n does not apply to fault outage"),
        ("{at_s: 1, fault: drop, seconds: 10}", "seconds does not apply to fault drop"),
        ("{at_s: 1, fault: error, seconds: 10}", "seconds does not apply to fault error"),
        ("{at_s: 1, fault: hang, message: slow}", "message does not apply to fault hang"),
    ],
)
def test_a_fault_plan_key_its_kind_does_not_use_is_refused(
    tmp_path: Path, entry: str, complaint: str
) -> None:
    """It used to be ignored: an 'outage of Signals.ValsGet' took the whole server away, and a
    'drop for 10 s' dropped a single request — a test exercising something else than written."""
    with pytest.raises(FaultPlanError, match=r"plan\.yaml: faults\[0\]: ") as info:
        load_fault_plan(_plan(tmp_path, entry))
    assert complaint in str(info.value)


def test_every_kind_takes_the_keys_the_docs_give_it(tmp_path: Path) -> None:
    steps = load_fault_plan(
        _plan(
            tmp_path,
            "{at_s: 1, fault: drop, n: 2, command: Bias.Get}",
            "{at_s: 2, fault: error, n: 2, command: Bias.Get, message: busy}",
            "{at_s: 3, fault: hang, n: 2, command: Bias.Get, seconds: 1}",
            "{at_s: 4, fault: outage, seconds: 1}",
        )
    )
    assert [s.fault for s in steps] == ["drop", "error", "hang", "outage"]


@pytest.mark.parametrize("message", ["", "~", "[a, b]", "off"])
def test_an_error_message_that_is_not_text_is_refused(tmp_path: Path, message: str) -> None:
    """``message:`` left empty was sent as the text 'None', ``message: off`` as 'False'."""
    with pytest.raises(FaultPlanError, match=r"faults\[0\]: message must be text"):
        load_fault_plan(_plan(tmp_path, f"{{at_s: 1, fault: error, message: {message}}}"))


def test_an_unknown_top_level_key_in_a_fault_plan_is_refused(tmp_path: Path) -> None:
    """A scenario refuses one; a fault plan used to play on without it."""
    path = _plan(tmp_path, "{at_s: 1, fault: drop}", top="outages: [{at_s: 2}]\n")
    with pytest.raises(FaultPlanError, match=r"plan\.yaml: unknown top-level key\(s\): outages"):
        load_fault_plan(path)


def test_an_outage_that_starts_during_another_is_refused(tmp_path: Path) -> None:
    """Played in order, the second outage only began when the first ended: the server was down
    from 1 s to 13 s, not to 11 s as written."""
    path = _plan(
        tmp_path, "{at_s: 3, fault: outage, seconds: 2}", "{at_s: 1, fault: outage, seconds: 10}"
    )
    with pytest.raises(FaultPlanError) as info:
        load_fault_plan(path)
    assert str(info.value) == (
        f"{path}: the outage at 3 s starts during the one at 1 s (server back at 11 s);"
        " merge them into one outage"
    )


def test_back_to_back_outages_and_faults_during_an_outage_are_fine(tmp_path: Path) -> None:
    steps = load_fault_plan(
        _plan(
            tmp_path,
            "{at_s: 1, fault: outage, seconds: 2}",
            "{at_s: 2, fault: drop}",
            "{at_s: 3, fault: outage, seconds: 1}",
        )
    )
    assert [(s.at_s, s.fault) for s in steps] == [(1, "outage"), (2, "drop"), (3, "outage")]


def test_sim_serve_refuses_a_knob_its_fault_does_not_use_in_one_line(tmp_path: Path) -> None:
    plan = _plan(tmp_path, "{at_s: 1, fault: outage, command: Bias.Get}")
    result = CliRunner().invoke(app, ["sim", "serve", "--port", "0", "--faults", str(plan)])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "command does not apply to fault outage" in lines[0], result.output


class _Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_an_unreachable_setpoint_leaves_the_tip_at_contact_not_through_the_sample() -> None:
    """1 µA at 1 mV (a typo for 1 nA, say) is more than point contact gives: the integral
    controller used to drive z down without end — hundreds of nm an hour, a Z trace no
    microscope shows — and Input 1 read thousands of volts."""
    clock = _Clock()
    model = STMModel(seed=3, clock=clock)
    clock.t = 1.0
    z_start = model.get_z()
    model.set_bias(0.001)
    model.set_setpoint(1e-6)
    z_index, in1_index = SIGNAL_NAMES.index("Z (m)"), SIGNAL_NAMES.index("Input 1 (V)")
    lowest, highest_input = z_start, 0.0
    for _ in range(600):  # ten minutes, read every second
        clock.t += 1.0
        values = model.signal_values(range(len(SIGNAL_NAMES)))
        lowest = min(lowest, values[z_index])
        highest_input = max(highest_input, abs(values[in1_index]))
    # At contact the tip sits 0.5 Å above the surface, which is within a nm of where it started.
    assert lowest > z_start - 1e-9
    assert highest_input <= 10.0
    # And it comes back: a reachable setpoint again gives its current within a second.
    model.set_bias(0.1)
    model.set_setpoint(1e-10)
    clock.t += 1.0
    assert model.get_current() == pytest.approx(1e-10, rel=0.2)
