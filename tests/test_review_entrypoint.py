"""The ``trajmon`` command's start: a stop signal before a command takes the signals over, and
what starting the command (or importing the package) costs.

Each stop signal here is sent by the process to itself at a chosen point of its start — when a
given module is first imported, or when ``trajmon run`` checks its run name — so the test knows
where it landed without waiting for any time to pass.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from procs import ENV

import trajmon

#: Run as ``python -c``: ``trajmon`` as its console script runs it, with a stop signal sent to
#: itself when the module named by STOP_AT is first imported (a meta-path finder sees it first).
SIGNAL_AT_IMPORT = textwrap.dedent(
    """
    import importlib.abc, os, signal, sys

    class SignalAt(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == os.environ["STOP_AT"]:
                sys.meta_path.remove(self)
                os.kill(os.getpid(), getattr(signal, os.environ["STOP_WITH"]))
            return None

    sys.meta_path.insert(0, SignalAt())
    sys.argv[0] = "trajmon"
    from trajmon.cli import main
    main()
    """
)

#: The same, with the signal sent as ``trajmon run`` checks that its run name is free: typer
#: has read the options, the command has begun, nothing is written yet.
SIGNAL_AT_NAME_CHECK = textwrap.dedent(
    """
    import os, signal, sys
    sys.argv[0] = "trajmon"
    from trajmon.cli import main, run_cmd

    checked = run_cmd.check_run_name_free

    def check(db, name):
        os.kill(os.getpid(), getattr(signal, os.environ["STOP_WITH"]))
        return checked(db, name)

    run_cmd.check_run_name_free = check
    main()
    """
)

#: Prepended to either script: the signal is sent again as the first line is written to
#: stderr — a Ctrl-C held down, its second signal arriving as the first is being answered.
HELD_DOWN = textwrap.dedent(
    """
    import os, signal, sys

    class HeldDown:
        def __init__(self, stream):
            self.stream, self.again = stream, True

        def write(self, text):
            if self.again:
                self.again = False
                os.kill(os.getpid(), getattr(signal, os.environ["STOP_WITH"]))
            return self.stream.write(text)

        def __getattr__(self, name):
            return getattr(self.stream, name)

    sys.stderr = HeldDown(sys.stderr)
    """
)

CODES = {"SIGINT": 130, "SIGTERM": 143}
LINES = {"SIGINT": "trajmon: interrupted\n", "SIGTERM": "trajmon: interrupted (SIGTERM)\n"}


def _run(script: str, db: Path, *, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    argv = ["run", "--sim", "--run-name", "r", "--duration", "5", "--quiet", "--db", str(db)]
    return subprocess.run(
        [sys.executable, "-c", script, *argv],
        capture_output=True,
        text=True,
        env={**ENV, **env},
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM"])
@pytest.mark.parametrize(
    "module", ["typer", "numpy", "pydantic", "aiosqlite", "trajmon.cli.commands"]
)
def test_a_stop_signal_while_the_command_imports_is_one_line_and_its_exit_code(
    tmp_path: Path, module: str, sig: str
) -> None:
    """Importing the command takes half a second before argv is read: a Ctrl-C then (the
    operator saw the wrong --db) was a 30-line KeyboardInterrupt traceback from inside
    importlib or pydantic, and a SIGTERM killed the process without a word."""
    db = tmp_path / "x.db"
    result = _run(SIGNAL_AT_IMPORT, db, env={"STOP_AT": module, "STOP_WITH": sig})
    assert (result.returncode, result.stderr) == (CODES[sig], LINES[sig])
    assert result.stdout == ""
    assert not db.exists()


@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM"])
@pytest.mark.parametrize("module", ["simulators.serve", "trajmon.drivers.nanonis"])
def test_a_stop_signal_while_the_simulator_starts_is_one_line_and_writes_nothing(
    tmp_path: Path, module: str, sig: str
) -> None:
    """After the options were read and before the run took the signals over (starting the
    simulator, loading the driver): Ctrl-C ended with 130 and not a word, SIGTERM killed the
    process without one. Now the event loop's work is cancelled, the simulator closed, and
    one line says what happened; no database was created."""
    db = tmp_path / "x.db"
    result = _run(SIGNAL_AT_IMPORT, db, env={"STOP_AT": module, "STOP_WITH": sig})
    assert (result.returncode, result.stderr) == (CODES[sig], LINES[sig])
    assert result.stdout == ""
    assert not db.exists()


@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM"])
def test_a_stop_signal_while_the_run_is_planned_is_one_line(tmp_path: Path, sig: str) -> None:
    """The command has begun, nothing is written: typer turned Ctrl-C into exit code 130
    without a word (older typer: "Aborted!" and exit code 1); SIGTERM killed the process."""
    db = tmp_path / "x.db"
    result = _run(SIGNAL_AT_NAME_CHECK, db, env={"STOP_WITH": sig})
    assert (result.returncode, result.stderr) == (CODES[sig], LINES[sig])
    assert not db.exists()


@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM"])
@pytest.mark.parametrize("where", ["import", "name check"])
def test_a_stop_signal_held_down_still_gives_one_line_and_the_exit_code(
    tmp_path: Path, sig: str, where: str
) -> None:
    """A second signal while the first is answered (Ctrl-C held down, ``kill`` twice) must
    not turn the one line into a traceback, nor the exit code into death by that signal."""
    db = tmp_path / "x.db"
    script = HELD_DOWN + (SIGNAL_AT_IMPORT if where == "import" else SIGNAL_AT_NAME_CHECK)
    result = _run(script, db, env={"STOP_AT": "numpy", "STOP_WITH": sig})
    assert (result.returncode, result.stderr) == (CODES[sig], LINES[sig])
    assert not db.exists()


def _modules_after(code: str) -> set[str]:
    """The modules a fresh interpreter has imported after running ``code``."""
    script = f"import json, sys\n{code}\nprint(json.dumps(sorted(sys.modules)))"
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=ENV, timeout=120
    )
    assert result.returncode == 0, result.stderr
    return set(json.loads(result.stdout.splitlines()[-1]))


HEAVY = {"numpy", "pydantic", "aiosqlite", "anyio", "qcodes", "matplotlib", "pyarrow"}


def test_importing_the_package_or_the_command_imports_nothing_heavy() -> None:
    """``import trajmon`` imported the whole public API — NumPy, pydantic, aiosqlite, the
    exporters — 0.3 s; every ``trajmon.*`` module, the command's included, paid it first."""
    for code in ("import trajmon", "from trajmon.cli import main"):
        loaded = _modules_after(code)
        assert sorted(HEAVY & loaded) == [], code
        assert "typer" not in loaded and "rich" not in loaded, code


def test_the_help_imports_no_instrument_plotting_or_export_library() -> None:
    """``trajmon --help`` builds every command, but needs none of QCoDeS, matplotlib, pyarrow,
    the exporters' progress bar (rich.progress and its spinners: a tenth of the start)."""
    loaded = _modules_after(
        "sys.argv = ['trajmon', '--help']\n"
        "from trajmon.cli import main\n"
        "try:\n    main()\nexcept SystemExit as exc:\n    assert exc.code == 0, exc.code"
    )
    assert sorted({"qcodes", "matplotlib", "pyarrow", "rich.progress"} & loaded) == []


def test_the_public_api_is_still_there_when_imported_lazily() -> None:
    """Every name of ``__all__`` comes from where it is defined, ``dir`` lists it, and the
    package's modules are still reachable as attributes after a plain ``import trajmon``."""
    import importlib

    for name in trajmon.__all__:
        value = getattr(trajmon, name)
        if hasattr(value, "__module__"):  # not __version__, DEFAULT_CHANNELS (a tuple)
            assert value is getattr(importlib.import_module(value.__module__), name), name
    assert trajmon.DEFAULT_CHANNELS is importlib.import_module("trajmon.config").DEFAULT_CHANNELS
    assert set(trajmon.__all__) <= set(dir(trajmon))
    assert trajmon.recorder.Recorder is trajmon.Recorder
    with pytest.raises(AttributeError, match="has no attribute 'no_such_name'"):
        _ = trajmon.no_such_name  # type: ignore[attr-defined]
    assert not hasattr(trajmon, "_private")


def test_python_m_trajmon_and_the_cli_app_still_work(tmp_path: Path) -> None:
    """``python -m trajmon`` and ``from trajmon.cli import app`` (what CliRunner tests use)."""
    from typer.testing import CliRunner

    from trajmon.cli import app

    result = subprocess.run(
        [sys.executable, "-m", "trajmon", "runs", "--db", str(tmp_path / "none.db")],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=120,
        check=False,
    )
    assert result.returncode == 2 and result.stderr.startswith("trajmon: error: "), result.stderr
    assert len(result.stderr.splitlines()) == 1
    assert CliRunner().invoke(app, ["--help"]).exit_code == 0


def test_a_completed_command_leaves_sigterm_as_it_found_it() -> None:
    """The start-up's SIGTERM handler is the command's, not the interpreter's shutdown's:
    after a command ended normally it is the default again (a SIGTERM then kills, as before),
    and outside ``main`` it is never installed (CliRunner tests share the pytest process)."""
    script = textwrap.dedent(
        """
        import signal, sys
        sys.argv = ["trajmon", "--help"]
        from trajmon.cli import main
        try:
            main()
        except SystemExit as exc:
            assert exc.code == 0, exc.code
        print(signal.getsignal(signal.SIGTERM) == signal.SIG_DFL)
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=ENV, timeout=120
    )
    assert result.stdout.splitlines()[-1] == "True", result.stderr
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
