"""HTTP/2 (h2c with prior knowledge) through ReadyGate to the uvicorn/Starlette backend.

Clients: curl (--http2-prior-knowledge), nghttp (nghttp2-client) and an RFC 8441 WebSocket
client written here with the `h2` library over a plain socket, since no common client speaks
WebSockets over HTTP/2 in cleartext. The backend speaks HTTP/1.1 only: ReadyGate turns each
stream into an HTTP/1.1 request, and each extended CONNECT into an HTTP/1.1 upgrade.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import ssl
import struct
import subprocess
import time

import h2.config
import h2.connection
import h2.events
import h2.settings
import pytest

from conftest import HOST

TIMEOUT = 30


def need(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        pytest.fail(f"{tool} is required for the HTTP/2 tests (.ci/test installs it)")
    return path


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(list(args), capture_output=True, timeout=TIMEOUT + 5, check=False)


def test_curl_get_and_post_over_h2c(backend, readygate):
    curl = need("curl")
    b = backend()
    rg = readygate(b.port)
    url = f"http://{HOST}:{rg.port}/http/info"

    got = run(curl, "-sS", "--max-time", str(TIMEOUT), "--http2-prior-knowledge", "-D", "-", url)
    assert got.returncode == 0, got.stderr
    head, _, body = got.stdout.decode().partition("\r\n\r\n")
    assert head.startswith("HTTP/2 200"), head
    info = json.loads(body)
    headers = dict(info["headers"])
    assert info["method"] == "GET"
    assert headers["host"] == f"{HOST}:{rg.port}"  # :authority became Host
    for name in ("connection", "keep-alive", "transfer-encoding"):
        assert f"\r\n{name}:" not in head.lower(), head

    payload = os.urandom(300_000)
    got = subprocess.run([curl, "-sS", "--max-time", str(TIMEOUT), "--http2-prior-knowledge",
                          "-H", "content-type: application/octet-stream", "--data-binary", "@-", url],
                         input=payload, capture_output=True, timeout=TIMEOUT + 5, check=False)
    assert got.returncode == 0, got.stderr
    info = json.loads(got.stdout)
    assert info["method"] == "POST"
    assert info["body_length"] == len(payload)
    assert info["body_sha256"] == hashlib.sha256(payload).hexdigest()


def test_curl_http1_and_h2c_on_one_port(backend, readygate):
    curl = need("curl")
    b = backend()
    rg = readygate(b.port)
    url = f"http://{HOST}:{rg.port}/http/stream/50000"
    http1 = run(curl, "-sS", "--max-time", str(TIMEOUT), "--http1.1", url)
    h2c = run(curl, "-sS", "--max-time", str(TIMEOUT), "--http2-prior-knowledge", url)
    assert http1.returncode == 0 and h2c.returncode == 0, (http1.stderr, h2c.stderr)
    assert len(h2c.stdout) == 50000 and http1.stdout == h2c.stdout


def test_nghttp_streams_several_requests_on_one_connection(backend, readygate):
    nghttp = need("nghttp")
    b = backend()
    rg = readygate(b.port)
    base = f"http://{HOST}:{rg.port}"
    got = run(nghttp, "-ns", "-t", str(TIMEOUT), f"{base}/http/stream/200000", f"{base}/http/info",
              f"{base}/http/stream/10")
    assert got.returncode == 0, got.stdout.decode() + got.stderr.decode()
    lines = [line.split() for line in got.stdout.decode().splitlines()]
    statuses = {parts[-1]: parts[4] for parts in lines if len(parts) >= 7 and parts[-1].startswith("/http/")}
    assert statuses == {"/http/stream/200000": "200", "/http/info": "200", "/http/stream/10": "200"}, got.stdout


def test_backend_down_is_502_on_the_stream(readygate, refused_port):
    curl = need("curl")
    rg = readygate(refused_port)
    got = run(curl, "-sS", "--max-time", str(TIMEOUT), "--http2-prior-knowledge", "-o", "/dev/null",
              "-w", "%{http_code} %{http_version}", f"http://{HOST}:{rg.port}/http/info")
    assert got.stdout.decode() == "502 2", got.stderr


# --- WebSockets over HTTP/2 (RFC 8441) ---------------------------------------------------------


def ws_frame(opcode: int, payload: bytes) -> bytes:
    """A masked client frame (RFC 6455 §5.3)."""
    mask = os.urandom(4)
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
    elif n < 65536:
        head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def ws_parse(buffer: bytearray) -> list[tuple[int, bytes]]:
    """Takes the complete (unmasked, server) frames off the front of `buffer`."""
    frames = []
    while len(buffer) >= 2:
        opcode, n = buffer[0] & 0x0F, buffer[1] & 0x7F
        offset = 2
        if n == 126:
            if len(buffer) < 4:
                break
            n, offset = struct.unpack("!H", buffer[2:4])[0], 4
        elif n == 127:
            if len(buffer) < 10:
                break
            n, offset = struct.unpack("!Q", buffer[2:10])[0], 10
        if len(buffer) < offset + n:
            break
        frames.append((opcode, bytes(buffer[offset:offset + n])))
        del buffer[:offset + n]
    return frames


class H2WebSocketClient:
    """WebSockets over one h2c connection (RFC 8441) with the `h2` state machine."""

    def __init__(self, port: int, tls: "ssl.SSLContext | None" = None):
        self.sock = socket.create_connection((HOST, port), timeout=TIMEOUT)
        self.scheme = "http"
        if tls is not None:
            # h2 over TLS: chosen by ALPN.
            tls.set_alpn_protocols(["h2"])
            self.sock = tls.wrap_socket(self.sock, server_hostname="localhost")
            assert self.sock.selected_alpn_protocol() == "h2"
            self.scheme = "https"
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        self.conn.initiate_connection()
        self.flush()
        self.statuses: dict[int, str] = {}
        self.bytes: dict[int, bytearray] = {}
        self.ended: set[int] = set()
        self.reset: set[int] = set()
        self.settings_seen = False
        self.wait(lambda: self.settings_seen)
        assert self.conn.remote_settings.enable_connect_protocol == 1

    def flush(self) -> None:
        data = self.conn.data_to_send()
        if data:
            self.sock.sendall(data)

    def pump(self) -> None:
        data = self.sock.recv(65536)
        if not data:
            raise ConnectionError("proxy closed the connection")
        for event in self.conn.receive_data(data):
            if isinstance(event, h2.events.RemoteSettingsChanged):
                self.settings_seen = True
            elif isinstance(event, h2.events.ResponseReceived):
                self.statuses[event.stream_id] = dict(event.headers)[b":status"].decode()
            elif isinstance(event, h2.events.DataReceived):
                self.bytes.setdefault(event.stream_id, bytearray()).extend(event.data)
                self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            elif isinstance(event, h2.events.StreamEnded):
                self.ended.add(event.stream_id)
            elif isinstance(event, h2.events.StreamReset):
                self.reset.add(event.stream_id)
        self.flush()

    def wait(self, condition, timeout: float = TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise TimeoutError("condition not met")
            self.pump()

    def open(self, path: str, protocol: str = "websocket", end_stream: bool = False) -> int:
        stream_id = self.conn.get_next_available_stream_id()
        self.conn.send_headers(stream_id, [
            (":method", "CONNECT"), (":protocol", protocol), (":scheme", self.scheme), (":path", path),
            (":authority", f"{HOST}"), ("sec-websocket-version", "13"),
        ], end_stream=end_stream)
        self.flush()
        return stream_id

    def send(self, stream_id: int, data: bytes, end_stream: bool = False) -> None:
        self.conn.send_data(stream_id, data, end_stream=end_stream)
        self.flush()

    def close(self) -> None:
        self.conn.close_connection()
        self.flush()
        self.sock.close()


READY = json.dumps({"type": "connection_ready"}, separators=(",", ":")).encode()


@pytest.mark.parametrize("accept_mode", ["immediate", "upstream"])
def test_fifty_websockets_on_one_connection_each_held_until_ready(backend, readygate, accept_mode):
    # A backend that needs 400 ms after its accept; every client sends at once, before it is ready.
    b = backend(SETUP_MS="400", SEND_READY="1")
    rg = readygate(b.port, READYGATE_READY_GATE="message", READYGATE_ACCEPT_MODE=accept_mode)
    client = H2WebSocketClient(rg.port)
    streams = []
    for n in range(50):
        stream_id = client.open(f"/echo?n={n}")
        # Sent with the CONNECT, before the 200 and long before the backend is ready.
        client.send(stream_id, ws_frame(0x1, f"first {n}".encode()) + ws_frame(0x1, f"second {n}".encode()))
        streams.append(stream_id)

    def echoes(stream_id: int) -> list[bytes]:
        frames = ws_parse(bytearray(client.bytes.get(stream_id, b"")))
        return [payload for opcode, payload in frames if opcode == 0x1 and payload != READY]

    client.wait(lambda: all(len(echoes(s)) >= 2 for s in streams) or bool(client.reset))
    assert not client.reset
    for n, stream_id in enumerate(streams):
        assert client.statuses[stream_id] == "200"
        assert echoes(stream_id)[:2] == [f"first {n}".encode(), f"second {n}".encode()]

    for stream_id in streams:
        client.send(stream_id, ws_frame(0x8, struct.pack("!H", 1000)), end_stream=True)
    client.wait(lambda: all(s in client.ended or s in client.reset for s in streams))
    client.close()

    summaries = rg.wait_for_records("session_summary", count=50)
    assert len(summaries) == 50, rg.log()
    assert all(str(s.get("early_frames")) == "2" for s in summaries), summaries[0]


def test_extended_connect_errors_are_answered_per_stream(backend, readygate):
    b = backend(SETUP_MS="0")
    rg = readygate(b.port)
    client = H2WebSocketClient(rg.port)
    other = client.open("/echo", protocol="connect-udp")
    ended = client.open("/echo", end_stream=True)
    good = client.open("/echo")
    client.send(good, ws_frame(0x1, b"still fine"))
    client.wait(lambda: other in client.statuses and ended in client.statuses
                and any(p == b"still fine" for _, p in ws_parse(bytearray(client.bytes.get(good, b"")))))
    assert client.statuses[other] == "501"
    assert client.statuses[ended] == "400"
    assert client.statuses[good] == "200"
    client.close()


def test_a_reset_stream_ends_its_session_only(backend, readygate):
    b = backend(SETUP_MS="0")
    rg = readygate(b.port)
    client = H2WebSocketClient(rg.port)
    doomed = client.open("/echo")
    kept = client.open("/echo")
    client.wait(lambda: doomed in client.statuses and kept in client.statuses)
    client.conn.reset_stream(doomed)
    client.flush()
    summary = rg.wait_for_records("session_summary", count=1)
    assert len(summary) == 1, rg.log()
    assert rg.wait_for_records("http2_stream_reset", count=1), rg.log()
    client.send(kept, ws_frame(0x1, b"after the reset"))
    client.wait(lambda: any(p == b"after the reset" for _, p in ws_parse(bytearray(client.bytes.get(kept, b"")))))
    client.send(kept, ws_frame(0x8, struct.pack("!H", 1000)), end_stream=True)
    client.wait(lambda: kept in client.ended or kept in client.reset)
    assert kept in client.ended  # a clean end: close handshake, then END_STREAM both ways
    client.close()


def test_a_flood_before_ready_is_held_within_the_window_and_delivered_in_order(backend, readygate):
    # 200 kB before READY against an 8 kB hold: the stream stalls at its window, nothing is lost.
    b = backend(SETUP_MS="400", SEND_READY="1")
    rg = readygate(b.port, READYGATE_READY_GATE="message", READYGATE_MAX_BUFFER_BYTES="8192")
    client = H2WebSocketClient(rg.port)
    stream_id = client.open("/echo")
    messages = [(f"{n}:" + "x" * 1000).encode() for n in range(200)]
    for message in messages:
        while client.conn.local_flow_control_window(stream_id) < len(message) + 14:
            client.pump()  # the proxy's WINDOW_UPDATEs come only as it reads
        client.send(stream_id, ws_frame(0x1, message))

    def echoes() -> list[bytes]:
        frames = ws_parse(bytearray(client.bytes.get(stream_id, b"")))
        return [payload for opcode, payload in frames if opcode == 0x1 and payload != READY]

    client.wait(lambda: len(echoes()) >= len(messages) or stream_id in client.ended)
    assert echoes() == messages
    client.close()
    summary = rg.wait_for_records("session_summary", count=1)
    assert summary and int(summary[0]["peak_held_bytes"]) <= 8192 + 65535, summary
