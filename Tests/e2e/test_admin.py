"""The admin listener (READYGATE_ADMIN_LISTEN) of the real binary: /healthz, /readyz, /metrics."""

from __future__ import annotations

import asyncio
import urllib.error
import urllib.request

from test_readiness import client, recv_data

# Only ever 127.0.0.1: no proxy from the environment.
OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def admin_get(rg, path: str) -> tuple[int, str]:
    url = f"http://{rg.env['READYGATE_ADMIN_LISTEN']}{path}"
    try:
        with OPENER.open(url, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


async def test_health_readiness_and_metrics(backend, readygate):
    b = backend(SETUP_MS=100, SEND_READY=1)
    rg = readygate(b.port, READYGATE_READY_GATE="message")
    assert admin_get(rg, "/healthz") == (200, "ok\n")
    assert admin_get(rg, "/readyz") == (200, "ready\n")
    async with asyncio.timeout(20):
        async with client(f"{rg.ws_url}/echo") as ws:
            await ws.send("sent before the backend is ready")
            assert await recv_data(ws) == "sent before the backend is ready"
    # A session is counted when both its connections have closed, just before its summary is logged.
    assert await asyncio.to_thread(rg.wait_for_records, "session_summary"), rg.log()
    status, text = admin_get(rg, "/metrics")
    assert status == 200, text
    lines = text.splitlines()
    assert 'readygate_sessions_total{end_reason="closed"} 1' in lines, text
    assert 'readygate_race_patterns_total{pattern="early_client_frames"} 1' in lines, text
    assert "readygate_early_frames_total 1" in lines, text
    assert 'readygate_session_ready_seconds_count{gate="message"} 1' in lines, text


def test_readyz_fails_when_the_backend_is_down(readygate, refused_port):
    rg = readygate(refused_port)
    status, text = admin_get(rg, "/readyz")
    assert status == 503, text
    assert text.startswith("backend unreachable"), text
    assert admin_get(rg, "/healthz") == (200, "ok\n")


async def test_readyz_fails_during_the_drain(backend, readygate):
    b = backend(SETUP_MS=20, SEND_READY=1)
    rg = readygate(b.port, READYGATE_READY_GATE="message", READYGATE_DRAIN_TIMEOUT_MS=5000)
    async with asyncio.timeout(20):
        async with client(f"{rg.ws_url}/echo") as ws:
            await ws.send("hold the drain open")
            assert await recv_data(ws) == "hold the drain open"
            rg.proc.terminate()
            assert await asyncio.to_thread(rg.wait_for_records, "shutting_down"), rg.log()
            assert await asyncio.to_thread(admin_get, rg, "/readyz") == (503, "draining\n")
            assert await asyncio.to_thread(admin_get, rg, "/healthz") == (200, "ok\n")
    assert await asyncio.to_thread(rg.proc.wait, 10) == 0, rg.log()
