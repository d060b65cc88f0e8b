"""Connecting to the instrument, and the run command's start-up and shutdown edges.

Every controller here is a real socket on 127.0.0.1 that answers (or does not) as scripted;
the waits are for that socket to be reached, never for a fixed time.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fake_controllers import FakeController
from procs import ENV, TRAJMON, run_args

from trajmon.cli.connect import connect_nanonis
from trajmon.cli.runner import unless_output_gone
from trajmon.config import ConfigError
from trajmon.drivers.nanonis import NanonisSTM
from trajmon.drivers.nanonis_protocol import (
    COMMANDS,
    HEADER_SIZE,
    decode_header,
    encode_error,
    encode_header,
    pack_body,
)

DOCS = Path(__file__).resolve().parents[1] / "docs"

# answer(request header) -> bytes to send back, then the connection is closed; None: close at once
Answer = Callable[[bytes], bytes | None]


def _error_reply(header: bytes) -> bytes:
    command, _, _ = decode_header(header)
    body = pack_body(COMMANDS[command].returns, [[]]) + encode_error(3, "interface busy")
    return encode_header(command, len(body)) + body


def _http(header: bytes) -> bytes:
    return b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"


def _close(header: bytes) -> bytes | None:
    return None


class Controller(FakeController):
    """Gives each request ``answer``; ``silent`` answers nothing until the test ends.
    ``accepted`` is set at the first connection."""

    def __init__(self, answer: Answer | None) -> None:
        self.answer = answer
        self.accepted = threading.Event()
        super().__init__()

    def serve(self, conn: socket.socket) -> None:
        self.accepted.set()
        if self.answer is None:
            self.done.wait(60)
            return
        out = self.answer(conn.recv(HEADER_SIZE, socket.MSG_WAITALL))
        if out is not None:
            conn.sendall(out)


@pytest.fixture
def controller() -> Iterator[Callable[[Answer | None], Controller]]:
    made: list[Controller] = []

    def make(answer: Answer | None) -> Controller:
        made.append(Controller(answer))
        return made[-1]

    yield make
    for c in made:
        c.close()


def _free_port() -> int:
    with socket.create_server(("127.0.0.1", 0)) as s:
        return int(s.getsockname()[1])


# -- 1. what the refusal says -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("answer", "said"),
    [
        (_error_reply, "answered with an error: Signals.NamesGet: interface busy"),
        (_http, "answered, but not as a Nanonis TCP interface"),
        (_close, "accepted the connection, then closed it without a reply"),
        (None, "accepted the connection but sent no reply"),
    ],
    ids=["error-reply", "http", "closes", "silent"],
)
async def test_a_controller_that_answered_is_not_called_unreachable(
    controller: Callable[[Answer | None], Controller], answer: Answer | None, said: str
) -> None:
    """The controller answered `Signals.NamesGet` with an error reply (or something else
    answered): "instrument unreachable" sent the operator to check cables and addresses."""
    fake = controller(answer)
    with pytest.raises(ConfigError) as info:
        async with connect_nanonis("127.0.0.1", fake.port, 0.5):
            pytest.fail("connected")
    text = str(info.value)
    assert text.startswith(f"instrument at 127.0.0.1:{fake.port} ")
    assert said in text
    assert "unreachable" not in text


async def test_nothing_listening_is_still_unreachable() -> None:
    port = _free_port()
    with pytest.raises(ConfigError, match=rf"^instrument unreachable at 127\.0\.0\.1:{port}: "):
        async with connect_nanonis("127.0.0.1", port, 0.5):
            pytest.fail("connected")


def test_the_driver_tells_an_answer_from_no_listener(
    controller: Callable[[Answer | None], Controller],
) -> None:
    from trajmon.drivers.nanonis import HandshakeError  # new here: imported where it is tested

    fake = controller(_error_reply)
    with pytest.raises(HandshakeError, match="interface busy"):
        NanonisSTM("stm_busy", port=fake.port, timeout=0.5)
    with pytest.raises(ConnectionError) as info:
        NanonisSTM("stm_none", port=_free_port(), timeout=0.5)
    assert not isinstance(info.value, HandshakeError)


def test_an_ipv6_address_is_shown_in_brackets() -> None:
    """``--host ::1 --port 1`` was reported as "unreachable at ::1:1"."""
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    with pytest.raises(ConnectionError) as info:
        NanonisSTM("stm_v6", address="::1", port=_free_port(), timeout=0.5)
    assert "Nanonis TCP interface at [::1]:" in str(info.value)


# -- 2. a stop signal while connecting ----------------------------------------------------------


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_stop_signal_while_connecting_says_so_and_exits_at_once(
    controller: Callable[[Answer | None], Controller],
    tmp_path: Path,
    signum: signal.Signals,
    code: int,
) -> None:
    """Ctrl-C while the controller had accepted the connection but not answered: the old code
    waited for the whole read timeout (60 s here), then said "instrument unreachable" (exit 2);
    SIGTERM killed it without a word."""
    fake = controller(None)
    db = tmp_path / "c.db"
    proc = subprocess.Popen(
        [*TRAJMON, *run_args(db, "c", fake.port, "--read-timeout-s", "60", "--duration", "1")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
    )
    try:
        assert fake.accepted.wait(60), "trajmon never connected"
        proc.send_signal(signum)
        out, err = proc.communicate(timeout=20)  # far less than the read timeout
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == code, err
    assert err == (
        f"trajmon: interrupted while connecting to 127.0.0.1:{fake.port}; nothing was recorded\n"
    )
    assert out == ""
    assert not db.exists()
    assert "interrupted while connecting to" in (DOCS / "operations.md").read_text("utf-8")


# -- 3. closed standard streams -----------------------------------------------------------------


def test_json_with_stdio_closed_keeps_the_exit_code(tmp_path: Path) -> None:
    """Started with stdin and stdout closed, Python has no ``sys.stdout``: ``--json`` was an
    AttributeError traceback and exit code 1."""
    result = subprocess.run(
        ["sh", "-c", 'exec "$@" <&- >&-', "sh", *TRAJMON, "config", "show", "--json"],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""


def test_stdio_closed_at_start_is_devnull_before_anything_is_opened(tmp_path: Path) -> None:
    """With 0-2 closed, the next file a command opened took fd 0, 1 or 2 — where "stderr"
    writes (a signal handler's ``os.write(2, …)``, a C library's diagnostics) land."""
    probe = (
        "import os, sys\n"
        "from trajmon import cli\n"
        "def command():\n"
        "    f = open(sys.argv[1] + '/probe.txt', 'w')\n"
        "    fds = [f'/proc/self/fd/{n}' for n in (0, 1, 2)]\n"
        "    links = [os.readlink(p) if os.path.lexists(p) else 'closed' for p in fds]\n"
        "    f.write(' '.join([str(f.fileno()), *links]))\n"
        "    f.close()\n"
        "cli.app = command\n"
        "cli.main()\n"
    )
    result = subprocess.run(
        ["sh", "-c", 'exec "$@" <&- >&- 2>&-', "sh", sys.executable, "-c", probe, str(tmp_path)],
        env=ENV,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0
    fd, *targets = (tmp_path / "probe.txt").read_text().split()
    assert int(fd) > 2
    assert targets == [os.devnull] * 3


def test_a_broken_stderr_without_stdout_ends_only_the_output(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """stdout closed at the start and stderr's reader gone (``>&- 2>&1 | head -1``): the
    progress line's EPIPE made unless_output_gone raise AttributeError, which ended the run."""
    monkeypatch.setattr(sys, "stdout", None)
    with unless_output_gone():
        raise BrokenPipeError(32, "Broken pipe")


# -- 4. the exit table ----------------------------------------------------------------------------


def test_a_db_in_a_missing_directory_has_the_code_the_exit_table_gives(tmp_path: Path) -> None:
    db = tmp_path / "nowhere" / "x.db"
    result = subprocess.run(
        [*TRAJMON, "run", "--sim", "--run-name", "m", "--duration", "1", "--db", str(db)],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=60,
        check=False,
    )
    assert "does not exist" in result.stderr
    table = (DOCS / "operations.md").read_text("utf-8").split("## Exit codes", 1)[1]
    rows = {int(m.group(1)): m.group(2) for m in re.finditer(r"^\| (\d+) \| (.*) \|$", table, re.M)}
    assert [code for code, text in rows.items() if "directory missing" in text] == [
        result.returncode
    ]
