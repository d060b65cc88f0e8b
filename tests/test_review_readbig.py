"""Reading recorded runs as an operator does on a full database: a run named as it looks (its
Unicode form is not something anyone can see), an unknown name close to the ones there, and a
window asked of a run that records no channels of that kind. Runs are recorded on a simulated
clock (``record_every_tick``), so nothing here depends on the machine's speed."""

from __future__ import annotations

import itertools
import json
import unicodedata
from pathlib import Path
from typing import Any

import pytest
from qcodes import validators as v
from qcodes.instrument import Instrument
from recordings import record_every_tick
from typer.testing import CliRunner

from simulators.qcodes_sim import SimulatedSTM
from trajmon import MonitorConfig
from trajmon.cli import app
from trajmon.config import ChannelSpec

runner = CliRunner()

NFC = unicodedata.normalize("NFC", "Café run")
NFD = unicodedata.normalize("NFD", "Café run")


def invoke(*args: str) -> Any:
    return runner.invoke(app, list(args))


def record_sim(db: Path, name: str, seed: int, duration_s: float = 0.3) -> None:
    """A short completed run of the simulator's default channels, every tick read."""
    stm = SimulatedSTM("stm", seed=seed)
    try:
        config = MonitorConfig(run_name=name, db=db, interval_s=0.1, duration_s=duration_s)
        assert record_every_tick(config, {"stm": stm}).status == "completed"
    finally:
        stm.close()


def one_line_error(result: Any) -> str:
    assert result.exit_code == 2, result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    return str(lines[0])


@pytest.fixture(scope="module")
def named_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    db = tmp_path_factory.mktemp("readbig") / "named.db"
    for seed, name in enumerate((NFC, "run-a", "run-ab", "RUN-X")):
        record_sim(db, name, seed)
    return db


@pytest.mark.parametrize("given", [NFD, "café RUN", "CAFÉ RUN", f"  {NFD} "])
def test_a_run_named_in_another_unicode_form_or_case_is_found(named_db: Path, given: str) -> None:
    """The name is looked up as it was typed: a run named ``Café run`` (é one character) asked
    for with ``e`` + combining accent (as a macOS file name or a paste gives it) was "unknown run
    'Café run'", the very name the run table shows, and so was ``CAFÉ RUN`` (SQLite folds only
    ASCII case)."""
    status = invoke("status", given, "--db", str(named_db), "--json")
    assert status.exit_code == 0, status.stderr
    assert json.loads(status.stdout)["run_name"] == NFC
    listed = invoke("actions", "list", "--run", given, "--db", str(named_db), "--json")
    assert listed.exit_code == 0, listed.stderr
    assert json.loads(listed.stdout)["run_name"] == NFC


def test_runs_that_differ_only_in_unicode_form_are_never_guessed(tmp_path: Path) -> None:
    """Run names are unique up to ASCII case only: two runs can look the same. Each one is
    found by its exact name; a name matching both only up to form or case is refused."""
    db = tmp_path / "twins.db"
    record_sim(db, NFC, 1)
    record_sim(db, NFD, 2)
    for name in (NFC, NFD):
        result = invoke("status", name, "--db", str(db), "--json")
        assert result.exit_code == 0, result.stderr
        assert json.loads(result.stdout)["run_name"] == name
    line = one_line_error(invoke("status", "CAFÉ RUN", "--db", str(db)))
    assert "is ambiguous" in line and ascii(NFC) in line and ascii(NFD) in line


def test_an_unknown_run_names_the_runs_that_begin_with_it(named_db: Path) -> None:
    """A name cut short is not taken for a run (a script asking for a run that is not created
    yet must not get an older one), but the error names those it could mean."""
    line = one_line_error(invoke("status", "run-", "--db", str(named_db)))
    assert line == (
        "trajmon: error: unknown run 'run-' (runs whose names begin so: 'run-a', 'run-ab', 'RUN-X')"
    )
    assert one_line_error(invoke("status", "nope", "--db", str(named_db))) == (
        "trajmon: error: unknown run 'nope'"
    )


class Knob(Instrument):
    """A spec that changes once, after a few reads: an action in a run without signals."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        reads = itertools.count()
        self.add_parameter(
            "knob", unit="V", vals=v.Numbers(), get_cmd=lambda: 0.0 if next(reads) < 3 else 0.25
        )


LABEL = unicodedata.normalize("NFC", "Température")


@pytest.fixture(scope="module")
def specs_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run of one spec channel (no signals) with one action."""
    db = tmp_path_factory.mktemp("readbig") / "specs.db"
    knob = Knob("knob")
    try:
        channels = [ChannelSpec(label=LABEL, source="knob.knob", kind="spec")]
        config = MonitorConfig(
            run_name="specs", db=db, channels=channels, interval_s=0.1, duration_s=0.6
        )
        assert record_every_tick(config, {"knob": knob}).actions == 1
    finally:
        knob.close()
    return db


@pytest.mark.parametrize(
    "given", [unicodedata.normalize("NFD", LABEL), "TEMPÉRATURE", "température"]
)
def test_actions_list_spec_is_matched_up_to_unicode_form_and_case(
    specs_db: Path, given: str
) -> None:
    """Labels are unique up to case and Unicode form (config.label_key), but ``--spec`` folded
    ASCII case only: "run 'specs' has no spec 'Température'; its specs: Température"."""
    result = invoke("actions", "list", "--spec", given, "--db", str(specs_db), "--json")
    assert result.exit_code == 0, result.stderr
    actions = json.loads(result.stdout)["actions"]
    assert [a["spec_label"] for a in actions] == [LABEL]


def test_a_signal_window_asked_of_a_run_without_signals_says_there_is_none(
    specs_db: Path,
) -> None:
    """A run of spec channels only: ``--with-signal-window`` printed nothing at all after the
    action, as if the option had been ignored or the window lost."""
    db = specs_db
    shown = invoke("actions", "show", "0", "--with-signal-window", "--db", str(db))
    assert shown.exit_code == 0, shown.stderr
    assert "signal window: none, the run records no signal channels" in shown.stdout
    as_json = invoke("actions", "show", "0", "--with-signal-window", "--json", "--db", str(db))
    assert json.loads(as_json.stdout)["signal_window"] == []
