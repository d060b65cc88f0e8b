"""docs/library.md's examples, run as a reader would copy them: each in a fresh directory and
a fresh interpreter, its output compared with what the page says it prints."""

from __future__ import annotations

import re
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path

import pytest

PAGE = Path(__file__).parents[1] / "docs" / "library.md"


def examples() -> list[tuple[str, str]]:
    """(code, the output the page states right after it)."""
    text = PAGE.read_text(encoding="utf-8")
    # one block each: (.*?) alone would run on from a block that prints nothing to the next
    found = re.findall(r"```python\n((?:(?!```).)*?)```\n\nprints `([^`]*)`", text, re.S)
    assert len(found) == 2, "docs/library.md: every example is followed by what it prints"
    return found


def run_example(cwd: Path, code: str, *args: str, timeout: float = 120) -> str:
    """What ``code``, a page's example, prints when run as a script in ``cwd`` (warnings are
    errors there too); it must succeed."""
    script = cwd / "example.py"
    script.write_text(code, encoding="utf-8")
    proc = subprocess.run(
        [sys.executable, "-W", "error", str(script), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


@pytest.mark.parametrize("index", [0, 1])
def test_the_library_page_examples_print_what_it_says(tmp_path: Path, index: int) -> None:
    code, printed = examples()[index]
    got = run_example(tmp_path, code, timeout=60)
    if got != printed and index == 0:  # a tick a loaded machine missed is counted, not read
        with closing(sqlite3.connect(tmp_path / "lab.db")) as conn:
            missed = dict(conn.execute("SELECT kind, missed_ticks FROM poll_groups").fetchall())
        status, signals, specs, actions = got.split()
        assert [status, actions] == ["completed", "0"]
        assert int(signals) + missed["signal"] == int(specs) + missed["spec"] == 20
        return
    assert got == printed
