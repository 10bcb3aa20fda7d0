#!/usr/bin/env python3
"""Abuse tests: slowloris, a flood before READY, and a connection flood past the limit (issue 10).

Three scenarios, each on 127.0.0.1 with a fresh backend and a fresh ReadyGate (release build), each
bounded in time and each ending with a verdict that can fail:

  slowloris   1,000 connections that trickle a request head one byte at a time (never finishing it)
              and 1,000 that connect and send nothing. A new session's first echo (connect, upgrade,
              one message, its echo; sequential sessions) is measured before, during and after that
              load. Bar (issue 10): the loaded p50 and p99 are at most 10 ms over the unloaded ones.
  flood       1,000 WebSocket clients that send as fast as they can before READY (delay gate with a
              long base delay), READYGATE_MAX_BUFFER_BYTES=64 KiB, READYGATE_MAX_HELD_BYTES_TOTAL=16 MiB.
              The proxy's RSS (every ~50 ms, and its high-water mark) and readygate_held_bytes are
              sampled. Before READY, the RSS over that with the same sessions open but idle, and the
              held bytes, must stay under the global cap plus the documented slack (one read of up
              to 64 KiB per session). After READY every byte each client sent must come back, in
              order and intact. The peak after READY (the relay of what the clients had queued,
              which no global cap bounds) must stay under the relay's per-session bound: per
              direction the partner's write buffer (64 KiB) plus one read (64 KiB).
  connflood   READYGATE_MAX_CONNECTIONS=200; 50 established sessions exchange messages while 2,000
              upgrade attempts (400 at a time, each held 1 s if accepted) hit the proxy. Counted:
              101s, 503s, anything else; the established sessions must see no error, and their round
              trips before, during and after the flood are reported.

    python3 Benchmarks/abuse.py [--bin PATH] [--scenarios slowloris,flood,connflood]
        [--sessions 200] [--trickle 1000] [--silent 1000] [--flood-clients 1000]
        [--flood-delay-ms 15000] [--limit 200] [--attempts 2000] [--established 50]

The echo backend is Benchmarks' `ws-echo` (Benchmarks/.build/release/ws-echo, built by
`swift build -c release --package-path Benchmarks`); the first-echo figure comes from `ws-bench
first-echo` when that binary is there, else from a Python client (--client python). The test
clients write raw frames with an all-zero mask key (a legal key: payloads need no masking work).
Every process started here is stopped on exit. Exit code 1 when a verdict fails.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import resource
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
E2E = ROOT / "Tests" / "e2e"
TOOLS = ROOT / "Benchmarks" / ".build" / "release"
HOST = "127.0.0.1"
KEY = b"dGhlIHNhbXBsZSBub25jZQ=="
MIB = 1024 * 1024
BACKPRESSURE = 'readygate_race_patterns_total{pattern="buffer_backpressure"}'

# --- processes ------------------------------------------------------------------------------

CHILDREN: list[subprocess.Popen] = []


def raise_nofile() -> int:
    """Raise this process's (and so its children's) open-file limit to the hard limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def wait_port(port: int, proc: subprocess.Popen, what: str) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"{what} exited with {proc.returncode}")
        with socket.socket() as s:
            if s.connect_ex((HOST, port)) == 0:
                return
        time.sleep(0.02)
    sys.exit(f"{what} did not listen on {port}")


def spawn(cmd: list[str], **kw) -> subprocess.Popen:
    proc = subprocess.Popen(cmd, **kw)
    CHILDREN.append(proc)
    return proc


def stop(proc: subprocess.Popen, timeout: float = 10) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if proc in CHILDREN:
        CHILDREN.remove(proc)


def stop_all() -> None:
    for proc in list(reversed(CHILDREN)):
        stop(proc, timeout=5)


def on_signal(signum, _frame) -> None:
    stop_all()
    sys.exit(128 + signum)


def start_echo(port: int, backend: str) -> subprocess.Popen:
    """A fast echo backend: ws-echo (Swift) when built, else uvicorn racy_backend with no set-up."""
    echo_bin = TOOLS / "ws-echo"
    if backend == "ws-echo" or (backend == "auto" and echo_bin.exists()):
        proc = spawn([str(echo_bin), "--host", HOST, "--port", str(port), "--threads", "1", "--lifetime", "3600"],
                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    else:
        env = dict(os.environ, SETUP_MS="0", SEND_READY="0")
        proc = spawn([sys.executable, "-m", "uvicorn", "racy_backend:app", "--app-dir", str(E2E), "--host", HOST,
                      "--port", str(port), "--log-level", "warning", "--no-access-log", "--backlog", "4096"],
                     cwd=E2E, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(port, proc, "echo backend")
    return proc


def start_proxy(binary: Path, backend_port: int, settings: dict[str, str]) -> tuple[subprocess.Popen, int, int]:
    """ReadyGate with `settings` on top of a clean environment; returns (process, port, admin port)."""
    port, admin = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("READYGATE_")}
    env.update(READYGATE_ENV="production", READYGATE_LISTEN=f"{HOST}:{port}", READYGATE_ADMIN_LISTEN=f"{HOST}:{admin}",
               READYGATE_UPSTREAM=f"http://{HOST}:{backend_port}", READYGATE_LOG_LEVEL="error",
               READYGATE_THREADS="2")
    env.update(settings)
    proc = spawn([str(binary), "serve"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(port, proc, "readygate")
    wait_port(admin, proc, "readygate admin")
    return proc, port, admin


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak RSS) in bytes."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(("VmRSS:", "VmHWM:")):
                key, value = line.split(":", 1)
                out[key] = int(value.split()[0]) * 1024
    return out


def rss(pid: int) -> int:
    return proc_status(pid)["VmRSS"]


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def metrics(admin_port: int) -> dict[str, float]:
    """The admin endpoint's unlabelled series, and labelled ones summed under their bare name."""
    with urllib.request.urlopen(f"http://{HOST}:{admin_port}/metrics", timeout=5) as response:
        text = response.read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        match = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)", line)
        if not match:
            continue
        name, labels, value = match.groups()
        try:
            number = float(value)
        except ValueError:
            continue
        if labels:
            out[name + labels] = number
        out[name] = out.get(name, 0.0) + number if labels else number
    return out


def load() -> str:
    return "load {:.2f} {:.2f} {:.2f}".format(*os.getloadavg())


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


def mib(n: float) -> str:
    return f"{n / MIB:.1f} MiB"


# --- a raw WebSocket client (asyncio streams) -----------------------------------------------------


def upgrade_request(path: str = "/echo") -> bytes:
    return (f"GET {path} HTTP/1.1\r\nHost: {HOST}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {KEY.decode()}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode()


def client_frame(payload: bytes, opcode: int = 0x2) -> bytes:
    """One final client frame, masked with the all-zero key (so the payload goes as it is)."""
    n = len(payload)
    if n < 126:
        head = bytes([0x80 | opcode, 0x80 | n])
    elif n < 65536:
        head = bytes([0x80 | opcode, 0x80 | 126]) + struct.pack(">H", n)
    else:
        head = bytes([0x80 | opcode, 0x80 | 127]) + struct.pack(">Q", n)
    return head + b"\0\0\0\0" + payload


CLOSE_FRAME = client_frame(struct.pack(">H", 1000), opcode=0x8)


async def read_head(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1])


async def read_frame(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    h = await reader.readexactly(2)
    opcode, n = h[0] & 0x0F, h[1] & 0x7F
    if n == 126:
        n = struct.unpack(">H", await reader.readexactly(2))[0]
    elif n == 127:
        n = struct.unpack(">Q", await reader.readexactly(8))[0]
    if h[1] & 0x80:
        await reader.readexactly(4)  # a server never masks; tolerated, payload read as is
    return opcode, await reader.readexactly(n)


async def read_data(reader: asyncio.StreamReader) -> bytes:
    """The next data frame's payload (pings and pongs skipped); ConnectionError on a close."""
    while True:
        opcode, payload = await read_frame(reader)
        if opcode in (0x1, 0x2, 0x0):
            return payload
        if opcode == 0x8:
            code = struct.unpack(">H", payload[:2])[0] if len(payload) >= 2 else 1005
            raise ConnectionError(f"close {code}")


async def open_session(port: int, path: str = "/echo"):
    reader, writer = await asyncio.open_connection(HOST, port, limit=1 << 20)
    writer.write(upgrade_request(path))
    status = await read_head(reader)
    if status != 101:
        writer.close()
        raise ConnectionError(f"status {status}")
    return reader, writer


async def close_session(reader, writer, timeout: float = 2) -> None:
    try:
        writer.write(CLOSE_FRAME)
        await writer.drain()
        async with asyncio.timeout(timeout):
            while True:
                opcode, _ = await read_frame(reader)
                if opcode == 0x8:
                    break
    except (Exception, asyncio.CancelledError):  # noqa: BLE001 - the close is best effort
        pass
    writer.close()


async def python_first_echo(port: int, sessions: int) -> dict:
    times, failed = [], 0
    payload = b"x" * 64
    for _ in range(sessions):
        start = time.perf_counter()
        try:
            reader, writer = await open_session(port)
            writer.write(client_frame(payload))
            if await read_data(reader) != payload:
                raise ConnectionError("wrong echo")
            times.append((time.perf_counter() - start) * 1000)
            await close_session(reader, writer)
        except Exception:  # noqa: BLE001
            failed += 1
    return {"p50_ms": percentile(times, 50), "p99_ms": percentile(times, 99), "max_ms": max(times or [0]),
            "failed": failed, "sessions": sessions}


def first_echo(port: int, sessions: int, client: str) -> dict:
    bench = TOOLS / "ws-bench"
    if client == "ws-bench" or (client == "auto" and bench.exists()):
        out = subprocess.run([str(bench), "first-echo", "--port", str(port), "--sessions", str(sessions),
                              "--threads", "1"], capture_output=True, text=True, timeout=300, check=True)
        row = json.loads(out.stdout.strip().splitlines()[-1])
        return {"p50_ms": row["p50_us"] / 1000, "p99_ms": row["p99_us"] / 1000, "max_ms": row["max_us"] / 1000,
                "failed": row["failed"], "sessions": sessions, "client": "ws-bench"}
    result = asyncio.run(python_first_echo(port, sessions))
    result["client"] = "python"
    return result


# --- child processes: the load runs apart from the measuring client -------------------------------


async def slowloris_main(port: int, trickle: int, silent: int, interval: float, seconds: float) -> None:
    """Open `trickle` connections that send a head one byte per `interval` s and `silent` that send
    nothing; print "up <n>" when all are open, run until stdin closes or `seconds` pass, then print
    "closed_by_peer <n>" (connections the proxy ended while they were held)."""
    head = (f"GET /echo HTTP/1.1\r\nHost: {HOST}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {KEY.decode()}\r\nSec-WebSocket-Version: 13\r\nX-Slow: ").encode() + b"a" * 100_000
    conns: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    sem = asyncio.Semaphore(200)

    async def connect():
        async with sem:
            return await asyncio.open_connection(HOST, port)

    for batch in range(0, trickle + silent, 500):
        conns += await asyncio.gather(*(connect() for _ in range(min(500, trickle + silent - batch))))
    print(f"up {len(conns)}", flush=True)
    closed = 0
    stop_event = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_reader(sys.stdin.fileno(), lambda: (sys.stdin.readline() or True) and stop_event.set())

    async def trickler(i: int, writer: asyncio.StreamWriter, reader: asyncio.StreamReader) -> None:
        nonlocal closed
        await asyncio.sleep(interval * i / max(1, trickle))  # spread the writes over the interval
        position = 0
        while not stop_event.is_set():
            if reader.at_eof() or writer.is_closing():
                closed += 1
                return
            writer.write(head[position:position + 1])
            position += 1
            await asyncio.sleep(interval)

    async def watcher(reader: asyncio.StreamReader) -> None:
        nonlocal closed
        data = await reader.read(1)  # the proxy sends nothing to a connection that has no head
        if data == b"" or data:
            closed += 1

    tasks = [asyncio.create_task(trickler(i, w, r)) for i, (r, w) in enumerate(conns[:trickle])]
    watchers = [asyncio.create_task(watcher(r)) for r, _ in conns[trickle:]]
    try:
        await asyncio.wait_for(stop_event.wait(), timeout=seconds)
    except TimeoutError:
        pass
    stop_event.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    for w in watchers:
        w.cancel()
    print(f"closed_by_peer {closed}", flush=True)
    for _, writer in conns:
        writer.close()


async def connflood_main(port: int, attempts: int, concurrency: int, hold: float) -> None:
    """`attempts` upgrade requests, `concurrency` at a time; a 101 is held `hold` s then closed.
    Prints one JSON line: counts by outcome and the most 101s held at once."""
    counts: dict[str, int] = {}
    held = peak = 0
    sem = asyncio.Semaphore(concurrency)

    async def attempt() -> None:
        nonlocal held, peak
        async with sem:
            try:
                reader, writer = await asyncio.open_connection(HOST, port)
                writer.write(upgrade_request())
                async with asyncio.timeout(10):
                    status = await read_head(reader)
                outcome = str(status)
                if status == 101:
                    held += 1
                    peak = max(peak, held)
                    await asyncio.sleep(hold)
                    held -= 1
                    await close_session(reader, writer)
                else:
                    writer.close()
            except Exception as error:  # noqa: BLE001 - every failure is an outcome to count
                outcome = f"error {type(error).__name__}"
            counts[outcome] = counts.get(outcome, 0) + 1

    start = time.monotonic()
    await asyncio.gather(*(attempt() for _ in range(attempts)))
    print(json.dumps({"counts": counts, "peak_held_101": peak, "seconds": time.monotonic() - start}), flush=True)


async def flood_main(port: int, clients: int, size: int, max_seconds: float, verify_timeout: float) -> None:
    """`clients` sessions; each, after "go" on stdin, sends `size`-byte messages as fast as it can
    until its first echo comes back (the session is READY) or `max_seconds` pass, then waits for
    every message to come back and checks each one. Prints "up <n>" once all are open and a JSON line
    at the end."""
    sessions = []
    sem = asyncio.Semaphore(200)

    async def connect(i: int):
        async with sem:
            reader, writer = await open_session(port)
            sock = writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 64 * 1024)
            return i, reader, writer

    sessions = await asyncio.gather(*(connect(i) for i in range(clients)))
    print(f"up {len(sessions)}", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    pattern = bytes(range(256)) * (size // 256 + 1)
    go = time.monotonic()
    results = []

    def payload(client: int, seq: int) -> bytes:
        tag = struct.pack(">II", client, seq)
        return tag + pattern[(client + seq) % 256:(client + seq) % 256 + size - 8]

    async def one(i: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sent = received = bad = 0
        first_echo_at = None
        error = None
        done_sending = asyncio.Event()

        async def sender() -> None:
            nonlocal sent
            deadline = go + max_seconds
            while first_echo_at is None and time.monotonic() < deadline:
                writer.write(client_frame(payload(i, sent)))
                sent += 1
                await writer.drain()
            done_sending.set()

        task = asyncio.create_task(sender())
        try:
            while True:
                if done_sending.is_set() and received >= sent:
                    break
                timeout = verify_timeout if done_sending.is_set() else max_seconds + verify_timeout
                async with asyncio.timeout(timeout):
                    got = await read_data(reader)
                if first_echo_at is None:
                    first_echo_at = time.monotonic() - go
                if got != payload(i, received):
                    bad += 1
                received += 1
        except Exception as exc:  # noqa: BLE001 - every failure is an outcome to count
            error = f"{type(exc).__name__} {exc}"
            task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await close_session(reader, writer)
        results.append({"sent": sent, "received": received, "bad": bad, "error": error,
                        "first_echo_s": first_echo_at})

    await asyncio.gather(*(one(i, r, w) for i, r, w in sessions))
    errors: dict[str, int] = {}
    for r in results:
        if r["error"]:
            errors[r["error"][:60]] = errors.get(r["error"][:60], 0) + 1
    firsts = [r["first_echo_s"] for r in results if r["first_echo_s"] is not None]
    print(json.dumps({
        "clients": len(results), "messages_sent": sum(r["sent"] for r in results),
        "messages_received": sum(r["received"] for r in results), "bytes_sent": sum(r["sent"] for r in results) * size,
        "complete": sum(1 for r in results if r["received"] == r["sent"] and not r["bad"] and not r["error"]),
        "corrupt": sum(r["bad"] for r in results), "errors": errors,
        "min_sent": min(r["sent"] for r in results), "max_sent": max(r["sent"] for r in results),
        "first_echo_s_min": min(firsts or [0]), "first_echo_s_max": max(firsts or [0]),
        "seconds": time.monotonic() - go}), flush=True)


def child(args: list[str]) -> None:
    raise_nofile()
    kind, rest = args[0], args[1:]
    if kind == "_slowloris":
        port, trickle, silent, interval, seconds = int(rest[0]), int(rest[1]), int(rest[2]), float(rest[3]), float(rest[4])
        asyncio.run(slowloris_main(port, trickle, silent, interval, seconds))
    elif kind == "_connflood":
        asyncio.run(connflood_main(int(rest[0]), int(rest[1]), int(rest[2]), float(rest[3])))
    elif kind == "_flood":
        asyncio.run(flood_main(int(rest[0]), int(rest[1]), int(rest[2]), float(rest[3]), float(rest[4])))


def spawn_child(*args) -> subprocess.Popen:
    return spawn([sys.executable, str(Path(__file__).resolve()), *map(str, args)], stdin=subprocess.PIPE,
                 stdout=subprocess.PIPE, text=True)


def expect_line(proc: subprocess.Popen, prefix: str, timeout: float) -> str:
    result: list[str] = []

    def reader() -> None:
        for line in proc.stdout:
            if line.startswith(prefix):
                result.append(line.strip())
                return

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    t.join(timeout)
    if not result:
        raise RuntimeError(f"child {proc.args[2:]} gave no '{prefix}' line within {timeout} s")
    return result[0]


# --- scenarios --------------------------------------------------------------------------------------


def scenario_slowloris(args) -> bool:
    print(f"\n## slowloris: {args.trickle} trickling + {args.silent} silent connections, "
          f"{args.sessions} sequential first echoes per phase ({load()})")
    backend_port = free_port()
    start_echo(backend_port, args.backend)
    proxy, port, admin = start_proxy(args.bin, backend_port, {
        "READYGATE_READY_GATE": "delay", "READYGATE_BASE_DELAY_MS": "0", "READYGATE_ADAPTIVE": "false",
        "READYGATE_HTTP_HEADER_TIMEOUT_MS": "600000", "READYGATE_HTTP_IDLE_TIMEOUT_MS": "600000"})
    first_echo(port, 50, args.client)  # warm-up, not recorded
    phases = {}
    phases["unloaded"] = first_echo(port, args.sessions, args.client)
    phases["unloaded"]["load"] = load()
    loris = spawn_child("_slowloris", port, args.trickle, args.silent, 1.0, 600)
    up = expect_line(loris, "up ", 120)
    time.sleep(2)  # every trickling connection has sent its first bytes
    m = metrics(admin)
    held = int(m.get("readygate_connections_active", -1))
    print(f"slowloris up: {up}; proxy connections_active {held}, RSS {mib(rss(proxy.pid))}, fds {fd_count(proxy.pid)}")
    phases["loaded"] = first_echo(port, args.sessions, args.client)
    phases["loaded"]["load"] = load()
    m = metrics(admin)
    still = int(m.get("readygate_connections_active", -1))
    loris.stdin.write("stop\n")
    loris.stdin.flush()
    closed = int(expect_line(loris, "closed_by_peer", 60).split()[1])
    stop(loris)
    time.sleep(1)
    phases["after"] = first_echo(port, args.sessions, args.client)
    phases["after"]["load"] = load()
    print(f"connections_active after the loaded phase: {still}; slowloris connections closed by the proxy "
          f"while held: {closed}")
    print("\n| phase | client | sessions | failed | first echo p50 ms | p99 ms | max ms | load |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | --- |")
    for name, r in phases.items():
        print(f"| {name} | {r['client']} | {r['sessions']} | {r['failed']} | {r['p50_ms']:.3f} | {r['p99_ms']:.3f} | "
              f"{r['max_ms']:.3f} | {r['load']} |")
    d50 = phases["loaded"]["p50_ms"] - phases["unloaded"]["p50_ms"]
    d99 = phases["loaded"]["p99_ms"] - phases["unloaded"]["p99_ms"]
    ok = (d50 <= 10 and d99 <= 10 and phases["loaded"]["failed"] == 0 and closed == 0
          and still >= args.trickle + args.silent)
    print(f"\nslowloris: loaded - unloaded: p50 {d50:+.3f} ms, p99 {d99:+.3f} ms (bar: <= 10 ms); "
          f"held connections kept: {still >= args.trickle + args.silent}; {'PASS' if ok else 'FAIL'}")
    stop_all()
    return ok


def scenario_flood(args) -> bool:
    cap, per_session = args.cap_mib * MIB, args.buffer_kib * 1024
    print(f"\n## flood before READY: {args.flood_clients} clients, {args.flood_size}-byte messages, "
          f"READYGATE_MAX_BUFFER_BYTES={per_session}, READYGATE_MAX_HELD_BYTES_TOTAL={cap}, "
          f"delay gate {args.flood_delay_ms} ms ({load()})")
    backend_port = free_port()
    start_echo(backend_port, args.backend)
    proxy, port, admin = start_proxy(args.bin, backend_port, {
        "READYGATE_READY_GATE": "delay", "READYGATE_BASE_DELAY_MS": str(args.flood_delay_ms),
        "READYGATE_ADAPTIVE": "false", "READYGATE_HANDSHAKE_TIMEOUT_MS": str(args.flood_delay_ms + 60_000),
        "READYGATE_MAX_BUFFER_BYTES": str(per_session), "READYGATE_MAX_HELD_BYTES_TOTAL": str(cap)})
    base = rss(proxy.pid)
    flood = spawn_child("_flood", port, args.flood_clients, args.flood_size, args.flood_delay_ms / 1000 + 10, 60)
    expect_line(flood, "up ", 120)
    time.sleep(0.5)
    idle = rss(proxy.pid)
    hwm_before = proc_status(proxy.pid)["VmHWM"]
    m0 = metrics(admin)
    print(f"RSS idle proxy {mib(base)}; with {args.flood_clients} sessions open, not READY, nothing sent: {mib(idle)} "
          f"(sessions_active {int(m0.get('readygate_sessions_active', -1))}); high-water so far {mib(hwm_before)}")
    flood.stdin.write("go\n")
    flood.stdin.flush()
    samples: list[tuple[float, int, float]] = []
    t0 = time.monotonic()
    done: list[str] = []
    threading.Thread(target=lambda: done.append(expect_line(flood, "{", args.flood_delay_ms / 1000 + 200)),
                     daemon=True).start()
    held_peak = 0.0
    while not done and time.monotonic() - t0 < args.flood_delay_ms / 1000 + 200:
        r = rss(proxy.pid)
        try:
            held = metrics(admin).get("readygate_held_bytes", 0.0)
        except OSError:
            held = float("nan")
        held_peak = max(held_peak, held) if held == held else held_peak
        samples.append((time.monotonic() - t0, r, held))
        time.sleep(0.05)
    status = proc_status(proxy.pid)
    m1 = metrics(admin)
    result = json.loads(done[0]) if done else {}
    stop(flood)
    peak_sampled = max(r for _, r, _ in samples)
    # Before READY: the samples up to the first echo.
    ready_at = result.get("first_echo_s_min", 0)
    before = [r for t, r, _ in samples if t < ready_at] or [idle]
    slack = args.flood_clients * 65536  # documented: one read (up to 64 KiB) per session may pass the bounds
    print(f"flood child: {json.dumps(result)}")
    print(f"samples: {len(samples)} every ~50 ms; before READY (first echo at {ready_at:.1f} s): peak RSS "
          f"{mib(max(before))}; whole run: sampled peak {mib(peak_sampled)}, VmHWM {mib(status['VmHWM'])}; "
          f"RSS at end {mib(status['VmRSS'])}")
    print(f"readygate_held_bytes peak {mib(held_peak)} (cap {mib(cap)}); "
          f"readygate_held_bytes_cap_pauses_total {int(m1.get('readygate_held_bytes_cap_pauses_total', 0))}; "
          f"buffer_backpressure {int(m1.get(BACKPRESSURE, 0))}")
    growth = max(before) - idle
    after = [r for t, r, _ in samples if t >= ready_at] or [idle]
    after_peak = max(max(after), status["VmHWM"])
    per_session_after = (after_peak - idle) / args.flood_clients
    # Documented: per direction, the partner's write buffer (64 KiB high-water mark) plus one read of
    # up to 64 KiB; both directions carry the flood here.
    relay_bound = 2 * (65536 + 65536)
    complete = result.get("complete", 0) == args.flood_clients and result.get("corrupt", 1) == 0
    ok_before = complete and growth <= cap + slack and held_peak <= cap + slack and proxy.poll() is None
    ok_after = per_session_after <= relay_bound
    ok = ok_before and ok_after
    print(f"\nflood, before READY (what the caps govern): RSS growth {mib(growth)} over the idle sessions' "
          f"{mib(idle)} (cap {mib(cap)}; documented bound cap + one read per session = {mib(cap + slack)}); "
          f"held bytes peak {mib(held_peak)}; all bytes back intact: {result.get('complete', 0)}/{args.flood_clients} "
          f"clients, {result.get('corrupt', '?')} corrupt messages; {'PASS' if ok_before else 'FAIL'} ({load()})")
    print(f"flood, after READY (the relay of what the clients had queued; no global cap applies, a per-session "
          f"bound does): peak RSS {mib(after_peak)}, {per_session_after / 1024:.0f} KiB per session over the idle "
          f"sessions (bound {relay_bound // 1024} KiB: per direction the partner's 64 KiB write buffer plus one "
          f"64 KiB read); {'PASS' if ok_after else 'FAIL'}")
    if args.samples:
        with open(args.samples, "w") as f:
            f.write("t_s,rss_bytes,held_bytes\n")
            f.writelines(f"{t:.3f},{r},{h:.0f}\n" for t, r, h in samples)
    stop_all()
    return ok


async def established_load(port: int, sessions: int, interval: float, marks: dict, stop_event: asyncio.Event):
    """`sessions` spliced sessions, each sending a 64-byte message every `interval` s and awaiting its
    echo. Returns (samples (time, ms), errors)."""
    samples: list[tuple[float, float]] = []
    errors: list[str] = []
    opened = await asyncio.gather(*(open_session(port) for _ in range(sessions)))

    async def run(i: int, reader, writer) -> None:
        await asyncio.sleep(interval * i / sessions)
        seq = 0
        while not stop_event.is_set():
            payload = struct.pack(">II", i, seq) + b"p" * 56
            start = time.perf_counter()
            try:
                writer.write(client_frame(payload))
                async with asyncio.timeout(10):
                    got = await read_data(reader)
                if got != payload:
                    errors.append("wrong echo")
            except Exception as error:  # noqa: BLE001
                errors.append(f"{type(error).__name__} {error}")
                return
            samples.append((time.monotonic(), (time.perf_counter() - start) * 1000))
            seq += 1
            await asyncio.sleep(max(0.0, interval - (time.perf_counter() - start)))
        await close_session(reader, writer)

    marks["up"] = time.monotonic()
    await asyncio.gather(*(run(i, r, w) for i, (r, w) in enumerate(opened)))
    return samples, errors


def scenario_connflood(args) -> bool:
    print(f"\n## connection flood: READYGATE_MAX_CONNECTIONS={args.limit}, {args.established} established sessions "
          f"(one message each per 50 ms), {args.attempts} upgrade attempts, 400 at a time, 101s held 1 s ({load()})")
    backend_port = free_port()
    start_echo(backend_port, args.backend)
    proxy, port, admin = start_proxy(args.bin, backend_port, {
        "READYGATE_READY_GATE": "delay", "READYGATE_BASE_DELAY_MS": "0", "READYGATE_ADAPTIVE": "false",
        "READYGATE_MAX_CONNECTIONS": str(args.limit)})
    marks: dict[str, float] = {}
    flood_result: list[dict] = []

    async def main() -> tuple[list, list]:
        stop_event = asyncio.Event()
        task = asyncio.create_task(established_load(port, args.established, 0.05, marks, stop_event))
        await asyncio.sleep(5)
        marks["flood_start"] = time.monotonic()
        loop = asyncio.get_running_loop()
        proc = spawn_child("_connflood", port, args.attempts, 400, 1.0)
        line = await loop.run_in_executor(None, expect_line, proc, "{", 300)
        marks["flood_end"] = time.monotonic()
        stop(proc)
        flood_result.append(json.loads(line))
        await asyncio.sleep(5)
        stop_event.set()
        return await task

    samples, errors = asyncio.run(main())
    m = metrics(admin)
    phases = {
        "before": [ms for t, ms in samples if t < marks["flood_start"]],
        "during": [ms for t, ms in samples if marks["flood_start"] <= t < marks["flood_end"]],
        "after": [ms for t, ms in samples if t >= marks["flood_end"]],
    }
    flood = flood_result[0]
    counts = flood["counts"]
    refused_metric = int(m.get("readygate_connections_refused_total", -1))
    # A fresh session after the flood still gets through.
    after = first_echo(port, 20, "python")
    print(f"flood child: {json.dumps(flood)}; readygate_connections_refused_total {refused_metric}")
    print("\n| established sessions' round trip | messages | p50 ms | p99 ms | max ms |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for name, values in phases.items():
        print(f"| {name} the flood | {len(values)} | {percentile(values, 50):.3f} | {percentile(values, 99):.3f} | "
              f"{max(values or [float('nan')]):.3f} |")
    accepted, refused = counts.get("101", 0), counts.get("503", 0)
    others = {k: v for k, v in counts.items() if k not in ("101", "503")}
    ok = (not errors and refused > 0 and accepted + refused == args.attempts and not others
          and flood["peak_held_101"] <= args.limit - args.established and after["failed"] == 0
          and refused_metric == refused)
    print(f"\nconnflood: {accepted} x 101, {refused} x 503, other {others or 'none'}; most 101s held at once "
          f"{flood['peak_held_101']} (room: {args.limit - args.established}); established sessions' errors: "
          f"{len(errors)} {errors[:3]}; refusals counted by the proxy {refused_metric}; fresh sessions after: "
          f"{after['sessions'] - after['failed']}/{after['sessions']}; {'PASS' if ok else 'FAIL'} ({load()})")
    stop_all()
    return ok


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1].startswith("_"):
        child(sys.argv[1:])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bin", type=Path, default=ROOT / ".build-bench" / "release" / "readygate")
    parser.add_argument("--scenarios", default="slowloris,flood,connflood")
    parser.add_argument("--backend", choices=["auto", "ws-echo", "uvicorn"], default="auto")
    parser.add_argument("--client", choices=["auto", "ws-bench", "python"], default="auto",
                        help="first-echo client (auto: ws-bench when built)")
    parser.add_argument("--sessions", type=int, default=200, help="first echoes per slowloris phase")
    parser.add_argument("--trickle", type=int, default=1000)
    parser.add_argument("--silent", type=int, default=1000)
    parser.add_argument("--flood-clients", type=int, default=1000)
    parser.add_argument("--flood-size", type=int, default=16384, help="bytes per flood message")
    parser.add_argument("--flood-delay-ms", type=int, default=15000, help="the delay gate's base delay")
    parser.add_argument("--buffer-kib", type=int, default=64)
    parser.add_argument("--cap-mib", type=int, default=16)
    parser.add_argument("--samples", help="flood: write the RSS and held-bytes samples to this CSV file")
    parser.add_argument("--limit", type=int, default=200)
    parser.add_argument("--attempts", type=int, default=2000)
    parser.add_argument("--established", type=int, default=50)
    args = parser.parse_args()
    if not args.bin.exists():
        sys.exit(f"no binary at {args.bin}: swift build -c release --product readygate --scratch-path .build-bench")
    nofile = raise_nofile()
    signal.signal(signal.SIGTERM, on_signal)
    print(f"RLIMIT_NOFILE {nofile}; {load()}; binary {args.bin}")
    verdicts = {}
    try:
        for name in args.scenarios.split(","):
            fn = {"slowloris": scenario_slowloris, "flood": scenario_flood, "connflood": scenario_connflood}[name]
            verdicts[name] = fn(args)
    finally:
        stop_all()
    print("\n" + ", ".join(f"{k}: {'PASS' if v else 'FAIL'}" for k, v in verdicts.items()))
    sys.exit(0 if all(verdicts.values()) else 1)


if __name__ == "__main__":
    main()
