"""Faults found in the nineteenth review session; each test failed on the code before its fix."""

from __future__ import annotations

import anyio

from trajmon import FakeClock


async def test_a_task_already_due_runs_at_its_time_before_the_clock_jumps() -> None:
    """CI failed once on test_review_livehang: a poll group whose next tick was due at the
    current time had only a checkpoint to pass, but ``advance(3.0)`` moved the clock before the
    group ran, so its read began 3 s late and the live view showed no read in flight."""
    clock = FakeClock()
    seen: list[float] = []

    async def tick() -> None:
        await clock.sleep_until(clock.monotonic())  # due now: only a checkpoint
        seen.append(clock.monotonic())

    async with anyio.create_task_group() as tg:
        tg.start_soon(tick)
        await clock.advance(3.0)
    assert seen == [1000.0]
    assert clock.monotonic() == 1003.0


def test_a_reply_that_does_not_decode_names_its_command() -> None:
    """A malformed reply said only "body truncated: need 8 bytes, have 6": in the run's error
    rows, beside a channel read through several commands, nothing said which reply it was."""
    import struct

    import pytest

    from trajmon.drivers.nanonis_protocol import ProtocolError, encode_error, reply_values

    with pytest.raises(ProtocolError, match=r"^Bias\.Get reply: body truncated"):
        reply_values("Bias.Get", b"\0\0")
    with pytest.raises(ProtocolError, match=r"^Bias\.Get reply: 4 bytes after the error section"):
        reply_values("Bias.Get", struct.pack(">f", 0.5) + encode_error() + b"\0\0\0\0")
