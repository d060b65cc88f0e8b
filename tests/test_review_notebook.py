"""trajmon from a notebook: docs/library.md's notebook cells, run in order by IPython on a
running asyncio loop (as ipykernel runs them), each compared with what the page says it prints;
the first cell twice, as a scientist re-runs it."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

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
