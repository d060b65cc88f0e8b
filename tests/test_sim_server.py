"""NanonisServer: framing, every command, errors, latency, faults, outages and the vendor client."""

from __future__ import annotations

import asyncio
import gc
import json
import socket
import struct
import threading
import time
import warnings
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
from nanonis_spm import Nanonis

from simulators.nanonis_server import NanonisServer
from simulators.stm_model import STMModel, f32
from simulators.threaded_server import ThreadedNanonisServer
from trajmon.drivers.nanonis_protocol import (
    COMMANDS,
    HEADER_SIZE,
    decode_error,
    decode_header,
    encode_header,
    pack_body,
    unpack_body,
)

T = TypeVar("T")


class RawClient:
    """Speaks the protocol with the shared codec over a plain asyncio stream."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def connect(cls, port: int) -> RawClient:
        return cls(*await asyncio.open_connection("127.0.0.1", port))

    def send(self, command: str, *args: Any, fmt: tuple[str, ...] | None = None) -> None:
        formats = fmt if fmt is not None else COMMANDS[command].args
        body = pack_body(formats, args)
        self.writer.write(encode_header(command, len(body)) + body)

    async def receive(self, command: str) -> tuple[list[Any], int, str]:
        name, size, _ = decode_header(await self.reader.readexactly(HEADER_SIZE))
        assert name == command
        body = await self.reader.readexactly(size)
        spec = COMMANDS.get(command)
        values, offset = unpack_body(spec.returns, body) if spec else ([], 0)
        status, message = decode_error(body, offset)
        # the error section ends the body; its text is one byte per character (Latin-1)
        assert offset + 8 + len(message.encode("latin-1")) == size
        return values, status, message

    async def call(self, command: str, *args: Any) -> list[Any]:
        self.send(command, *args)
        values, status, message = await self.receive(command)
        assert (status, message) == (0, "")
        return values

    async def close(self) -> None:
        self.writer.close()
        await self.writer.wait_closed()


@pytest.fixture
async def server() -> AsyncIterator[NanonisServer]:
    async with NanonisServer(STMModel(seed=0), port=0) as srv:
        yield srv


@pytest.fixture
async def client(server: NanonisServer) -> AsyncIterator[RawClient]:
    c = await RawClient.connect(server.port)
    yield c
    await c.close()


async def test_every_command_round_trips(server: NanonisServer, client: RawClient) -> None:
    m = server.model
    assert await client.call("Bias.Set", 0.42) == []
    assert await client.call("Bias.Get") == [f32(0.42)] == [m.get_bias()]
    current = (await client.call("Current.Get"))[0]
    assert 1e-12 < abs(current) < 1e-8
    assert 1e-10 < (await client.call("ZCtrl.ZPosGet"))[0] < 2e-9
    await client.call("ZCtrl.SetpntSet", 2.5e-10)
    assert await client.call("ZCtrl.SetpntGet") == [f32(2.5e-10)]
    await client.call("ZCtrl.OnOffSet", 0)
    assert await client.call("ZCtrl.OnOffGet") == [0]
    await client.call("ZCtrl.OnOffSet", 1)
    assert await client.call("ZCtrl.OnOffGet") == [1]
    await client.call("ZCtrl.GainSet", 1e-11, 2e-4, 5e-8)
    p, t, i = await client.call("ZCtrl.GainGet")
    assert (p, i) == (f32(1e-11), f32(5e-8)) and t == f32(p / i)
    assert await client.call("Scan.StatusGet") == [0]
    await client.call("Scan.Action", 0, 1)
    assert await client.call("Scan.StatusGet") == [1]
    await client.call("Scan.Action", 2, 0)
    assert await client.call("Scan.StatusGet") == [0]
    await client.call("Scan.Action", 3, 0)
    assert await client.call("Scan.StatusGet") == [1]
    await client.call("Scan.Action", 1, 0)
    assert await client.call("Scan.StatusGet") == [0]
    frame = [1e-9, -2e-9, 3e-8, 4e-8, 12.5]
    await client.call("Scan.FrameSet", *frame)
    assert await client.call("Scan.FrameGet") == [f32(v) for v in frame]
    (names,) = await client.call("Signals.NamesGet")
    assert names == m.signal_names()
    bias_idx = names.index("Bias (V)")
    assert await client.call("Signals.ValGet", bias_idx, 0) == [f32(0.42)]
    (vals,) = await client.call("Signals.ValsGet", [bias_idx, names.index("Z (m)")], 1)
    assert vals[0] == f32(0.42) and 1e-10 < vals[1] < 2e-9
    assert set(server.request_counts) == set(COMMANDS)
    assert server.total_requests == sum(server.request_counts.values())


async def test_unknown_command_and_bad_value_reply_with_error(
    server: NanonisServer, client: RawClient
) -> None:
    client.send("Foo.Bar", 1, fmt=("i",))
    values, status, message = await client.receive("Foo.Bar")
    assert values == [] and status != 0 and "Foo.Bar" in message
    client.send("ZCtrl.SetpntSet", -1e-9)
    _, status, message = await client.receive("ZCtrl.SetpntSet")
    assert status != 0 and "setpoint" in message
    client.send("Signals.ValGet", 999, 0)
    values, status, _ = await client.receive("Signals.ValGet")
    assert values == [0.0] and status != 0  # return layout kept on error
    assert await client.call("Bias.Get") == [f32(0.1)]  # connection still usable


async def test_no_reply_when_send_response_flag_is_clear(
    server: NanonisServer, client: RawClient
) -> None:
    body = pack_body(("f",), (0.7,))
    client.writer.write(encode_header("Bias.Set", len(body), send_response=False) + body)
    assert await client.call("Bias.Get") == [f32(0.7)]


async def test_latency_is_applied() -> None:
    async with NanonisServer(STMModel(seed=0), latency_s=0.15, jitter_s=0.05) as srv:
        c = await RawClient.connect(srv.port)
        t0 = time.monotonic()
        await c.call("Bias.Get")
        elapsed = time.monotonic() - t0
        await c.close()
    assert 0.15 <= elapsed < 1.0


async def test_fault_drop_error_hang(server: NanonisServer, client: RawClient) -> None:
    server.faults.error_next(command="Bias.Set", message="busy")
    assert await client.call("Bias.Get") == [f32(0.1)]  # other commands unaffected
    client.send("Bias.Set", 1.5)
    _, status, message = await client.receive("Bias.Set")
    assert status != 0 and message == "busy"
    assert await client.call("Bias.Get") == [f32(0.1)]  # the failed set was not applied

    server.faults.hang_next(seconds=0.3)
    client.send("Bias.Get")
    late = asyncio.create_task(client.receive("Bias.Get"))
    done, _ = await asyncio.wait({late}, timeout=0.1)
    assert not done  # no reply within the hang
    assert (await late)[0] == [f32(0.1)]  # then the late reply

    server.faults.drop_next(n=2)
    assert server.faults.pending == 2
    client.send("Bias.Get")
    with pytest.raises(asyncio.IncompleteReadError):
        await client.receive("Bias.Get")
    second = await RawClient.connect(server.port)
    second.send("Bias.Get")
    with pytest.raises(asyncio.IncompleteReadError):
        await second.receive("Bias.Get")
    await second.close()
    assert server.faults.pending == 0
    third = await RawClient.connect(server.port)
    assert await third.call("Bias.Get") == [f32(0.1)]
    await third.close()


async def test_stop_and_restart_on_same_port(server: NanonisServer, client: RawClient) -> None:
    port = server.port
    await client.call("Bias.Set", 0.3)
    await server.stop()
    assert not server.running
    with pytest.raises(asyncio.IncompleteReadError):
        await client.call("Bias.Get")  # the open connection was closed
    with pytest.raises(OSError):
        await RawClient.connect(port)
    await server.start()
    assert server.port == port
    again = await RawClient.connect(port)
    assert await again.call("Bias.Get") == [f32(0.3)]  # the model survived the outage
    await again.close()


async def test_stop_leaves_no_unclosed_transport_for_a_connection_accepted_just_before() -> None:
    """The race behind a flaky fault test: the listener has accepted a connection and
    ``stop()`` begins before that connection's transport is built (one loop iteration later).

    The handshake completes in the kernel; a few loop passes later the accept runs. Stopping
    after 0..3 passes hits the window on one of them (on Python 3.11 it was the second)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for passes in range(4):
            server = NanonisServer(STMModel(seed=1))
            await server.start()
            sock = socket.create_connection((server.host, server.port))
            for _ in range(passes):
                await asyncio.sleep(0)
            await server.stop()
            for _ in range(3):  # the connection's task runs and closes it
                await asyncio.sleep(0)
            sock.close()
            gc.collect()
    leaks = [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]
    assert not leaks, leaks


async def test_request_log_and_wait(tmp_path: Path) -> None:
    log = tmp_path / "requests.jsonl"
    async with NanonisServer(STMModel(seed=0), log_path=log) as srv:
        c = await RawClient.connect(srv.port)
        waiter = asyncio.create_task(srv.wait_for_requests(2, command="Bias.Get"))
        await c.call("Bias.Get")
        await c.call("Current.Get")
        await c.call("Bias.Get")
        await asyncio.wait_for(waiter, 5)
        await c.close()
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert [e["command"] for e in lines] == ["Bias.Get", "Current.Get", "Bias.Get"]
    assert all(e["status"] == "ok" for e in lines)


async def _in_thread(fn: Callable[[int], T], arg: int) -> T:
    """Run blocking client code in a thread of its own, joined before returning (no leftovers)."""
    loop = asyncio.get_running_loop()
    result: asyncio.Future[T] = loop.create_future()

    def target() -> None:
        try:
            value = fn(arg)
        except BaseException as exc:
            loop.call_soon_threadsafe(result.set_exception, exc)
        else:
            loop.call_soon_threadsafe(result.set_result, value)

    thread = threading.Thread(target=target, name="sim-test-client")
    thread.start()
    try:
        return await result
    finally:
        thread.join()


def _vendor_session(port: int) -> dict[str, Any]:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        nn = Nanonis(sock)
        out: dict[str, Any] = {}
        for name, call in {
            "bias": nn.Bias_Get,
            "current": nn.Current_Get,
            "z": nn.ZCtrl_ZPosGet,
            "setpoint": nn.ZCtrl_SetpntGet,
            "onoff": nn.ZCtrl_OnOffGet,
            "gains": nn.ZCtrl_GainGet,
            "status": nn.Scan_StatusGet,
            "frame": nn.Scan_FrameGet,
            "names": nn.Signals_NamesGet,
        }.items():
            out[name] = call()
        out["vals"] = nn.Signals_ValsGet([0, 3, 6], 0)
        out["sets"] = [
            nn.Bias_Set(0.5),
            nn.ZCtrl_SetpntSet(2e-10),
            nn.ZCtrl_OnOffSet(0),
            nn.ZCtrl_GainSet(1e-11, 1e-3, 1e-8),
            nn.Scan_FrameSet(1e-9, 2e-9, 3e-8, 4e-8, 10.0),
            nn.Scan_Action(0, 1),
        ]
        out["after"] = [
            nn.Bias_Get(),
            nn.ZCtrl_SetpntGet(),
            nn.ZCtrl_OnOffGet(),
            nn.ZCtrl_GainGet(),
            nn.Scan_FrameGet(),
            nn.Scan_StatusGet(),
        ]
        out["unknown"] = nn.quickSend("Foo.Bar", [], [], [])
        out["val"] = nn.Signals_ValGet(3, 0)
    return out


async def test_vendor_client_reads_and_sets(server: NanonisServer) -> None:
    out = await _in_thread(_vendor_session, server.port)
    m = server.model
    values = {k: v[2] for k, v in out.items() if k not in ("sets", "after", "unknown")}
    assert all(out[k][0] == "" for k in values)  # empty error string = success
    assert values["bias"] == [f32(0.1)]
    assert 1e-11 < values["current"][0] < 1e-9
    assert 1e-10 < values["z"][0] < 2e-9
    assert values["setpoint"] == [f32(100e-12)]
    assert values["onoff"] == [1]
    assert values["status"] == [0]
    assert values["frame"] == [0.0, 0.0, f32(50e-9), f32(50e-9), 0.0]
    size, count, names = values["names"]
    assert names == m.signal_names() and count == len(names)
    assert size == sum(4 + len(n) for n in names)
    count, triples = values["vals"]
    assert count == 3 and triples[1] == (f32(0.1),)
    assert all(r[0] == "" for r in out["sets"])
    bias, setpoint, onoff, gains, frame, status = (r[2] for r in out["after"])
    assert bias == [f32(0.5)] and setpoint == [f32(2e-10)] and onoff == [0]
    assert gains[0] == f32(1e-11) and gains[2] == f32(1e-8) and gains[1] == f32(gains[0] / gains[2])
    assert frame == [f32(1e-9), f32(2e-9), f32(3e-8), f32(4e-8), 10.0]
    assert status == [1]
    assert "Foo.Bar" in out["unknown"][0]
    assert out["val"][2] == [f32(0.5)]
    assert m.get_bias() == f32(0.5) and not m.get_feedback_on()


def test_threaded_server_with_vendor_client_and_outage() -> None:
    with ThreadedNanonisServer(STMModel(seed=0)) as srv:
        srv.faults.error_next(command="Bias.Get", message="injected")
        with socket.create_connection((srv.host, srv.port), timeout=10) as sock:
            nn = Nanonis(sock)
            assert "injected" in nn.Bias_Get()[0]
            assert nn.Bias_Get()[2] == [f32(0.1)]
        port = srv.port
        srv.stop()
        with pytest.raises(OSError), socket.create_connection((srv.host, port), timeout=5):
            pass
        srv.start()
        with socket.create_connection((srv.host, port), timeout=10) as sock:
            assert Nanonis(sock).Bias_Get()[2] == [f32(0.1)]
        assert srv.server.request_counts["Bias.Get"] == 3


def test_header_layout_matches_vendor_expectations() -> None:
    header = encode_header("Bias.Get", 12)
    assert len(header) == 40 and struct.unpack(">I", header[32:36]) == (12,)
