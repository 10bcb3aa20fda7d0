"""Plain HTTP/1.1 through ReadyGate to the uvicorn/Starlette backend, with curl as the client.

ReadyGate forwards requests that are not WebSocket upgrades over a keep-alive pool. curl is a
real, independent HTTP client: it sends `Expect: 100-continue` for large bodies, chunked
uploads on request, and reuses its connection for several URLs in one run.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import socket
import subprocess

import pytest

from conftest import HOST

CURL_TIMEOUT = 30


@pytest.fixture(scope="module")
def curl() -> str:
    path = shutil.which("curl")
    if path is None:
        pytest.fail("curl is required for the HTTP forwarding tests (.ci/run installs it)")
    return path


def run_curl(curl: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [curl, "-sS", "--max-time", str(CURL_TIMEOUT), *args],
        capture_output=True, timeout=CURL_TIMEOUT + 5, check=False,
    )


def test_get_rewrites_headers_and_reuses_one_backend_connection(backend, readygate, curl):
    b = backend()
    rg = readygate(b.port)
    url = f"http://{HOST}:{rg.port}/http/info"
    # Three URLs in one curl run share one client connection; the proxy should use one backend
    # connection for them (the backend reports the peer port it saw).
    out = run_curl(
        curl,
        "-H", "Connection: keep-alive, X-Drop-Me", "-H", "X-Drop-Me: secret",
        "-H", "X-End-To-End: kept",
        "-w", "\n", url, url, url,
    )
    assert out.returncode == 0, out.stderr.decode() + rg.log()
    answers = [json.loads(line) for line in out.stdout.decode().splitlines() if line.strip()]
    assert len(answers) == 3
    headers = dict(answers[0]["headers"])
    assert "x-drop-me" not in headers
    assert "connection" not in headers
    assert headers["x-end-to-end"] == "kept"
    assert headers["host"] == f"{HOST}:{rg.port}"
    assert headers["x-forwarded-for"] == "127.0.0.1"
    assert headers["x-forwarded-proto"] == "http"
    assert headers["forwarded"].startswith("for=127.0.0.1;proto=http")
    assert len({a["peer_port"] for a in answers}) == 1, answers


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_large_upload_arrives_intact(backend, readygate, curl, tmp_path, chunked):
    b = backend()
    rg = readygate(b.port)
    data = hashlib.sha256(b"seed").digest() * (4 * 1024 * 1024 // 32)  # 4 MiB
    body = tmp_path / "body.bin"
    body.write_bytes(data)
    args = ["-X", "POST", "--data-binary", f"@{body}"]
    if chunked:
        args += ["-H", "Transfer-Encoding: chunked"]
    out = run_curl(curl, *args, f"http://{HOST}:{rg.port}/http/info")
    assert out.returncode == 0, out.stderr.decode() + rg.log()
    answer = json.loads(out.stdout)
    assert answer["body_length"] == len(data)
    assert answer["body_sha256"] == hashlib.sha256(data).hexdigest()


def test_streamed_download(backend, readygate, curl):
    b = backend()
    rg = readygate(b.port)
    out = run_curl(curl, "-D", "-", "-o", "/dev/stderr", f"http://{HOST}:{rg.port}/http/stream/1000000")
    assert out.returncode == 0, rg.log()
    head = out.stdout.decode().lower()
    assert head.startswith("http/1.1 200")
    assert "transfer-encoding: chunked" in head
    expected = b"".join((b"0123456789" * (n // 10 + 1))[:n] for n in [16384] * 61 + [1000000 - 16384 * 61])
    assert len(out.stderr) == 1000000
    assert out.stderr == expected


def test_backend_down_is_502(readygate, curl, refused_port):
    rg = readygate(refused_port)
    out = run_curl(curl, "-o", "/dev/null", "-w", "%{http_code}", f"http://{HOST}:{rg.port}/http/info")
    assert out.stdout == b"502", rg.log()
    assert rg.wait_for_records("http_upstream_unreachable"), rg.log()


def test_trickled_request_head_is_408_and_a_silent_client_is_closed(backend, readygate):
    b = backend()
    rg = readygate(b.port, READYGATE_HTTP_HEADER_TIMEOUT_MS="300", READYGATE_HTTP_IDLE_TIMEOUT_MS="300")
    with socket.create_connection((HOST, rg.port), timeout=10) as sock:
        sock.sendall(b"GET /http/info HTTP/1.1\r\nHost: proxy.test\r\nX-Slow: ")
        answer = read_until_closed(sock)
    assert answer.startswith(b"HTTP/1.1 408 Request Timeout\r\n"), answer
    assert b"connection: close" in answer.lower()
    records = rg.wait_for_records("request_head_timeout")
    assert records and records[0]["status"] == "408", rg.log()
    with socket.create_connection((HOST, rg.port), timeout=10) as sock:
        assert read_until_closed(sock) == b"", "an idle connection is closed without an answer"


def read_until_closed(sock: socket.socket) -> bytes:
    """Everything the peer sends until it closes (the socket's timeout bounds each read)."""
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data
