"""TLS end to end: the readygate binary with READYGATE_TLS_CERT/KEY in front of uvicorn, the
Python websockets client over wss and curl over https, both trusting a test CA made with the
openssl CLI; SIGHUP reloads; an https uvicorn backend behind READYGATE_UPSTREAM_CA.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

import pytest
from websockets.asyncio.client import connect

from conftest import HERE, HOST, READYGATE_START_TIMEOUT, free_port, port_accepts, stop_process

CLIENT_TIMEOUT = 20
READY = '{"type":"connection_ready"}'


@pytest.fixture
def engine() -> str:
    # One uvicorn WebSocket implementation is enough here: TLS is below it.
    return "websockets"


def openssl(*args: str) -> None:
    out = subprocess.run(["openssl", *args], capture_output=True, timeout=30, check=False)
    assert out.returncode == 0, f"openssl {' '.join(args)}: {out.stderr.decode()}"


NEW_KEY = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Path:
    """A CA, two server certificates it signed for localhost and 127.0.0.1 (serials 2 and 3), and
    a server certificate of a CA nobody trusts."""
    if shutil.which("openssl") is None:
        pytest.fail("the openssl CLI is required for the TLS tests (.ci/test installs it)")
    d = tmp_path_factory.mktemp("pki")
    (d / "server.ext").write_text(
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n")
    for ca, name in (("ca", "ReadyGate e2e CA"), ("rogue", "Untrusted e2e CA")):
        openssl("req", "-x509", *NEW_KEY, "-keyout", str(d / f"{ca}.key"), "-out", str(d / f"{ca}.pem"),
                "-days", "2", "-subj", f"/CN={name}",
                "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign")
    for name, ca, serial in (("server", "ca", 2), ("renewed", "ca", 3), ("rogue-server", "rogue", 9)):
        openssl("req", *NEW_KEY, "-keyout", str(d / f"{name}.key"), "-out", str(d / f"{name}.csr"),
                "-subj", "/CN=localhost")
        openssl("x509", "-req", "-in", str(d / f"{name}.csr"), "-CA", str(d / f"{ca}.pem"),
                "-CAkey", str(d / f"{ca}.key"), "-set_serial", str(serial), "-days", "2",
                "-extfile", str(d / "server.ext"), "-out", str(d / f"{name}.pem"))
    return d


def client_context(pki: Path) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(pki / "ca.pem"))
    return context


def tls_env(pki: Path, name: str = "server") -> dict:
    return {"READYGATE_TLS_CERT": str(pki / f"{name}.pem"), "READYGATE_TLS_KEY": str(pki / f"{name}.key")}


def peer_serial(port: int, pki: Path) -> str:
    """The serial number of the certificate a new connection to the proxy gets."""
    context = client_context(pki)
    with socket.create_connection((HOST, port), timeout=5) as raw:
        with context.wrap_socket(raw, server_hostname="localhost") as tls:
            return tls.getpeercert()["serialNumber"]


async def echo_session(url: str, context: ssl.SSLContext | None, messages: list[str]) -> list[str]:
    """Sends `messages` right after the handshake; returns their echoes (the ready message skipped)."""
    async with asyncio.timeout(CLIENT_TIMEOUT):
        async with connect(url, ssl=context, open_timeout=CLIENT_TIMEOUT) as ws:
            for message in messages:
                await ws.send(message)
            echoes = []
            while len(echoes) < len(messages):
                received = await ws.recv()
                if received != READY:
                    echoes.append(received)
            return echoes


def curl(*args: str) -> subprocess.CompletedProcess:
    path = shutil.which("curl")
    assert path, "curl is required (.ci/test installs it)"
    return subprocess.run([path, "-sS", "--max-time", "20", *args], capture_output=True, timeout=30, check=False)


def test_wss_frames_before_ready_are_all_delivered(backend, readygate, pki):
    b = backend(SETUP_MS="300")
    rg = readygate(b.port, READYGATE_READY_GATE="message", **tls_env(pki))
    assert rg.listening_record.get("tls") == "on"
    messages = [f"early-{n}" for n in range(5)]
    echoes = asyncio.run(echo_session(f"wss://localhost:{rg.port}/echo", client_context(pki), messages))
    assert echoes == messages, rg.log()


def test_https_with_curl_over_http1(backend, readygate, pki):
    b = backend()
    rg = readygate(b.port, **tls_env(pki))
    out = curl("--cacert", str(pki / "ca.pem"), "--http1.1", "--resolve", f"localhost:{rg.port}:{HOST}",
               f"https://localhost:{rg.port}/http/info")
    assert out.returncode == 0, out.stderr.decode() + rg.log()
    info = json.loads(out.stdout)
    headers = dict(info["headers"])
    assert headers["host"] == f"localhost:{rg.port}"
    assert headers["x-forwarded-proto"] == "https"
    assert headers["forwarded"] == f"for=127.0.0.1;proto=https;host=\"localhost:{rg.port}\""


def test_plaintext_client_on_the_tls_port_is_closed_and_others_are_served(backend, readygate, pki):
    b = backend()
    rg = readygate(b.port, **tls_env(pki))
    with socket.create_connection((HOST, rg.port), timeout=5) as raw:
        raw.sendall(b"GET /http/info HTTP/1.1\r\nHost: x\r\n\r\n")
        data = b""
        while chunk := raw.recv(4096):
            data += chunk
    assert b"HTTP/1.1" not in data
    assert rg.wait_for_records("tls_handshake_failed"), rg.log()
    assert peer_serial(rg.port, pki) == "02"


@pytest.mark.parametrize("case", ["missing", "not_pem", "mismatch", "key_alone"])
def test_bad_tls_files_stop_the_process(readygate_bin, pki, tmp_path, case):
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    env = dict(os.environ)
    env.update({"READYGATE_LISTEN": f"{HOST}:{free_port()}", "READYGATE_ADMIN_LISTEN": "off"})
    expected_variable, expected_path = {
        "missing": ("READYGATE_TLS_CERT", str(tmp_path / "absent.pem")),
        "not_pem": ("READYGATE_TLS_CERT", str(garbage)),
        "mismatch": ("READYGATE_TLS_KEY", str(pki / "renewed.key")),
        "key_alone": ("READYGATE_TLS_CERT", ""),
    }[case]
    if case == "missing":
        env.update({"READYGATE_TLS_CERT": expected_path, "READYGATE_TLS_KEY": str(pki / "server.key")})
    elif case == "not_pem":
        env.update({"READYGATE_TLS_CERT": expected_path, "READYGATE_TLS_KEY": str(pki / "server.key")})
    elif case == "mismatch":
        env.update({"READYGATE_TLS_CERT": str(pki / "server.pem"), "READYGATE_TLS_KEY": expected_path})
    else:
        env.pop("READYGATE_TLS_CERT", None)
        env.update({"READYGATE_TLS_KEY": str(pki / "server.key")})
    for command in ("serve", "check-config"):
        out = subprocess.run([str(readygate_bin), command], env=env, capture_output=True, timeout=30,
                             stdin=subprocess.DEVNULL, check=False)
        stderr = out.stderr.decode()
        assert out.returncode == 2, f"{command}: {stderr}"
        assert expected_variable in stderr and expected_path in stderr, f"{command}: {stderr}"


def test_sighup_reloads_the_certificate_and_keeps_sessions(backend, readygate, pki, tmp_path):
    cert, key = tmp_path / "live.pem", tmp_path / "live.key"
    shutil.copy(pki / "server.pem", cert)
    shutil.copy(pki / "server.key", key)
    b = backend(SETUP_MS="50")
    rg = readygate(b.port, READYGATE_READY_GATE="message", READYGATE_TLS_CERT=str(cert), READYGATE_TLS_KEY=str(key))
    assert peer_serial(rg.port, pki) == "02"

    async def scenario() -> list[str]:
        async with asyncio.timeout(CLIENT_TIMEOUT):
            async with connect(f"wss://localhost:{rg.port}/echo", ssl=client_context(pki)) as ws:
                await ws.send("before")
                seen = [m for m in [await ws.recv(), await ws.recv()] if m != READY]
                shutil.copy(pki / "renewed.pem", cert)
                shutil.copy(pki / "renewed.key", key)
                rg.proc.send_signal(signal.SIGHUP)
                await asyncio.to_thread(rg.wait_for_records, "tls_reloaded")
                assert await asyncio.to_thread(peer_serial, rg.port, pki) == "03"
                await ws.send("after")
                seen.append(await ws.recv())
                return seen

    assert asyncio.run(scenario()) == ["before", "after"], rg.log()
    # A broken file on the next SIGHUP: the error is logged, the renewed certificate stays.
    cert.write_text("broken\n")
    rg.proc.send_signal(signal.SIGHUP)
    failed = rg.wait_for_records("tls_reload_failed")
    assert failed and str(cert) in failed[0]["error"], rg.log()
    assert peer_serial(rg.port, pki) == "03"
    assert rg.proc.poll() is None


def start_tls_backend(pki: Path, tmp_path: Path, name: str) -> tuple[subprocess.Popen, int]:
    """racy_backend.py under uvicorn with --ssl-certfile/--ssl-keyfile."""
    port = free_port()
    env = dict(os.environ)
    env.update({"SETUP_MS": "100", "SEND_READY": "1", "CLOSE_LOG": str(tmp_path / "tls-backend-closes.jsonl")})
    log = open(tmp_path / "tls-backend.log", "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "racy_backend:app", "--app-dir", str(HERE), "--host", HOST,
         "--port", str(port), "--ws", "websockets", "--log-level", "warning", "--no-access-log",
         "--ssl-certfile", str(pki / f"{name}.pem"), "--ssl-keyfile", str(pki / f"{name}.key")],
        cwd=HERE, env=env, stdout=log, stderr=subprocess.STDOUT)
    log.close()
    deadline = time.monotonic() + READYGATE_START_TIMEOUT
    while not port_accepts(port):
        assert proc.poll() is None, (tmp_path / "tls-backend.log").read_text()
        assert time.monotonic() < deadline, "the TLS backend did not start"
        time.sleep(0.02)
    return proc, port


def test_upstream_tls_with_upstream_ca(readygate, pki, tmp_path):
    proc, port = start_tls_backend(pki, tmp_path, "server")
    try:
        rg = readygate(port, READYGATE_UPSTREAM=f"wss://localhost:{port}", READYGATE_UPSTREAM_CA=str(pki / "ca.pem"),
                       READYGATE_READY_GATE="message")
        echoes = asyncio.run(echo_session(f"ws://{HOST}:{rg.port}/echo", None, ["one", "two"]))
        assert echoes == ["one", "two"], rg.log()
        out = curl(f"http://{HOST}:{rg.port}/http/info")
        assert out.returncode == 0 and json.loads(out.stdout)["path"] == "/http/info", out.stdout + out.stderr
    finally:
        stop_process(proc)


def test_untrusted_upstream_certificate_is_a_502(readygate, pki, tmp_path):
    proc, port = start_tls_backend(pki, tmp_path, "rogue-server")
    try:
        rg = readygate(port, READYGATE_UPSTREAM=f"https://localhost:{port}",
                       READYGATE_UPSTREAM_CA=str(pki / "ca.pem"), READYGATE_ACCEPT_MODE="upstream",
                       READYGATE_HANDSHAKE_TIMEOUT_MS="800")
        out = curl("-o", "/dev/null", "-w", "%{http_code}", f"http://{HOST}:{rg.port}/http/info")
        assert out.stdout == b"502", out.stdout + out.stderr
        failures = rg.wait_for_records("upstream_tls_handshake_failed")
        assert failures and "CERTIFICATE_VERIFY_FAILED" in failures[0]["last_error"].upper(), rg.log()
    finally:
        stop_process(proc)


def test_h2_over_tls_by_alpn_plain_requests_and_websockets(backend, readygate, pki):
    """ALPN h2 on the TLS listener: curl's request is HTTP/2, and ten RFC 8441 WebSockets on one
    TLS connection, each sending before its backend is ready, all get their echoes."""
    from test_http2 import READY, H2WebSocketClient, ws_frame, ws_parse

    b = backend(SETUP_MS="300", SEND_READY="1")
    rg = readygate(b.port, READYGATE_READY_GATE="message", **tls_env(pki))
    out = curl("--cacert", str(pki / "ca.pem"), "--http2", "--resolve", f"localhost:{rg.port}:{HOST}",
               "-o", "/dev/null", "-w", "%{http_version} %{response_code}", f"https://localhost:{rg.port}/http/info")
    assert out.returncode == 0, out.stderr.decode() + rg.log()
    assert out.stdout.decode() == "2 200"

    client = H2WebSocketClient(rg.port, tls=client_context(pki))
    streams = []
    for n in range(10):
        stream_id = client.open(f"/echo?n={n}")
        client.send(stream_id, ws_frame(0x1, f"early {n}".encode()))
        streams.append(stream_id)

    def echoes(stream_id: int) -> list[bytes]:
        frames = ws_parse(bytearray(client.bytes.get(stream_id, b"")))
        return [payload for opcode, payload in frames if opcode == 0x1 and payload != READY]

    client.wait(lambda: all(echoes(s) for s in streams) or bool(client.reset))
    assert not client.reset
    for n, stream_id in enumerate(streams):
        assert client.statuses[stream_id] == "200"
        assert echoes(stream_id)[0] == f"early {n}".encode()
    client.close()
    summaries = rg.wait_for_records("session_summary", count=10)
    assert len(summaries) == 10, rg.log()
