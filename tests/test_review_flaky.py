"""The suite's reliability on a loaded machine: ``FakeClock.wait_for_sleepers``, which tests use
to let a task busy on a worker thread (an instrument read, an aiosqlite commit) come back and
sleep on the clock before they move time."""

from __future__ import annotations

import threading

import anyio

from trajmon import FakeClock


async def test_wait_for_sleepers_returns_once_a_task_back_from_a_thread_sleeps() -> None:
    """A task waiting on a worker thread is not parked on the clock; ``advance`` cannot wait
    for it, this does. Woken only by a sleeper's arrival: no polling, no real-time wait."""
    clock = FakeClock()
    answer = threading.Event()
    deadlines: list[float] = []

    async def commit_then_sleep() -> None:
        await anyio.to_thread.run_sync(answer.wait, 10)  # a commit on aiosqlite's thread
        deadlines.append(clock.monotonic() + 1.0)
        await clock.sleep_until(deadlines[-1])

    async with anyio.create_task_group() as tg:
        tg.start_soon(commit_then_sleep)
        with anyio.move_on_after(0.05):  # a real-time guard only: nothing may end the wait
            await clock.wait_for_sleepers(1)
        assert clock.sleepers == 0 and deadlines == [], "returned before the task slept"
        answer.set()
        with anyio.fail_after(10):
            await clock.wait_for_sleepers(1)
        assert deadlines == [1001.0], "its deadline taken from the clock before it moved"
        await clock.advance(1.0)
    assert clock.sleepers == 0


async def test_wait_for_sleepers_counts_only_tasks_parked_on_the_clock() -> None:
    """A task whose deadline has come passes a checkpoint without sleeping: it is not one of
    the sleepers, and a wait for two returns only when a second task really sleeps."""
    clock = FakeClock()
    woke: list[str] = []

    async def sleeper(name: str, deadline: float) -> None:
        await clock.sleep_until(deadline)
        woke.append(name)

    async with anyio.create_task_group() as tg:
        tg.start_soon(sleeper, "due", clock.monotonic())
        tg.start_soon(sleeper, "first", 1000.5)
        with anyio.fail_after(10):
            await clock.wait_for_sleepers(1)
        assert woke == ["due"] and clock.sleepers == 1
        with anyio.move_on_after(0.05):  # a real-time guard only: nothing may end the wait
            await clock.wait_for_sleepers(2)
        assert clock.sleepers == 1
        tg.start_soon(sleeper, "second", 1000.25)
        with anyio.fail_after(10):
            await clock.wait_for_sleepers(2)
        await clock.advance(1.0)
    assert woke == ["due", "second", "first"]
