"""Review of the day's changes: the start-up's signal handling run twice in one process, and
a configuration's ``updated()`` refusing as its constructor does.

The signal tests run in a process of their own: they look at, and would change, the process's
own SIGINT and SIGTERM handlers, which pytest's must not be.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
from procs import ENV

from trajmon import ConfigError, MonitorConfig

#: A command interrupted under typer's CliRunner (a test in a shared process): ``trajmon runs``
#: meets a Ctrl-C as it opens the database; then the state of the process's stop signals.
INTERRUPTED_IN_RUNNER = textwrap.dedent(
    """
    from typer.testing import CliRunner
    from trajmon.cli import app, runs_cmd

    def ctrl_c(db):
        raise KeyboardInterrupt

    runs_cmd.reading = ctrl_c
    result = CliRunner().invoke(app, ["runs"])
    assert result.exit_code == 130, (result.exit_code, result.output)
    """
)

#: ``trajmon --help`` through ``main``, as a test calling it in-process does.
MAIN_HELP = textwrap.dedent(
    """
    import contextlib, io, sys
    from trajmon.cli import main

    sys.argv = ["trajmon", "--help"]
    with contextlib.redirect_stdout(io.StringIO()):
        try:
            main()
        except SystemExit as exc:
            assert exc.code == 0, exc.code
    """
)

SIGNALS_NOW = textwrap.dedent(
    """
    import signal
    print(signal.getsignal(signal.SIGINT) is signal.default_int_handler,
          signal.getsignal(signal.SIGTERM) == signal.SIG_DFL)
    """
)


def _signals_after(*steps: str) -> str:
    result = subprocess.run(
        [sys.executable, "-c", "".join((*steps, SIGNALS_NOW))],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()[-1]


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signal dispositions")
def test_main_after_an_interrupted_runner_command_leaves_the_stop_signals_as_found() -> None:
    """``main`` kept "a stop signal was said" from a CliRunner command that ran earlier in the
    process, and ended a command that completed normally by setting SIGINT and SIGTERM to
    SIG_IGN: Ctrl-C no longer stopped that process (a test session, a notebook)."""
    assert _signals_after(INTERRUPTED_IN_RUNNER, MAIN_HELP) == "True True"


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signal dispositions")
def test_an_interrupted_runner_command_after_main_leaves_the_process_signals_alone() -> None:
    """After ``main`` returned, its handlers stayed recorded as the command's (``_found``, "None
    outside main"): a CliRunner command interrupted later in the process set the process's
    SIGINT and SIGTERM to SIG_IGN."""
    assert _signals_after(MAIN_HELP, INTERRUPTED_IN_RUNNER) == "True True"


def test_updated_refuses_an_unknown_field_in_one_line_as_the_constructor_does() -> None:
    """``MonitorConfig(...)`` refuses with a one-line ConfigError naming the field meant;
    ``config.updated(...)``, its documented validated copy, raised pydantic's four-line
    ValidationError, not a ConfigError, for the same slip."""
    with pytest.raises(ConfigError) as info:
        MonitorConfig().updated(intervall_s=1.0)
    meant = "intervall_s: unknown field; did you mean 'interval_s'?"
    assert str(info.value) == f"MonitorConfig: {meant}"


def test_updated_still_gives_a_validated_copy() -> None:
    """The fix keeps ``updated``'s contract: the copy is validated, the original unchanged."""
    cfg = MonitorConfig()
    assert cfg.updated(interval_s=0.5).interval_s == 0.5
    with pytest.raises(ConfigError, match="interval_s"):
        cfg.updated(interval_s=0.0)
    assert cfg.interval_s == 0.1
