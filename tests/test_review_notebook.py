"""trajmon from a notebook: docs/library.md's notebook cells, run in order by IPython on a
running asyncio loop (as ipykernel runs them), each compared with what the page says it prints;
the first cell twice, as a scientist re-runs it."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest
from pydantic import ValidationError
from qcodes.instrument_drivers.mock_instruments import DummyInstrument

from trajmon import (
    ChannelSpec,
    ConfigError,
    FakeClock,
    MonitorConfig,
    Recorder,
    RunExistsError,
)
from trajmon.station import load_channels_file

PAGE = Path(__file__).parents[1] / "docs" / "library.md"

#: The notebook: an IPython shell (no history file, its own profile directory) running each cell
#: with ``run_cell_async`` inside ``asyncio.run``, then what is left open: trajmon's threads,
#: aiosqlite's, and file descriptors on the database.
RUNNER = r"""
import asyncio, os, sys, threading
from traitlets.config import Config
from IPython.core.interactiveshell import InteractiveShell

cells = sys.argv[1:]

async def main() -> int:
    config = Config()
    config.HistoryManager.enabled = False
    shell = InteractiveShell.instance(config=config, colors="nocolor")
    for i, cell in enumerate(cells):
        print(f"=== cell {i}", flush=True)
        res = await shell.run_cell_async(cell, transformed_cell=shell.transform_cell(cell))
        sys.stdout.flush()
        if not res.success:
            return 1
    return 0

code = asyncio.run(main())
print("=== left open", flush=True)
ours = [t for t in threading.enumerate()
        if t.name.startswith("trajmon-") or "connection_worker" in t.name]
for t in ours:  # aiosqlite's thread ends just after close() returns; a leaked one never does
    t.join(10)
print(sorted(t.name for t in ours if t.is_alive()))
fds = []
for fd in os.listdir("/proc/self/fd"):
    try:
        fds.append(os.readlink(f"/proc/self/fd/{fd}"))
    except OSError:
        pass
print(sorted(os.path.basename(f) for f in fds if "lab.db" in f))
sys.exit(code)
"""


def notebook_cells() -> list[tuple[str, str | None]]:
    """(cell, what the page says it prints, if it says)."""
    text = PAGE.read_text(encoding="utf-8")
    cells = re.findall(r"```ipython\n(.*?)```\n(?:\nprints `([^`]*)`)?", text, re.S)
    return [(code, printed or None) for code, printed in cells]


def test_the_library_pages_notebook_cells_run_in_ipython_on_a_running_loop(
    tmp_path: Path,
) -> None:
    cells = notebook_cells()
    assert len(cells) >= 4, "docs/library.md shows how to record from a notebook, in cells"
    assert sum(printed is not None for _, printed in cells) >= 3
    codes = [cells[0][0]] + [code for code, _ in cells]  # the first cell, run again
    cell_outputs, left_open = run_notebook(tmp_path, codes)
    for (_, printed), got in zip([cells[0], *cells], cell_outputs, strict=True):
        if printed is not None:
            assert got.strip() == printed
    assert left_open.split("\n")[:2] == ["[]", "[]"], left_open  # no thread, no open db file


def run_notebook(tmp_path: Path, cells: list[str]) -> tuple[list[str], str]:
    """Each cell's output, and what was left open, from the cells run in one IPython shell."""
    proc = subprocess.run(
        [sys.executable, "-W", "error", "-c", RUNNER, *cells],
        cwd=tmp_path,
        env={**os.environ, "IPYTHONDIR": str(tmp_path / "ipython")},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    *outputs, left_open = re.split(r"^=== .*\n", proc.stdout, flags=re.M)[1:]
    return outputs, left_open


def test_a_background_run_whose_cell_ran_again_is_stopped_by_the_pages_recipe(
    tmp_path: Path,
) -> None:
    cells = [code for code, _ in notebook_cells()]
    assert cells, "docs/library.md shows how to record from a notebook, in cells"
    setup, background = cells[0], next(c for c in cells if "create_task" in c)
    recipe = re.search(r"`(\[t\.cancel\(\) for t in asyncio\.all_tasks\(\).*?)`", PAGE.read_text())
    assert recipe is not None, "the page says how to stop a run whose handle a re-run lost"
    outputs, left_open = run_notebook(
        tmp_path,
        [
            setup,
            background,
            background,  # run again: a second Recorder, refused; the first records on
            "print(type(recorder.error).__name__)",
            "named = [t for t in asyncio.all_tasks() if t.get_name() == task.get_name()]",
            recipe[1],
            "await asyncio.wait(named, timeout=20)",
            "from contextlib import closing\n"
            "from trajmon import connect_readonly, list_runs\n"
            "with closing(connect_readonly('lab.db')) as conn:\n"
            "    print([(r['run_name'], r['status']) for r in list_runs(conn)])\n"
            "dac.close()",
        ],
    )
    assert outputs[3].strip() == "RunExistsError"
    assert outputs[7].strip() == "[('background run', 'interrupted')]"
    assert left_open.split("\n")[:2] == ["[]", "[]"], left_open


# -- the library in a notebook's running loop: state, configuration errors ---------------------


def _dac_config(db: Path, name: str = "state run", **changes: Any) -> MonitorConfig:
    channels = [
        ChannelSpec(label="Drain", source="dac.ch2", kind="signal"),
        ChannelSpec(label="Gate 1", source="dac.ch1", kind="spec"),
    ]
    options: dict[str, Any] = {"interval_s": 0.05, "source": "instruments", **changes}
    return MonitorConfig(run_name=name, db=db, channels=channels, **options)


async def test_a_background_recorder_says_where_its_run_is(db_path: Path) -> None:
    """A notebook starts ``run()`` as a task and asks, cells later, whether it still records:
    there was no answer but reading private fields or events in the right order."""
    dac = DummyInstrument("dac", gates=["ch1", "ch2"])
    clock = FakeClock()
    recorder = Recorder(_dac_config(db_path), {"dac": dac}, clock=clock)
    assert recorder.state == "new"
    task = asyncio.create_task(recorder.run(), name="trajmon background run")
    await asyncio.sleep(0)  # the task's first step: run() is called, the database not yet open
    assert recorder.state == "starting"
    with anyio.fail_after(10):
        await recorder.wait_until(lambda: recorder.stats[0].samples_read >= 1)
    assert recorder.state == "running"
    recorder.request_stop()
    assert recorder.state == "stopping"  # until the queue is drained and the end recorded
    recorder.request_stop()  # twice: idempotent, still one stop
    with anyio.fail_after(10):
        summary = await task
    assert recorder.state == "ended"
    assert summary.status == "interrupted"
    with pytest.raises(RunExistsError, match="a Recorder records one run"):
        await recorder.run()  # a second start is a clear error, and the state stays
    assert recorder.state == "ended"


async def test_a_recorder_whose_run_is_refused_has_ended(db_path: Path) -> None:
    """Re-running a cell with the same run name: the new recorder's state says it is over."""
    dac = DummyInstrument("dac", gates=["ch1", "ch2"])
    first = Recorder(_dac_config(db_path, duration_s=0.1), {"dac": dac})
    await first.run()
    again = Recorder(_dac_config(db_path, duration_s=0.1), {"dac": dac})
    with pytest.raises(RunExistsError):
        await again.run()
    assert (first.state, again.state) == ("ended", "ended")


@pytest.mark.parametrize(
    ("build", "line"),
    [
        (
            lambda: MonitorConfig(run_name="x", intervall_s=0.2),
            "MonitorConfig: intervall_s: unknown field; did you mean 'interval_s'?",
        ),
        (
            lambda: ChannelSpec(label="G", source="dac.ch1", kind="spec", tolerence_abs=1e-6),
            "ChannelSpec: tolerence_abs: unknown field; did you mean 'tolerance_abs'?",
        ),
        (
            lambda: MonitorConfig(
                channels=[{"label": "G", "source": "dac.ch1", "kind": "spec", "tolerence_rel": 1}]
            ),
            "MonitorConfig: channels.0.tolerence_rel: "
            + "unknown field; did you mean 'tolerance_rel'?",
        ),
        (
            lambda: MonitorConfig(interval_s=0),
            "MonitorConfig: interval_s must be a finite number > 0, got 0.0",
        ),
    ],
)
def test_a_config_error_in_a_cell_is_one_line_naming_the_field_meant(
    build: Callable[[], object], line: str
) -> None:
    """``MonitorConfig(intervall_s=…)`` raised pydantic's four lines ("Extra inputs are not
    permitted", a URL) and named no field to use instead. Now one line, a ``ConfigError`` as the
    page promises for configuration errors, still a pydantic ``ValidationError``."""
    with pytest.raises(ConfigError) as info:
        build()
    assert str(info.value) == line
    assert isinstance(info.value, ValidationError)
    assert info.value.errors()  # pydantic's structured errors are kept


def test_a_typo_in_a_channels_file_names_the_key_meant(tmp_path: Path) -> None:
    """The command line folds the same error into its one line: the close match is there too."""
    channels = tmp_path / "channels.yaml"
    channels.write_text(
        "channels:\n  - parameter: stm.bias\n    kind: spec\n    tolerence_abs: 1.0e-3\n",
        encoding="utf-8",
    )
    with pytest.raises(ConfigError, match="did you mean 'tolerance_abs'"):
        load_channels_file(channels)
