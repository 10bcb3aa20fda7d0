"""Fixtures for ReadyGate's end-to-end tests: real processes on 127.0.0.1 only.

- `engine`: uvicorn WebSocket implementation, parameterised over websockets and wsproto.
- `backend`: factory starting racy_backend.py under uvicorn (`backend(SETUP_MS="200")`).
- `readygate`: factory starting the readygate binary with READYGATE_* variables and waiting
  for its "listening" log line.
- `readygate_bin`: session fixture locating the binary (READYGATE_BIN, else
  `swift build --show-bin-path`); fails (does not skip) when it is missing.
Everything started is terminated at teardown (terminate, wait, kill on timeout).
"""

from __future__ import annotations

import collections
import json
import os
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parent.parent
HOST = "127.0.0.1"
ENGINES = ["websockets", "wsproto"]

BACKEND_START_TIMEOUT = 20.0
READYGATE_START_TIMEOUT = 20.0
STOP_TIMEOUT = 5.0


def free_port() -> int:
    """A loopback port that was free a moment ago (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]



@pytest.fixture
def refused_port():
    """A loopback port that refuses every connection for the whole test: a socket bound to it and
    never listening holds it, so no other server can take it (a freed port could be reused)."""
    holder = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    holder.bind((HOST, 0))
    yield holder.getsockname()[1]
    holder.close()

def port_accepts(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=0.2):
            return True
    except OSError:
        return False


def stop_process(proc: subprocess.Popen) -> None:
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=STOP_TIMEOUT)


def tail(path: Path, limit: int = 4000) -> str:
    try:
        return path.read_text(errors="replace")[-limit:]
    except OSError:
        return ""


# --------------------------------------------------------------------------- backend


@dataclass
class Backend:
    proc: subprocess.Popen
    port: int
    engine: str
    env: dict
    log_path: Path
    close_log: Path

    @property
    def http_url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://{HOST}:{self.port}"

    def close_records(self) -> list[dict]:
        try:
            text = self.close_log.read_text()
        except FileNotFoundError:
            return []
        return [json.loads(line) for line in text.splitlines() if line.strip()]

    def log(self) -> str:
        return tail(self.log_path)


@pytest.fixture(params=ENGINES)
def engine(request) -> str:
    return request.param


@pytest.fixture
def backend(engine, tmp_path):
    """Factory: backend(port=None, **env) -> Backend, started and accepting connections."""
    started: list[Backend] = []

    def start(port: int | None = None, **env_overrides: str) -> Backend:
        port = port or free_port()
        n = len(started)
        close_log = tmp_path / f"backend{n}-closes.jsonl"
        log_path = tmp_path / f"backend{n}-{engine}.log"
        env = dict(os.environ)
        env.update({"SETUP_MS": "200", "SEND_READY": "1", "CLOSE_LOG": str(close_log)})
        env.update({k: str(v) for k, v in env_overrides.items()})
        cmd = [
            sys.executable, "-m", "uvicorn", "racy_backend:app",
            "--app-dir", str(HERE),
            "--host", HOST, "--port", str(port),
            "--ws", engine,
            "--log-level", "warning",
            "--no-access-log",
            "--backlog", "2048",
        ]
        log_file = open(log_path, "wb")
        proc = subprocess.Popen(cmd, cwd=HERE, env=env, stdout=log_file, stderr=subprocess.STDOUT)
        log_file.close()
        backend = Backend(proc, port, engine, env_overrides, log_path, close_log)
        started.append(backend)
        deadline = time.monotonic() + BACKEND_START_TIMEOUT
        while not port_accepts(port):
            if proc.poll() is not None:
                pytest.fail(f"uvicorn ({engine}) exited with {proc.returncode}:\n{backend.log()}")
            if time.monotonic() > deadline:
                pytest.fail(f"uvicorn ({engine}) not accepting on {port} after "
                            f"{BACKEND_START_TIMEOUT}s:\n{backend.log()}")
            time.sleep(0.02)
        return backend

    yield start
    for b in started:
        stop_process(b.proc)


# --------------------------------------------------------------------------- readygate


def _locate_binary() -> tuple[Path | None, str]:
    explicit = os.environ.get("READYGATE_BIN")
    if explicit:
        return Path(explicit), f"READYGATE_BIN={explicit}"
    try:
        out = subprocess.run(
            ["swift", "build", "--show-bin-path"],
            cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        return None, f"`swift build --show-bin-path` in {REPO_ROOT} failed: {e!r}"
    if out.returncode != 0:
        return None, (f"`swift build --show-bin-path` in {REPO_ROOT} exited {out.returncode}: "
                      f"{out.stderr.strip()}")
    return Path(out.stdout.strip()) / "readygate", f"swift build --show-bin-path in {REPO_ROOT}"


@pytest.fixture(scope="session")
def readygate_bin() -> Path:
    path, how = _locate_binary()
    if path is None:
        pytest.fail(f"cannot locate the readygate binary: {how}. "
                    f"Build it (`swift build` in {REPO_ROOT}) or set READYGATE_BIN.")
    if not (path.is_file() and os.access(path, os.X_OK)):
        pytest.fail(f"readygate binary not found at {path} (from {how}). "
                    f"Build it (`swift build` in {REPO_ROOT}) or set READYGATE_BIN.")
    return path


@dataclass
class ReadyGate:
    proc: subprocess.Popen
    port: int
    env: dict
    stderr_path: Path
    lines: collections.deque = field(default_factory=lambda: collections.deque(maxlen=5000))
    listening: threading.Event = field(default_factory=threading.Event)
    listening_record: dict | None = None

    @property
    def ws_url(self) -> str:
        return f"ws://{HOST}:{self.port}"

    def log(self, limit: int = 60) -> str:
        out = [line[:500] for line in list(self.lines)[-limit:]]
        return "\n".join(out) + "\n--- stderr ---\n" + tail(self.stderr_path)

    def records(self) -> list[dict]:
        result = []
        for line in list(self.lines):
            try:
                obj = json.loads(line)
            except ValueError:
                continue
            if isinstance(obj, dict):
                result.append(obj)
        return result

    def wait_for_records(self, message: str, count: int = 1, timeout: float = 10) -> list[dict]:
        """The log records with this message, once at least `count` have arrived (the log is read
        by another thread, so a line written before an answer may still be on its way)."""
        deadline = time.monotonic() + timeout
        while True:
            found = [r for r in self.records() if r.get("message") == message]
            if len(found) >= count or time.monotonic() > deadline:
                return found
            time.sleep(0.02)


def _drain_stdout(rg: ReadyGate) -> None:
    # Keep reading for the whole life of the process, so a full pipe never blocks its logging.
    assert rg.proc.stdout is not None
    for raw in rg.proc.stdout:
        line = raw.decode("utf-8", errors="replace").rstrip("\n")
        rg.lines.append(line)
        if not rg.listening.is_set():
            try:
                obj = json.loads(line)
            except ValueError:
                continue
            if isinstance(obj, dict) and obj.get("message") == "listening":
                rg.listening_record = obj
                rg.listening.set()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    # Remember each phase's outcome so fixtures can tell, at teardown, whether the test failed.
    report = yield
    setattr(item, "rep_" + report.when, report)
    return report


@pytest.fixture
def readygate(readygate_bin, tmp_path, request):
    """Factory: readygate(upstream_port, **READYGATE_overrides) -> ReadyGate, listening."""
    started: list[ReadyGate] = []

    def start(upstream_port: int, **overrides: str) -> ReadyGate:
        port = free_port()
        n = len(started)
        env = dict(os.environ)
        env.update({
            "READYGATE_LISTEN": f"{HOST}:{port}",
            "READYGATE_ADMIN_LISTEN": f"{HOST}:{free_port()}",
            "READYGATE_UPSTREAM": f"http://{HOST}:{upstream_port}",
            "READYGATE_ENV": "testing",
            "READYGATE_HANDSHAKE_TIMEOUT_MS": "5000",
            "READYGATE_LOG_FORMAT": "json",
            "READYGATE_THREADS": "2",
        })
        env.update({k: str(v) for k, v in overrides.items()})
        stderr_path = tmp_path / f"readygate{n}.stderr"
        with open(stderr_path, "wb") as err:
            proc = subprocess.Popen([str(readygate_bin), "serve"], cwd=REPO_ROOT, env=env,
                                    stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err)
        rg = ReadyGate(proc, port, {k: v for k, v in env.items() if k.startswith("READYGATE_")},
                       stderr_path)
        started.append(rg)
        threading.Thread(target=_drain_stdout, args=(rg,), daemon=True).start()
        deadline = time.monotonic() + READYGATE_START_TIMEOUT
        while not rg.listening.wait(timeout=0.05):
            if proc.poll() is not None:
                # Give the reader a moment to collect the last lines for the message.
                time.sleep(0.1)
                pytest.fail(f"readygate exited with {proc.returncode} before logging "
                            f"'listening' (env {rg.env}):\n{rg.log()}")
            if time.monotonic() > deadline:
                pytest.fail(f"readygate did not log 'listening' within "
                            f"{READYGATE_START_TIMEOUT}s (env {rg.env}):\n{rg.log()}")
        return rg

    yield start
    for n, rg in enumerate(started):
        stop_process(rg.proc)
        # Keep the whole log next to the test's other files; show its tail when the test failed.
        (tmp_path / f"readygate{n}.log").write_text("\n".join(rg.lines) + "\n")
        rep = getattr(request.node, "rep_call", None)
        if rep is not None and rep.failed:
            print(f"--- readygate{n} log tail ({tmp_path / f'readygate{n}.log'}) ---")
            print(rg.log(20))
