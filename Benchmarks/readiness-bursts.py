#!/usr/bin/env python3
"""Readiness under bursts: how many early senders a racy backend loses through ReadyGate.

The backend is the end-to-end tests' racy uvicorn/Starlette app (Tests/e2e/racy_backend.py): it
accepts the upgrade at once and needs SETUP_MS (+ up to SETUP_JITTER_MS) before it can take a
message; a message that comes sooner gets close 1011. Each run starts a fresh backend and a fresh
ReadyGate (delay gate, production profile: 25 ms, handshake timeout 1000 ms) and sends bursts of
concurrent clients that each send one message the moment their handshake is done, then wait for
its echo. Reported per burst: sessions lost (closed instead of echoed) and the first message's
round trip (p50/p99, echoed ones only).

    python3 Benchmarks/readiness-bursts.py [--bin PATH] [--bursts 5] [--clients 200]
        [--setup-ms 5] [--jitter-ms 0] [--configs fixed,adaptive]

Configs (CONFIGS below): `fixed` is the delay gate with READYGATE_ADAPTIVE=false (the 25 ms delay
as it was), `adaptive` the adaptive delay gate, `ping` the load-aware ping gate (adaptive), `replay`
and `ping-replay` the same with READYGATE_REPLAY=true, `default` no gate variable set at all.
Everything runs on 127.0.0.1; every process is stopped on exit.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import websockets

ROOT = Path(__file__).resolve().parent.parent
E2E = ROOT / "Tests" / "e2e"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, proc: subprocess.Popen, what: str) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"{what} exited with {proc.returncode}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.02)
    sys.exit(f"{what} did not listen on {port}")


async def one_client(url: str, index: int) -> tuple[str, float]:
    """("echoed", ms), ("close <code>", 0) or ("error <type>", 0)."""
    try:
        async with websockets.connect(url, open_timeout=10, close_timeout=2) as ws:
            sent = time.perf_counter()
            await ws.send(f"m{index}")
            try:
                async for message in ws:
                    if message == f"m{index}":
                        return "echoed", (time.perf_counter() - sent) * 1000
            except websockets.ConnectionClosed:
                pass
            code = ws.close_code if ws.close_code is not None else 1006
            return f"close {code}", 0.0
    except Exception as error:  # noqa: BLE001 - every failure is an outcome to count
        return f"error {type(error).__name__}", 0.0


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


async def bursts(url: str, count: int, clients: int) -> list[tuple[int, str, float, float]]:
    rows = []
    for _ in range(count):
        results = await asyncio.gather(*(one_client(url, i) for i in range(clients)))
        ok = [ms for outcome, ms in results if outcome == "echoed"]
        failures: dict[str, int] = {}
        for outcome, _ in results:
            if outcome != "echoed":
                failures[outcome] = failures.get(outcome, 0) + 1
        how = ", ".join(f"{n}x {outcome}" for outcome, n in sorted(failures.items())) or "-"
        rows.append((clients - len(ok), how, percentile(ok, 50), percentile(ok, 99)))
        await asyncio.sleep(0.2)  # let the sessions' closes finish between bursts
    return rows


CONFIGS: dict[str, dict[str, str]] = {
    "default": {},
    "fixed": {"READYGATE_READY_GATE": "delay", "READYGATE_ADAPTIVE": "false"},
    "adaptive": {"READYGATE_READY_GATE": "delay", "READYGATE_ADAPTIVE": "true"},
    "ping": {"READYGATE_READY_GATE": "ping", "READYGATE_ADAPTIVE": "true"},
    "fixed-replay": {"READYGATE_READY_GATE": "delay", "READYGATE_ADAPTIVE": "false", "READYGATE_REPLAY": "true"},
    "replay": {"READYGATE_READY_GATE": "delay", "READYGATE_ADAPTIVE": "true", "READYGATE_REPLAY": "true"},
    "ping-replay": {"READYGATE_READY_GATE": "ping", "READYGATE_ADAPTIVE": "true", "READYGATE_REPLAY": "true"},
}


def run(config: str, args) -> list[tuple[int, str, float, float]]:
    backend_port, proxy_port = free_port(), free_port()
    env = dict(os.environ, SETUP_MS=str(args.setup_ms), SETUP_JITTER_MS=str(args.jitter_ms), SEND_READY="0")
    backend = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "racy_backend:app", "--app-dir", str(E2E), "--host", "127.0.0.1",
         "--port", str(backend_port), "--log-level", "warning", "--no-access-log", "--backlog", "4096"],
        cwd=E2E, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    proxy_env = {k: v for k, v in os.environ.items() if not k.startswith("READYGATE_")}
    proxy_env.update(CONFIGS[config])
    proxy_env.update(READYGATE_ENV="production",
                     READYGATE_LISTEN=f"127.0.0.1:{proxy_port}", READYGATE_ADMIN_LISTEN="off",
                     READYGATE_UPSTREAM=f"http://127.0.0.1:{backend_port}", READYGATE_LOG_LEVEL="error")
    proxy = subprocess.Popen([str(args.bin), "serve"], env=proxy_env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    try:
        wait_port(backend_port, backend, "uvicorn")
        wait_port(proxy_port, proxy, "readygate")
        return asyncio.run(bursts(f"ws://127.0.0.1:{proxy_port}/echo", args.bursts, args.clients))
    finally:
        for proc in (proxy, backend):
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bin", type=Path, default=ROOT / ".build-bench" / "release" / "readygate")
    parser.add_argument("--bursts", type=int, default=5)
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--setup-ms", type=float, default=5)
    parser.add_argument("--jitter-ms", type=float, default=0)
    parser.add_argument("--configs", default="fixed,adaptive")
    args = parser.parse_args()
    unknown = [c for c in args.configs.split(",") if c not in CONFIGS]
    if unknown:
        sys.exit(f"unknown config(s) {', '.join(unknown)}; known: {', '.join(CONFIGS)}")
    if not args.bin.exists():
        sys.exit(f"no binary at {args.bin}: swift build -c release --product readygate --scratch-path .build-bench")
    print(f"setup {args.setup_ms:g} ms + jitter up to {args.jitter_ms:g} ms, {args.bursts} bursts of {args.clients}")
    print()
    print("| config | burst | lost | how | first message p50 ms | p99 ms |")
    print("| --- | ---: | ---: | --- | ---: | ---: |")
    for config in args.configs.split(","):
        for number, (lost, how, p50, p99) in enumerate(run(config, args), start=1):
            print(f"| {config} | {number} | {lost} | {how} | {p50:.1f} | {p99:.1f} |", flush=True)


if __name__ == "__main__":
    main()
