"""ReadyGate end-to-end: real uvicorn/Starlette backend (racy_backend.py), real Python clients.

Every test that talks to a backend runs against both uvicorn engines (websockets, wsproto).
Tests parameterised with `via="direct"` talk to the backend without ReadyGate; they need no
readygate binary and show what the backend does on its own.
"""

from __future__ import annotations

import asyncio
import collections
import json
import time
import uuid

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from conftest import free_port

N_CLIENTS = 500
CONCURRENCY = 100
OPEN_TIMEOUT = 10.0
CLOSE_TIMEOUT = 3.0
CLIENT_TIMEOUT = 20.0  # one client, connect to echo
READY_FRAGMENT = '"type":"connection_ready"'
# Delay-gate scenario. A 5 ms window is hardly ever hit by a Python client on loopback (the
# client needs longer than that to answer the 101), so the window is 50 ms and the delay 200.
SHORT_SETUP_MS = 50
GATE_DELAY_MS = 200


def client(url: str, **kwargs):
    kwargs.setdefault("open_timeout", OPEN_TIMEOUT)
    kwargs.setdefault("close_timeout", CLOSE_TIMEOUT)
    kwargs.setdefault("ping_interval", None)
    # permessage-deflate is off by default so each test checks one thing; the extension has
    # its own tests (test_permessage_deflate_offered).
    kwargs.setdefault("compression", None)
    # websockets honours HTTP(S)_PROXY by default; these tests only ever talk to 127.0.0.1.
    return connect(url, proxy=None, **kwargs)


def is_ready_message(msg) -> bool:
    return isinstance(msg, str) and READY_FRAGMENT in msg


async def wait_ready(ws) -> None:
    """Direct sessions: wait for the backend's readiness message before sending."""
    msg = await ws.recv()
    assert is_ready_message(msg), f"expected the readiness message first, got {msg!r}"


async def recv_data(ws):
    """Next message from the backend, skipping the readiness message."""
    while True:
        msg = await ws.recv()
        if not is_ready_message(msg):
            return msg


def describe_close(e: ConnectionClosed) -> str:
    if e.rcvd is None:
        return "closed:no-close-frame"
    return f"closed:{e.rcvd.code} {e.rcvd.reason}".rstrip()


def count_code(outcomes: collections.Counter, code: int) -> int:
    return sum(c for o, c in outcomes.items() if o == f"closed:{code}" or o.startswith(f"closed:{code} "))


async def early_client(url: str, i: int, sem: asyncio.Semaphore, **kwargs) -> str:
    """Connect, send at once after the handshake, wait for the echo. Returns an outcome."""
    payload = f"early-{i}-{uuid.uuid4().hex}"
    async with sem:
        try:
            async with asyncio.timeout(CLIENT_TIMEOUT):
                async with client(url, **kwargs) as ws:
                    await ws.send(payload)
                    msg = await recv_data(ws)
                    return "ok" if msg == payload else f"wrong-echo:{str(msg)[:40]}"
        except ConnectionClosed as e:
            return describe_close(e)
        except InvalidStatus as e:
            return f"http:{e.response.status_code}"
        except TimeoutError:
            return "timeout"
        except OSError as e:
            return f"oserror:{type(e).__name__}"


async def run_early_clients(url: str, n: int = N_CLIENTS, **kwargs) -> collections.Counter:
    sem = asyncio.Semaphore(CONCURRENCY)
    outcomes = await asyncio.gather(*(early_client(url, i, sem, **kwargs) for i in range(n)))
    return collections.Counter(outcomes)


def assert_none_lost(outcomes: collections.Counter, rg=None) -> None:
    lost = sum(c for o, c in outcomes.items() if o != "ok")
    detail = f"outcomes {dict(outcomes)}"
    if lost and rg is not None:
        detail += f"\nreadygate log tail:\n{rg.log(12)}"
    assert lost == 0, f"{lost} of {sum(outcomes.values())} early clients lost: {detail}"


def start_via(request, backend, via: str, **rg_env):
    """Base ws:// URL to reach `backend`: directly, or through ReadyGate in accept mode `via`."""
    if via == "direct":
        return backend.ws_url, None
    start_readygate = request.getfixturevalue("readygate")
    env = {"READYGATE_ACCEPT_MODE": via, "READYGATE_READY_GATE": "message"}
    env.update(rg_env)
    rg = start_readygate(backend.port, **env)
    return rg.ws_url, rg


# --------------------------------------------------------------------------- the race


async def test_direct_early_clients_are_mostly_lost(backend):
    """Without ReadyGate the racy backend kills most early-sending sessions with 1011."""
    b = backend(SETUP_MS=200)
    outcomes = await run_early_clients(f"{b.ws_url}/echo")
    assert count_code(outcomes, 1011) > N_CLIENTS // 2, (
        f"expected the backend to lose most early clients with 1011, got {dict(outcomes)}")


async def test_direct_short_window_still_loses(backend):
    """The delay-gate scenario's window (SHORT_SETUP_MS) is a real race without ReadyGate.

    How many are lost depends on client speed (measured: 55-100 %), so the bound is loose.
    """
    b = backend(SETUP_MS=SHORT_SETUP_MS, SEND_READY=0)
    outcomes = await run_early_clients(f"{b.ws_url}/echo")
    assert count_code(outcomes, 1011) > N_CLIENTS // 5, (
        f"expected a {SHORT_SETUP_MS} ms set-up to lose early clients, got {dict(outcomes)}")


@pytest.mark.parametrize("accept_mode", ["immediate", "upstream"])
async def test_message_gate_loses_nothing(backend, readygate, accept_mode):
    b = backend(SETUP_MS=200, SEND_READY=1)
    rg = readygate(b.port, READYGATE_READY_GATE="message", READYGATE_ACCEPT_MODE=accept_mode)
    outcomes = await run_early_clients(f"{rg.ws_url}/echo")
    assert_none_lost(outcomes, rg)


async def test_delay_gate_loses_nothing(backend, readygate):
    """Race window (SHORT_SETUP_MS) well inside the gate's delay (GATE_DELAY_MS)."""
    b = backend(SETUP_MS=SHORT_SETUP_MS, SEND_READY=0)
    rg = readygate(b.port, READYGATE_READY_GATE="delay", READYGATE_BASE_DELAY_MS=GATE_DELAY_MS,
                   READYGATE_HANDSHAKE_TIMEOUT_MS=5000)
    outcomes = await run_early_clients(f"{rg.ws_url}/echo")
    assert_none_lost(outcomes, rg)


async def test_session_lines_carry_the_session_id(backend, readygate):
    """The race event and the summary a session logs name the same session id."""
    b = backend(SETUP_MS=SHORT_SETUP_MS, SEND_READY=0)
    rg = readygate(b.port, READYGATE_READY_GATE="delay", READYGATE_BASE_DELAY_MS=GATE_DELAY_MS,
                   READYGATE_HANDSHAKE_TIMEOUT_MS=5000)
    assert_none_lost(await run_early_clients(f"{rg.ws_url}/echo?id=one", n=1), rg)
    # The summary is written when both connections have closed; poll the log with a deadline.
    deadline = time.monotonic() + 5
    summaries = []
    while time.monotonic() < deadline:
        summaries = [r for r in rg.records() if r.get("message") == "session_summary"]
        if summaries:
            break
        await asyncio.sleep(0.02)
    assert len(summaries) == 1, rg.log()
    session = summaries[0].get("session")
    assert session, summaries[0]
    early = [r for r in rg.records() if r.get("message") == "early_client_frames"]
    assert [r.get("session") for r in early] == [session], rg.log()


async def test_cold_start_backend_after_readygate(backend, readygate):
    """ReadyGate up first; the backend starts 1 s later. Clients connect from t=0."""
    port = free_port()
    rg = readygate(port, READYGATE_READY_GATE="message", READYGATE_ACCEPT_MODE="immediate",
                   READYGATE_HANDSHAKE_TIMEOUT_MS=5000)
    clients = asyncio.create_task(run_early_clients(f"{rg.ws_url}/echo"))
    await asyncio.sleep(1.0)  # the scenario (cold start), not synchronisation
    assert not clients.done(), "clients finished before the backend existed"
    started_at = time.monotonic()
    await asyncio.to_thread(backend, port=port, SETUP_MS=200, SEND_READY=1)
    outcomes = await clients
    assert_none_lost(outcomes, rg)
    assert time.monotonic() - started_at < 60


@pytest.mark.parametrize("accept_mode", ["immediate", "upstream"])
async def test_permessage_deflate_offered(backend, readygate, accept_mode):
    """Clients that offer permessage-deflate (browsers do; both uvicorn engines accept it).

    immediate: the extension is stripped on both sides (DESIGN §2), so none is negotiated.
    upstream: it is passed through; the message gate must still see the (compressed) ready
    message and early frames must still be delivered.
    """
    b = backend(SETUP_MS=200, SEND_READY=1)
    rg = readygate(b.port, READYGATE_READY_GATE="message", READYGATE_ACCEPT_MODE=accept_mode)
    async with asyncio.timeout(CLIENT_TIMEOUT):
        async with client(f"{rg.ws_url}/echo", compression="deflate") as ws:
            extensions = ws.response.headers.get("Sec-WebSocket-Extensions")
            if accept_mode == "immediate":
                assert extensions is None, f"immediate mode negotiated {extensions!r}"
            await ws.send("compressible " * 10)
            assert await recv_data(ws) == "compressible " * 10
    outcomes = await run_early_clients(f"{rg.ws_url}/echo", n=50, compression="deflate")
    assert_none_lost(outcomes, rg)


# --------------------------------------------------------------------------- subprotocols


async def session_info(ws) -> dict:
    await ws.send("__info__")
    return json.loads(await recv_data(ws))


async def test_subprotocol_immediate_configured_chosen_by_readygate(backend, readygate):
    b = backend(SETUP_MS=20, BACKEND_SUBPROTOCOLS="chat.v1,chat.v2")
    rg = readygate(b.port, READYGATE_ACCEPT_MODE="immediate", READYGATE_READY_GATE="message",
                   READYGATE_SUBPROTOCOLS="chat.v1,chat.v2")
    async with asyncio.timeout(CLIENT_TIMEOUT):
        async with client(f"{rg.ws_url}/echo",
                          subprotocols=["x.unknown", "chat.v2", "chat.v1"]) as ws:
            assert ws.subprotocol == "chat.v2"  # first offered one that is configured
            info = await session_info(ws)
            assert info["offered"] == ["chat.v2"], "only the chosen one is offered upstream"
            assert info["chosen"] == "chat.v2"
            await ws.send("hello")
            assert await recv_data(ws) == "hello"


@pytest.mark.parametrize("accept_mode", ["immediate", "upstream"])
async def test_subprotocol_backend_choice_mirrored(backend, readygate, accept_mode):
    """READYGATE_SUBPROTOCOLS unset (immediate) or upstream mode: the backend decides."""
    b = backend(SETUP_MS=20, BACKEND_SUBPROTOCOLS="chat.v2")
    rg = readygate(b.port, READYGATE_ACCEPT_MODE=accept_mode, READYGATE_READY_GATE="message")
    async with asyncio.timeout(CLIENT_TIMEOUT):
        async with client(f"{rg.ws_url}/echo", subprotocols=["chat.v1", "chat.v2"]) as ws:
            assert ws.subprotocol == "chat.v2"  # not the client's first: the backend's choice
            info = await session_info(ws)
            assert info["offered"] == ["chat.v1", "chat.v2"]
            assert info["chosen"] == "chat.v2"
            await ws.send("hello")
            assert await recv_data(ws) == "hello"


@pytest.mark.parametrize("accept_mode", ["immediate", "upstream"])
async def test_subprotocol_never_invented(backend, readygate, accept_mode):
    """The backend picks none of the offered protocols: the client gets none either."""
    b = backend(SETUP_MS=20, BACKEND_SUBPROTOCOLS="")
    rg = readygate(b.port, READYGATE_ACCEPT_MODE=accept_mode, READYGATE_READY_GATE="message")
    async with asyncio.timeout(CLIENT_TIMEOUT):
        async with client(f"{rg.ws_url}/echo", subprotocols=["chat.v1", "chat.v2"]) as ws:
            assert ws.subprotocol is None
            await ws.send("hello")
            assert await recv_data(ws) == "hello"


# --------------------------------------------------------------------------- close codes


@pytest.mark.parametrize("via", ["direct", "immediate", "upstream"])
async def test_client_close_code_reaches_backend(request, backend, via):
    b = backend(SETUP_MS=20)
    base, rg = start_via(request, b, via)
    tag = uuid.uuid4().hex
    async with asyncio.timeout(CLIENT_TIMEOUT):
        async with client(f"{base}/echo?id={tag}") as ws:
            if via == "direct":
                await wait_ready(ws)
            await ws.send("before close")
            assert await recv_data(ws) == "before close"
            await ws.close(code=4001, reason="client bye")
        # The backend records the close it saw; poll its log with a deadline.
        deadline = time.monotonic() + 5
        mine = []
        while time.monotonic() < deadline:
            mine = [r for r in b.close_records() if r["query"] == f"id={tag}"]
            if mine:
                break
            await asyncio.sleep(0.02)
    assert mine, f"backend recorded no close for this session; records {b.close_records()}"
    assert mine[0]["code"] == 4001
    assert mine[0]["reason"] == "client bye"
    assert mine[0]["by"] == "client"


@pytest.mark.parametrize("via", ["direct", "immediate", "upstream"])
async def test_backend_close_code_reaches_client(request, backend, via):
    b = backend(SETUP_MS=20)
    base, rg = start_via(request, b, via)
    async with asyncio.timeout(CLIENT_TIMEOUT):
        async with client(f"{base}/close/4002") as ws:
            if via == "direct":
                await wait_ready(ws)
            await ws.send("last words")
            assert await recv_data(ws) == "last words"
            with pytest.raises(ConnectionClosed) as closed:
                await ws.recv()
    assert closed.value.rcvd is not None, "no close frame received"
    assert closed.value.rcvd.code == 4002
    assert closed.value.rcvd.reason == "backend closing"


# --------------------------------------------------------------------------- rejections


@pytest.mark.parametrize("via", ["direct", "upstream"])
async def test_forbidden_is_http_403(request, backend, via):
    """Backend rejects the upgrade; directly and in upstream mode the client sees HTTP 403."""
    b = backend(SETUP_MS=20)
    base, rg = start_via(request, b, via)
    with pytest.raises(InvalidStatus) as rejected:
        async with asyncio.timeout(CLIENT_TIMEOUT):
            async with client(f"{base}/forbidden"):
                pass
    assert rejected.value.response.status_code == 403


async def test_forbidden_immediate_is_close_1008(backend, readygate):
    b = backend(SETUP_MS=20)
    rg = readygate(b.port, READYGATE_ACCEPT_MODE="immediate", READYGATE_READY_GATE="message")
    async with asyncio.timeout(CLIENT_TIMEOUT):
        async with client(f"{rg.ws_url}/forbidden") as ws:
            with pytest.raises(ConnectionClosed) as closed:
                await ws.recv()
    assert closed.value.rcvd is not None, "no close frame received"
    assert closed.value.rcvd.code == 1008
    assert closed.value.rcvd.reason == "upstream rejected: 403"


@pytest.mark.parametrize("via", ["direct", "upstream"])
@pytest.mark.parametrize("status", [401, 403, 404])
async def test_denial_response_relayed_as_is(request, backend, via, status):
    """Status, headers and body of the backend's rejection reach the client unchanged."""
    b = backend(SETUP_MS=20)
    base, rg = start_via(request, b, via)
    with pytest.raises(InvalidStatus) as rejected:
        async with asyncio.timeout(CLIENT_TIMEOUT):
            async with client(f"{base}/deny/{status}"):
                pass
    response = rejected.value.response
    assert response.status_code == status
    assert response.headers.get("x-backend") == "racy-backend"
    assert response.body == f"denied by backend: {status}".encode()


@pytest.mark.parametrize("status,code", [(401, 1008), (403, 1008), (404, 1011), (500, 1014)])
async def test_rejection_immediate_close_code(backend, readygate, status, code):
    b = backend(SETUP_MS=20)
    rg = readygate(b.port, READYGATE_ACCEPT_MODE="immediate", READYGATE_READY_GATE="message")
    async with asyncio.timeout(CLIENT_TIMEOUT):
        async with client(f"{rg.ws_url}/deny/{status}") as ws:
            with pytest.raises(ConnectionClosed) as closed:
                await ws.recv()
    assert closed.value.rcvd is not None, "no close frame received"
    assert closed.value.rcvd.code == code
    assert closed.value.rcvd.reason == f"upstream rejected: {status}"


# --------------------------------------------------------------------------- proxy-made closes


async def test_backend_unreachable_is_close_1013(readygate):
    """Nothing listens upstream: after the handshake timeout the client gets 1013."""
    rg = readygate(free_port(), READYGATE_ACCEPT_MODE="immediate", READYGATE_READY_GATE="message",
                   READYGATE_HANDSHAKE_TIMEOUT_MS=500)
    async with asyncio.timeout(CLIENT_TIMEOUT):
        async with client(f"{rg.ws_url}/echo") as ws:
            await ws.send("anyone there?")
            with pytest.raises(ConnectionClosed) as closed:
                await ws.recv()
    assert closed.value.rcvd is not None, "no close frame received"
    assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (1013, "upstream unavailable")


async def test_ready_timeout_is_close_1013(backend, readygate):
    """The backend never sends the ready message: readiness timeout closes with 1013."""
    b = backend(SETUP_MS=20, SEND_READY=0)
    rg = readygate(b.port, READYGATE_ACCEPT_MODE="immediate", READYGATE_READY_GATE="message",
                   READYGATE_HANDSHAKE_TIMEOUT_MS=500)
    async with asyncio.timeout(CLIENT_TIMEOUT):
        async with client(f"{rg.ws_url}/echo") as ws:
            await ws.send("held forever")
            with pytest.raises(ConnectionClosed) as closed:
                await ws.recv()
    assert closed.value.rcvd is not None, "no close frame received"
    assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (1013, "upstream not ready")


async def test_sigterm_drains_then_goes_away(backend, readygate):
    """SIGTERM: the listener closes, a live session runs on for the drain, then gets 1001."""
    b = backend(SETUP_MS=20, SEND_READY=1)
    rg = readygate(b.port, READYGATE_READY_GATE="message", READYGATE_DRAIN_TIMEOUT_MS=1500)
    async with asyncio.timeout(CLIENT_TIMEOUT):
        async with client(f"{rg.ws_url}/echo") as ws:
            await ws.send("before")
            assert await recv_data(ws) == "before"
            rg.proc.terminate()
            assert await asyncio.to_thread(rg.wait_for_records, "shutting_down"), rg.log()
            await ws.send("during the drain")
            assert await recv_data(ws) == "during the drain"
            with pytest.raises(ConnectionClosed) as closed:
                await ws.recv()
    assert closed.value.rcvd is not None, "no close frame received"
    assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (1001, "going away")
    assert await asyncio.to_thread(rg.proc.wait, 10) == 0, rg.log()
    assert rg.wait_for_records("drain_ended"), rg.log()
