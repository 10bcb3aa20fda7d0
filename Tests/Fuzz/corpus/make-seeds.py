#!/usr/bin/env python3
"""Writes the seed corpus of each fuzz target (Tests/Fuzz/corpus/<target>/). Run it again after
changing it; the files are small and checked in. See docs/fuzzing.md for each target's input format."""
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))


def write(target, name, data):
    os.makedirs(os.path.join(HERE, target), exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(HERE, target, name), "wb") as f:
        f.write(data)


def frame(opcode, payload=b"", fin=True, key=None, rsv=0):
    first = (0x80 if fin else 0) | (rsv << 4) | opcode
    length = len(payload)
    mask = 0x80 if key is not None else 0
    if length < 126:
        head = bytes([first, mask | length])
    elif length <= 0xFFFF:
        head = bytes([first, mask | 126]) + struct.pack(">H", length)
    else:
        head = bytes([first, mask | 127]) + struct.pack(">Q", length)
    if key is None:
        return head + payload
    masked = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    return head + key + masked


KEY = b"\x37\xfa\x21\x3d"
CLOSE = struct.pack(">H", 1000) + b"bye"

# FuzzFrameScanner: options byte (bit 0: server role; bit 1: RSV1 allowed; bit 2: message limit
# (options >> 3) * 8), two split bytes, then the stream.
for role, key in (("client", KEY), ("server", None)):
    option = 0 if role == "client" else 1
    seeds = {
        "text": frame(0x1, b"Hello", key=key),
        "binary": frame(0x2, bytes(range(16)), key=key),
        "empty-text": frame(0x1, b"", key=key),
        "ping-pong": frame(0x9, b"p", key=key) + frame(0xA, b"p", key=key),
        "close": frame(0x8, CLOSE, key=key),
        "close-empty": frame(0x8, b"", key=key),
        "fragmented": frame(0x1, b"Hel", fin=False, key=key)
        + frame(0x9, b"", key=key)
        + frame(0x0, b"lo", fin=False, key=key)
        + frame(0x0, b"!", key=key),
        "len16": frame(0x2, b"x" * 300, key=key),
        # A 64-bit length header and the start of its payload: the stream ends mid-frame.
        "len64-header": bytes([0x82, (0x80 if key else 0) | 127]) + struct.pack(">Q", 70000) + (key or b"") + b"abc",
        "rsv1": frame(0x1, b"\x00", key=key, rsv=4),
        "session": frame(0x1, b'{"type":"connection_ready"}', key=key)
        + frame(0x2, b"\x01\x02", key=key)
        + frame(0x8, struct.pack(">H", 1001), key=key),
    }
    for name, stream in seeds.items():
        write("FuzzFrameScanner", f"{role}-{name}", bytes([option | (2 if name == "rsv1" else 0), 3, 9]) + stream)
write("FuzzFrameScanner", "client-limit", bytes([0b0100_0100, 1, 7]) + frame(0x1, b"x" * 40, key=KEY))

UPGRADE = (
    "GET /ws HTTP/1.1\r\n"
    "Host: example.test\r\n"
    "Upgrade: websocket\r\n"
    "Connection: keep-alive, Upgrade\r\n"
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    "Sec-WebSocket-Version: 13\r\n"
    "Sec-WebSocket-Protocol: chat, superchat\r\n"
    "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"
    "Origin: http://example.test\r\n"
    "\r\n"
)
PLAIN_GET = "GET /health HTTP/1.1\r\nHost: example.test\r\nAccept: */*\r\n\r\n"
CHUNKED_POST = (
    "POST /submit HTTP/1.1\r\nHost: example.test\r\nTransfer-Encoding: chunked\r\n"
    "Content-Type: text/plain\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
)
LENGTH_POST = "POST /submit HTTP/1.1\r\nHost: example.test\r\nContent-Length: 5\r\n\r\nhello"

# FuzzFrameFilter: options byte (bit 0: server role; bit 1: the pong with payload "RGPING01" is
# awaited; bit 2: closes are kept back), two split bytes, then the stream.
OWN = b"RGPING01"
for role, key in (("client", KEY), ("server", None)):
    option = 0 if role == "client" else 1
    text = frame(0x1, b"hello", key=key)
    seeds = {
        "own-pong": (2, text + frame(0xA, OWN, key=key) + text),
        "other-then-own-pong": (2, frame(0xA, b"other", key=key) + frame(0xA, OWN, key=key) + text),
        "ping-data-pong": (2, frame(0x9, b"p", key=key) + text * 3 + frame(0xA, OWN, key=key)),
        "kept-close": (4, text + frame(0x8, CLOSE, key=key) + text),
        "pong-and-close": (6, text + frame(0xA, OWN, key=key) + frame(0x8, struct.pack(">H", 1011), key=key)),
        "passing": (0, text * 4 + frame(0xA, OWN, key=key)),
        "pong-cut": (2, text + frame(0xA, OWN, key=key)[:5]),
    }
    for name, (flags, stream) in seeds.items():
        write("FuzzFrameFilter", f"{role}-{name}", bytes([option | flags, 4, 11]) + stream)

# FuzzUpgradeRequest: the request head as text.
write("FuzzUpgradeRequest", "upgrade", UPGRADE)
write("FuzzUpgradeRequest", "upgrade-version-8", UPGRADE.replace("Version: 13", "Version: 8"))
write("FuzzUpgradeRequest", "upgrade-http10", UPGRADE.replace("HTTP/1.1", "HTTP/1.0"))
write("FuzzUpgradeRequest", "upgrade-post", UPGRADE.replace("GET", "POST"))
write("FuzzUpgradeRequest", "upgrade-two-hosts", UPGRADE.replace("Host:", "Host: a\r\nHost:"))
write("FuzzUpgradeRequest", "upgrade-body", UPGRADE.replace("\r\n\r\n", "\r\nContent-Length: 3\r\n\r\n"))
write("FuzzUpgradeRequest", "plain-get", PLAIN_GET)

# FuzzSettings: NAME=value lines.
write("FuzzSettings", "empty", "")
write(
    "FuzzSettings",
    "full",
    "READYGATE_ENV=staging\nREADYGATE_LISTEN=[::1]:8080\nREADYGATE_ADMIN_LISTEN=off\n"
    "READYGATE_UPSTREAM=wss://backend.internal:8443/\nREADYGATE_ACCEPT_MODE=upstream\n"
    "READYGATE_READY_GATE=message\nREADYGATE_READY_MESSAGE= ready \nREADYGATE_ADAPTIVE=off\n"
    "READYGATE_BASE_DELAY_MS=5\nREADYGATE_HANDSHAKE_TIMEOUT_MS=900\nREADYGATE_RETRY_CAP_MS=40\n"
    "READYGATE_MAX_BUFFER_BYTES=2048\nREADYGATE_MAX_MESSAGE_BYTES=125\nREADYGATE_SUBPROTOCOLS=chat, v2.json\n"
    "READYGATE_HTTP_POOL_IDLE_MAX=0\nREADYGATE_HTTP_RESPONSE_TIMEOUT_MS=1\nREADYGATE_HTTP_IDLE_TIMEOUT_MS=3600000\n"
    "READYGATE_HTTP_HEADER_TIMEOUT_MS=10\nREADYGATE_DRAIN_TIMEOUT_MS=0\nREADYGATE_CLOSE_LINGER_MS=60000\n"
    "READYGATE_THREADS=256\nREADYGATE_LOG_FORMAT=text\nREADYGATE_LOG_LEVEL=DEBUG\n",
)
write("FuzzSettings", "cloud-run", "K_SERVICE=svc\nPORT=9000\nREADYGATE_UPSTREAM=http://localhost\n")
write("FuzzSettings", "kubernetes", "KUBERNETES_SERVICE_HOST=10.0.0.1\nENVIRONMENT=Production\nREADYGATE_LISTEN=:0\n")
write("FuzzSettings", "bad-port", "PORT=70000\n")
write("FuzzSettings", "typo", "READYGATE_UPSTRAEM=http://x\nREADYGATE_THREADS=0\n")
write("FuzzSettings", "key-bytes", b"\x07http://[::1]:1\n\x0c1\n\x13a,b\n")

# FuzzHTTPEntry: two split bytes, then the client's bytes.
write("FuzzHTTPEntry", "upgrade", b"\x10\x40" + UPGRADE.encode())
write("FuzzHTTPEntry", "upgrade-early-frame", b"\x10\xf0" + UPGRADE.encode() + frame(0x1, b"early", key=KEY))
write("FuzzHTTPEntry", "upgrade-rejected", b"\x05\x50" + UPGRADE.replace("Version: 13", "Version: 8").encode())
write("FuzzHTTPEntry", "plain-get", b"\x00\x20" + PLAIN_GET.encode())
write("FuzzHTTPEntry", "pipelined", b"\x30\x60" + (PLAIN_GET + LENGTH_POST + PLAIN_GET).encode())
write("FuzzHTTPEntry", "chunked-post", b"\x40\x70" + CHUNKED_POST.encode())
write("FuzzHTTPEntry", "get-then-upgrade", b"\x30\x90" + (PLAIN_GET + UPGRADE).encode())
write("FuzzHTTPEntry", "no-host", b"\x00\x00GET / HTTP/1.1\r\n\r\n")
write(
    "FuzzHTTPEntry",
    "smuggling",
    b"\x00\x00POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
)
write("FuzzHTTPEntry", "garbage", b"\x01\x02\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03 not HTTP\r\n\r\n")
write("FuzzHTTPEntry", "partial-head", b"\x05\x09GET /slow HTTP/1.1\r\nHost: a\r\nX-Wait: ")

# FuzzHTTP1Parser: a split byte, then one request (and maybe more behind it).
write("FuzzHTTP1Parser", "get", b"\x05" + PLAIN_GET.encode())
write("FuzzHTTP1Parser", "length-post", b"\x30" + LENGTH_POST.encode())
write("FuzzHTTP1Parser", "chunked-post", b"\x48" + CHUNKED_POST.encode())
write(
    "FuzzHTTP1Parser",
    "chunked-ext-trailer",
    b"\x3a"
    + b"POST /t HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
    + b"5;name=value;q=\"a\\\"b\"\r\nhello\r\n0\r\nX-Trailer: 1\r\n\r\n",
)
write(
    "FuzzHTTP1Parser",
    "connection-tokens",
    b"\x00GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, x-a\r\nX-A: 1\r\nX-Forwarded-For: 10.0.0.1\r\n\r\n",
)
