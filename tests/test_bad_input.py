"""Promise 7: bad input is refused before anything is written (one line, exit 2, database
untouched), and hostile names are just names."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from procs import query, run_cli
from typer.testing import CliRunner

from trajmon.cli import app

runner = CliRunner()
DUMMY = "qcodes.instrument_drivers.mock_instruments.DummyInstrument"
HOSTILE_RUN = 'x\'; DROP TABLE runs; -- "Ångström" run/../ü'
HOSTILE_LABELS = {
    "signal": 'I "quoted"; DROP TABLE actions; --',
    "spec": "Bias / ✓ select * from runs",
}


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def existing_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    db = tmp_path_factory.mktemp("bad") / "keep.db"
    result = run_cli("run", "--run-name", "keep", "--sim", "--duration", "0.5", "--db", str(db))
    assert result.returncode == 0, result.stderr
    return db


def refused(*args: str) -> str:
    result = runner.invoke(app, list(args), catch_exceptions=False)
    assert result.exit_code == 2, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("trajmon: error:"), result.stderr
    return lines[0]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--interval-s", "0"), "interval_s"),
        (("--interval-s", "-1"), "interval_s"),
        (("--interval-s", "nan"), "interval_s"),
        (("--signal-interval-s", "inf"), "signal_interval_s"),
        (("--rotate-entries", "0"), "rotate_entries"),
        (("--action-window-s", "-0.5"), "window"),
        (("--signals", "No Such Signal"), "unknown signal label"),
        (("--specs", "Tunnel Current"), "is a signal"),
        (("--run-name", "keep"), "already used"),
        (("--run-name", "sqlite_master"), "reserved"),
        (("--run-name", "tab\there"), "control characters"),
        (("--resume", "keep"), "it is completed"),
        (("--resume", "missing"), "unknown run"),
        (("--resume", "keep", "--interval-s", "0.5"), "keeps its stored configuration"),
        (("--resume", "keep", "--run-name", "other"), "--run-name: a resumed run keeps"),
        (("--resume", "keep", "--stale-after-s", "1"), "--stale-after-s: a resumed run"),
    ],
)
def test_bad_run_options_leave_the_database_untouched(
    existing_db: Path, args: tuple[str, ...], message: str
) -> None:
    before = digest(existing_db)
    base = ["run", "--sim", "--duration", "1", "--db", str(existing_db)]
    if "--run-name" not in args and "--resume" not in args:
        base += ["--run-name", "fresh"]
    assert message in refused(*base, *args)
    assert digest(existing_db) == before


def test_malformed_files_are_refused(existing_db: Path, tmp_path: Path) -> None:
    before = digest(existing_db)
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("channels: [ {parameter: stm.bias, kind: spec\n", encoding="utf-8")
    dup = tmp_path / "dup.yaml"
    dup.write_text(
        "channels:\n  - {parameter: dmm.v1, label: A, kind: signal}\n"
        "  - {parameter: dmm.v2, label: a, kind: signal}\n",
        encoding="utf-8",
    )
    station = tmp_path / "station.yaml"
    station.write_text("instruments: [not, a, mapping\n", encoding="utf-8")
    good_station = tmp_path / "ok-station.yaml"
    good_station.write_text(
        f"instruments:\n  dac:\n    type: {DUMMY}\n    init: {{gates: [ch1]}}\n",
        encoding="utf-8",
    )
    db = ["--db", str(existing_db), "--run-name", "fresh", "--duration", "1"]
    refused("run", "--station", str(station), "--channels", str(bad_yaml), *db)
    refused("run", "--station", str(good_station), "--channels", str(bad_yaml), *db)
    assert "duplicate" in refused(
        "run", "--station", str(good_station), "--channels", str(dup), *db
    )
    scenario = tmp_path / "scenario.yaml"
    scenario.write_text("name: s\nchanges:\n  - {at_s: 1, spec: Warp Drive, value: 9}\n")
    unknown = refused("sim", "serve", "--scenario", str(scenario))
    assert "unknown spec 'Warp Drive'" in unknown and not unknown.endswith("got 9")
    plan = tmp_path / "faults.yaml"
    plan.write_text("faults:\n  - {at_s: 1, fault: meteor}\n")
    assert "fault must be one of" in refused("sim", "serve", "--faults", str(plan))
    no_dir = tmp_path / "missing" / "truth.jsonl"  # the operator would fail to write it, silently
    assert "truth log" in refused("sim", "serve", "--truth-log", str(no_dir))
    staged = tmp_path / "staged.json"
    staged.write_text("{not json", encoding="utf-8")
    refused("run", "--config-path", str(staged), "--sim", *db)
    assert digest(existing_db) == before


def test_hostile_names_are_just_names(tmp_path: Path) -> None:
    db = tmp_path / "hostile.db"
    channels = tmp_path / "channels.yaml"
    channels.write_text(
        "channels:\n"
        f"  - {{parameter: dac.ch1, label: {json.dumps(HOSTILE_LABELS['signal'])}, kind: signal}}\n"
        f"  - {{parameter: dac.ch2, label: {json.dumps(HOSTILE_LABELS['spec'])}, kind: spec}}\n",
        encoding="utf-8",
    )
    station = tmp_path / "station.yaml"
    station.write_text(
        f"instruments:\n  dac:\n    type: {DUMMY}\n    init: {{gates: [ch1, ch2]}}\n",
        encoding="utf-8",
    )
    result = run_cli(
        "run",
        "--run-name",
        HOSTILE_RUN,
        "--station",
        str(station),
        "--channels",
        str(channels),
        "--db",
        str(db),
        "--duration",
        "0.5",
        "--interval-s",
        "0.05",
    )
    assert result.returncode == 0, result.stderr
    tables = {row[0] for row in query(db, "SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"runs", "actions", f"{HOSTILE_RUN}/signals", f"{HOSTILE_RUN}/specs"} <= tables
    (count,) = query(
        db,
        f'SELECT count("{HOSTILE_LABELS["signal"].replace(chr(34), chr(34) * 2)}")'
        f' FROM "{HOSTILE_RUN.replace(chr(34), chr(34) * 2)}/signals"',
    )[0]
    assert count >= 5
    listed = run_cli("actions", "list", "--run", HOSTILE_RUN, "--db", str(db), "--json")
    assert listed.returncode == 0, listed.stderr
    assert json.loads(listed.stdout)["run_name"] == HOSTILE_RUN
    out = tmp_path / "exports"
    exported = run_cli("export", HOSTILE_RUN, "--format", "csv", "--out", str(out), "--db", str(db))
    assert exported.returncode == 0, exported.stderr
    written = [p for p in tmp_path.rglob("*") if p.is_file() and p.suffix == ".csv"]
    assert written and all(out.resolve() in p.resolve().parents for p in written)


@pytest.mark.parametrize(
    "args",
    [("--seed", "-1"), ("--latency-ms", "inf"), ("--jitter-ms", "nan"), ("--latency-ms", "1e300")],
)
def test_sim_serve_refuses_seeds_and_delays_it_cannot_use(args: tuple[str, ...]) -> None:
    """A negative seed was a numpy traceback at start; an infinite delay a traceback per
    request (or a server that never answers): usage errors now, before listening."""
    result = runner.invoke(app, ["sim", "serve", "--port", "0", *args], catch_exceptions=False)
    assert result.exit_code == 2 and "Invalid value" in result.stderr


def test_scenario_seed_must_be_a_whole_number_of_at_least_0(tmp_path: Path) -> None:
    scenario = tmp_path / "scenario.yaml"
    scenario.write_text("name: s\nseed: -1\nchanges:\n  - {at_s: 1, spec: Bias, value: 0.2}\n")
    assert "'seed' must be a whole number >= 0" in refused(
        "sim", "serve", "--port", "0", "--scenario", str(scenario)
    )


def test_a_selection_from_channels_without_specs_says_so() -> None:
    """The list of known labels was empty: "(known: )"."""
    from pydantic import ValidationError

    from trajmon import ChannelSpec, MonitorConfig

    only_signals = [ChannelSpec(label="I", source="stm.current", kind="signal")]
    with pytest.raises(
        ValidationError, match=r"unknown spec label 'Bias' \(the channels have no specs\)"
    ):
        MonitorConfig(run_name="x", channels=only_signals, specs=["Bias"])
