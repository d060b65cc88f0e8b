"""N Nanonis TCP simulators in a separate process, for the TCP benchmarks.

A separate process so the servers' event loop never competes with the client under test for
the GIL: the 5 ms latency then means 5 ms, for trajmon and for the baselines alike.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
from collections.abc import Iterator

__all__ = ["servers"]


async def _serve(count: int, latency_s: float) -> None:
    from simulators.nanonis_server import NanonisServer
    from simulators.stm_model import STMModel

    async with contextlib.AsyncExitStack() as stack:
        ports = []
        for i in range(count):
            srv = NanonisServer(STMModel(seed=i), port=0, latency_s=latency_s, seed=i)
            await stack.enter_async_context(srv)
            ports.append(srv.port)
        print(json.dumps(ports), flush=True)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, sys.stdin.read)  # until the parent closes our stdin


@contextlib.contextmanager
def servers(count: int, latency_s: float) -> Iterator[list[int]]:
    """Start ``count`` servers with ``latency_s`` per request; yields their ports."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.tcp_servers", str(count), str(latency_s)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError("the simulator process exited before listening")
        yield [int(p) for p in json.loads(line)]
    finally:
        if proc.stdin is not None:
            proc.stdin.close()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


if __name__ == "__main__":
    asyncio.run(_serve(int(sys.argv[1]), float(sys.argv[2])))
