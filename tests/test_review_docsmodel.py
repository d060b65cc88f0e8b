"""README.md, docs/configuration.md and docs/trajectory_model.md as a user reads them to know
what a command prints and what the database holds: each claim found wrong once is checked here
against what the code does (outputs rendered by the code itself, limits tried on the model, a
crashed run resumed)."""

from __future__ import annotations

import json
import re
import sqlite3
from contextlib import closing
from pathlib import Path

import anyio
import pytest
from test_review_readbig import record_sim
from typer.testing import CliRunner

from simulators.qcodes_sim import SimulatedSTM
from trajmon import MonitorConfig, Recorder
from trajmon.cli import app
from trajmon.cli.run_cmd import print_summary
from trajmon.config import ChannelSpec
from trajmon.queries import connect_readonly, list_runs
from trajmon.summary import GroupSummary, RunSummary

ROOT = Path(__file__).parents[1]
README = ROOT / "README.md"
CONFIGURATION = ROOT / "docs" / "configuration.md"
MODEL = ROOT / "docs" / "trajectory_model.md"

runner = CliRunner()


def _same_program(line: str) -> str:
    """``see the actions: .venv/bin/trajmon …`` and ``… trajmon …`` name one command."""
    return re.sub(r"^(see the actions: )\S*trajmon ", r"\1trajmon ", line)


def test_the_readme_demo_output_shows_the_run_summary_a_run_prints(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The README's demo output showed the run's summary as a boxed table with a ``kind``
    column and ``database`` on the counts line: the summary has been a plain aligned table,
    the database on a line of its own and the command that lists the actions, since the
    summary was reworked. Rendered here by the code from the figures the README shows."""
    text = README.read_text(encoding="utf-8")
    block = text.split("## First steps", 1)[1].split("```\n", 2)[2].split("```", 1)[0]
    lines = block.splitlines()
    head = re.fullmatch(r"Recording (\d+) s .* into (\S+) as run '([^']+)'…", lines[0])
    assert head is not None, lines[0]
    seconds, db, name = float(head.group(1)), head.group(2), head.group(3)
    start = lines.index(f"run '{name}': completed after {seconds:.1f} s")
    end = next(i for i, line in enumerate(lines) if line.startswith("actions of run "))
    shown = lines[start:end]
    actions = int(re.search(r"\((\d+)\)$", lines[end]).group(1))  # type: ignore[union-attr]
    means = [float(m) / 1000 for m in re.findall(r"([\d.]+) ms", "\n".join(shown))]
    assert len(means) == 2, shown  # one per default group
    samples = round(seconds / 0.1)
    kinds = (("signals", "signal"), ("specs", "spec"))
    groups = [
        GroupSummary(group, kind, 0.1, samples, samples, 0, 0, mean)
        for (group, kind), mean in zip(kinds, means, strict=True)
    ]
    summary = RunSummary(name, 1, db, "completed", seconds, groups, actions=actions)
    print_summary(summary)
    printed = capsys.readouterr().out.splitlines()
    assert [_same_program(line.rstrip()) for line in shown] == [
        _same_program(line.rstrip()) for line in printed
    ]


def test_config_show_json_gives_the_set_fields_as_the_configuration_page_says(
    tmp_path: Path,
) -> None:
    """The page said ``config show [--json]`` prints every field, unset ones with their
    default; ``--json`` gives only the fields that are set."""
    path = tmp_path / "staged.json"
    base = ["--config-path", str(path)]
    assert runner.invoke(app, ["config", "set", "--run-name", "x", *base]).exit_code == 0
    shown = runner.invoke(app, ["config", "show", "--json", *base])
    assert shown.exit_code == 0, shown.output
    assert json.loads(shown.stdout)["staged"] == {"run_name": "x"}
    text = CONFIGURATION.read_text(encoding="utf-8").replace("\n", " ")
    sentence = re.search(r"`trajmon config show[^`]*` prints (.*?)\.\s", text)
    assert sentence is not None
    said = sentence.group(0)
    assert "--json" in said and "only the fields that are set" in said, said


def test_the_stale_after_bound_the_configuration_page_gives_is_the_enforced_one() -> None:
    """The page gave only the upper bound of ``--stale-after-s``; 2 s or less is refused."""
    text = CONFIGURATION.read_text(encoding="utf-8").replace("\n", " ")
    found = re.search(r"`--stale-after-s` must be more than (\d+(?:\.\d+)?) s", text)
    assert found is not None, "configuration.md: the lower bound of --stale-after-s"
    bound = float(found.group(1))
    with pytest.raises(ValueError, match="stale_after_s"):
        MonitorConfig(stale_after_s=bound)
    assert MonitorConfig(stale_after_s=bound + 0.01).stale_after_s == bound + 0.01


def test_the_group_name_rule_the_configuration_page_gives_is_the_enforced_one() -> None:
    """The page said nothing of what a group name may hold: ``group: slow temps`` was refused
    by a rule the reader could not find."""
    text = CONFIGURATION.read_text(encoding="utf-8")
    found = re.search(r"A group name is (\d+) to (\d+) letters, digits, `_`, `-` or `\.`", text)
    assert found is not None, "configuration.md: the group name rule"
    low, high = int(found.group(1)), int(found.group(2))

    def spec(group: str) -> ChannelSpec:
        return ChannelSpec(label="v", source="dmm.v1", kind="signal", group=group)

    assert spec("a.B-c_9" + "x" * (high - 7)).group_name == "a.B-c_9" + "x" * (high - 7)
    for bad in ("x" * (high + 1), "x" * (low - 1), "slow temps", "temps/1"):
        with pytest.raises(ValueError, match="group"):
            spec(bad)


def _crash(db: Path, name: str, pending: int) -> None:
    """``name`` as a SIGKILL leaves it: stored ``running``, its heartbeat an hour old,
    ``pending`` spec samples read that its last commit did not take."""
    with closing(sqlite3.connect(db)) as conn, conn:
        (run_id,) = conn.execute("SELECT run_id FROM runs WHERE run_name = ?", (name,)).fetchone()
        conn.execute(
            "UPDATE runs SET status = 'running', ended_utc = NULL, end_dt_s = NULL,"
            " heartbeat_epoch = heartbeat_epoch - 3600 WHERE run_id = ?",
            (run_id,),
        )
        conn.execute(
            "UPDATE poll_groups SET samples_read = samples + ? WHERE run_id = ? AND kind = 'spec'",
            (pending, run_id),
        )


def test_a_resumed_crashed_run_has_lost_samples_without_a_storage_error(tmp_path: Path) -> None:
    """The page said ``lost_samples`` is non-zero only when a storage error stopped the writer;
    a crashed run, resumed, stores what it had read and not committed, and ends ``completed``
    with no storage error."""
    db = tmp_path / "resumed.db"
    record_sim(db, "killed", 1, duration_s=0.3)
    _crash(db, "killed", 5)
    stm = SimulatedSTM("stm", seed=2)
    try:
        config = MonitorConfig(run_name="killed", db=db, interval_s=0.1, duration_s=0.2)
        summary = anyio.run(Recorder(config, {"stm": stm}, resume=True).run)
    finally:
        stm.close()
    assert summary.status == "completed" and summary.message is None
    with closing(connect_readonly(db)) as conn:
        (run,) = list_runs(conn)
        stored = conn.execute("SELECT status, lost_samples, sessions FROM runs").fetchall()
    assert [tuple(r) for r in stored] == [("completed", 5, 2)]
    assert (run["status"], run["lost_samples"], summary.lost_samples) == ("completed", 5, 5)
    text = MODEL.read_text(encoding="utf-8")
    item = text.split("- `runs.lost_samples`", 1)[1].split("\n- ", 1)[0].replace("\n", " ")
    assert "only when a storage error" not in item or "resumed" in item, item
