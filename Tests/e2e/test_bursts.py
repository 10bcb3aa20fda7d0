"""Readiness under bursts (issue "Readiness that holds under load"), against the real racy
uvicorn/Starlette backend: bursts of concurrent clients that each send the moment their handshake
is done. Under a burst the backend's event loop falls behind, so a fixed delay counted from its
101 stops covering its set-up; the load-aware ping gate, the adaptive delay and replay answer it.

Each burst is all-at-once (no concurrency limit): that is the load that makes the backend late.
"""
from __future__ import annotations

import asyncio
import collections

import pytest

from test_readiness import client, describe_close

BURSTS = 3
CLIENTS = 200
# The backend's set-up: 50 ms plus up to 50 ms of jitter, as in the measurements.
SETUP = {"SETUP_MS": "50", "SETUP_JITTER_MS": "50", "SEND_READY": "0"}


async def sender(url: str, i: int) -> str:
    try:
        async with asyncio.timeout(30):
            async with client(url) as ws:
                await ws.send(f"m{i}")
                msg = await ws.recv()
                return "ok" if msg == f"m{i}" else "wrong-echo"
    except Exception as error:  # noqa: BLE001 - every failure is an outcome to count
        from websockets.exceptions import ConnectionClosed

        return describe_close(error) if isinstance(error, ConnectionClosed) else type(error).__name__


async def bursts(url: str) -> list[collections.Counter]:
    results = []
    for _ in range(BURSTS):
        outcomes = await asyncio.gather(*(sender(url, i) for i in range(CLIENTS)))
        results.append(collections.Counter(outcomes))
    return results


def lost(outcomes: collections.Counter) -> int:
    return sum(c for o, c in outcomes.items() if o != "ok")


@pytest.mark.parametrize("engine", ["websockets"], indirect=True)
async def test_fixed_delay_loses_sessions_under_a_burst(backend, readygate):
    """The scenario is racy: the fixed 25 ms delay (production profile, adaptive off) loses sessions."""
    b = backend(**SETUP)
    rg = readygate(b.port, READYGATE_ENV="production", READYGATE_HANDSHAKE_TIMEOUT_MS="1000",
                   READYGATE_READY_GATE="delay", READYGATE_ADAPTIVE="false")
    results = await bursts(f"{rg.ws_url}/echo")
    assert sum(lost(r) for r in results) > 0, f"the scenario lost nothing: {results}"


@pytest.mark.parametrize("engine", ["websockets", "wsproto"], indirect=True)
async def test_replay_loses_nothing_in_any_burst(backend, readygate):
    """READYGATE_REPLAY=true with the defaults otherwise: every session survives every burst, and
    the replays are in the summaries."""
    b = backend(**SETUP)
    rg = readygate(b.port, READYGATE_ENV="production", READYGATE_HANDSHAKE_TIMEOUT_MS="1000", READYGATE_REPLAY="true")
    results = await bursts(f"{rg.ws_url}/echo")
    assert [lost(r) for r in results] == [0] * BURSTS, f"outcomes per burst: {results}\n{rg.log(12)}"
    summaries = rg.wait_for_records("session_summary", count=BURSTS * CLIENTS, timeout=30)
    assert all(s.get("end_reason") == "-" for s in summaries)
    replayed = sum(int(s.get("replays", "0")) for s in summaries)
    replays_logged = len([r for r in rg.records() if r.get("message") == "upstream_replay"])
    assert replayed == replays_logged


@pytest.mark.parametrize("engine", ["websockets"], indirect=True)
async def test_defaults_lose_few_under_bursts(backend, readygate):
    """No gate variable set (the ping gate and the adaptive delay): a burst in which the delay is
    still too short loses some sessions until the first failures raise the delay for the rest of
    it; the fixed delay loses most of every burst. The adaptive delay learns from failures only,
    so which burst pays depends on when the backend first falls behind."""
    b = backend(**SETUP)
    rg = readygate(b.port, READYGATE_ENV="production", READYGATE_HANDSHAKE_TIMEOUT_MS="1000")
    results = await bursts(f"{rg.ws_url}/echo")
    per_burst = [lost(r) for r in results]
    assert all(n < CLIENTS // 2 for n in per_burst), f"outcomes per burst: {results}\n{rg.log(12)}"
    assert sum(per_burst) < BURSTS * CLIENTS // 4, f"outcomes per burst: {results}"
    summaries = rg.wait_for_records("session_summary", count=BURSTS * CLIENTS, timeout=30)
    assert {s.get("gate") for s in summaries} == {"ping"}
    ready = [s for s in summaries if s.get("t_ready_for_messages_ms")]
    assert ready and all("pong_after_ms" in s for s in ready)
