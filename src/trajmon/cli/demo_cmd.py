"""``trajmon demo``: a complete recording of the simulated STM, scored against the truth.

The demo goes through every real layer — Nanonis TCP server, QCoDeS driver, pollers, detector,
writer, queries — so a newcomer sees exactly what a lab run does, and the score shows whether
trajmon saw every change the scripted operator made.
"""

from __future__ import annotations

import shlex
import time
from pathlib import Path
from typing import Annotated, Any

import anyio
import typer

from ..config import MonitorConfig
from ..connection import StorageError
from ..queries import list_actions, resolve_run
from ..recorder import Recorder
from ..runstore import RunExistsError
from ..scoring import Score, score_recording
from ..summary import RunFailedError
from .actions_cmd import print_actions
from .common import (
    EXIT_FAILED,
    DbOption,
    JsonOption,
    console,
    fail,
    print_json,
    program_name,
    reading,
    user_errors,
)
from .run_cmd import check_run_name_free, print_summary, sim_instruments
from .runner import (
    RunOutcome,
    exit_code_for,
    record,
    signals_restored,
    unless_output_gone,
)

__all__ = ["demo"]


def _free_demo_name(db: Path) -> str:
    """A timestamped name; two demos in the same second into one file get -2, -3, …"""
    base = "demo-" + time.strftime("%Y%m%d-%H%M%S")
    for suffix in ["", *(f"-{n}" for n in range(2, 100))]:
        try:
            check_run_name_free(db, base + suffix)
        except RunExistsError:
            continue
        return base + suffix
    raise RunExistsError(f"too many demo runs named {base}* in {db}")


def _next_command(run_name: str, db: Path, actions: list[dict[str, Any]]) -> str:
    """A command to paste into the shell as printed: the first action's window, or — when the
    run saw none (a short --duration) — the run's status; the file name quoted if need be."""
    where = f"--db {shlex.quote(str(db))}"
    prog = program_name()
    if not actions:
        return f"{prog} status {shlex.quote(run_name)} {where}"
    first = actions[0]["action_idx"]
    return f"{prog} actions show {first} --run {shlex.quote(run_name)} {where} --with-signal-window"


def _score_line(score: Score) -> str:
    """The score in words; a ratio with nothing to count (0/0) is said, not printed as nan."""
    found = f"{score.matched}/{score.truth} changes found"
    if score.recall is None and score.precision is None:
        return f"{found}: the operator made no change the run could see, and none was detected"
    precision = "n/a (nothing detected)" if score.precision is None else f"{score.precision:.2f}"
    recall = "n/a (no change to find)" if score.recall is None else f"{score.recall:.2f}"
    latency = "" if score.max_latency_s is None else f", max latency {score.max_latency_s:.3f} s"
    return f"{found}, precision {precision}, recall {recall}{latency}"


def demo(
    duration: Annotated[float, typer.Option("--duration", help="Seconds to record.")] = 20.0,
    db: DbOption = Path("trajmon-demo.db"),
    json_out: JsonOption = False,
) -> None:
    """Simulate an STM session, record it through the TCP driver, list and score the actions."""
    with user_errors():  # the options first: a directory as --db is an option error
        config = MonitorConfig(run_name="demo", db=db, duration_s=duration, source="sim")
        try:
            run_name = _free_demo_name(db)
        except StorageError as exc:  # as for trajmon run: nowhere to write
            fail(str(exc), EXIT_FAILED)
        config = config.updated(run_name=run_name)

    async def main() -> tuple[Any, Recorder, list[Any]]:
        async with sim_instruments(config.read_timeout_s, start_operator=False) as (sim, inst):
            holder: list[Recorder] = []

            def started(rec: Recorder) -> None:
                holder.append(rec)
                sim.start_operator()

            try:
                outcome = await record(config, inst, quiet=json_out, on_started=started)
            except RunFailedError as exc:  # a full disk: reported and scored, then exit code 1
                if not holder:
                    raise
                outcome = RunOutcome(exc.summary, None)
            truth = list(sim.operator.truth) if sim.operator is not None else []
            return outcome, holder[0], truth

    if not json_out:
        with unless_output_gone():
            console.print(
                f"Recording {duration:g} s of a simulated STM session into {db} as run"
                f" {run_name!r}…",
                markup=False,
            )
    with signals_restored():  # a late Ctrl-C must not cut the report short
        with user_errors():
            try:
                outcome, recorder, truth = anyio.run(main)
            except (StorageError, RunFailedError) as exc:  # as for trajmon run: one line
                fail(str(exc), EXIT_FAILED)
        with reading(db) as conn:
            actions = list_actions(conn, resolve_run(conn, run_name))
        summary = outcome.summary
        score, required = score_recording(recorder, truth, actions)
        with unless_output_gone():  # the report is for a reader who may be gone
            if json_out:
                print_json(
                    {
                        "run_name": run_name,
                        "db": str(db.resolve()),
                        "status": summary.status,
                        "duration_s": summary.duration_s,
                        "signal_samples": summary.signal_samples,
                        "spec_samples": summary.spec_samples,
                        "actions": len(actions),
                        "truth_actions": len(required),
                        "matched": score.matched,
                        "precision": score.precision,
                        "recall": score.recall,
                        "max_latency_s": score.max_latency_s,
                        "missed_ticks": summary.missed_ticks,
                        "errors": summary.errors,
                        "lost_samples": summary.lost_samples,
                    }
                )
            else:
                print_summary(summary)
                print_actions(actions, f"actions of run {run_name!r} ({len(actions)})")
                console.print(
                    f"scored against the scripted operator: {_score_line(score)}", markup=False
                )
                console.print(f"next: {_next_command(run_name, db, actions)}", markup=False)
    code = exit_code_for(outcome)
    if code == EXIT_FAILED:
        fail(summary.message or "run failed", EXIT_FAILED)
    raise typer.Exit(code)
