"""`readygate analyze`: the log of a real run, piped into the command, shows that run's sessions."""

from __future__ import annotations

import re
import subprocess

from test_readiness import assert_none_lost, run_early_clients

N_SESSIONS = 20
SETUP_MS = 20
GATE_DELAY_MS = 150


async def test_analyze_counts_the_sessions_of_a_run(backend, readygate, readygate_bin):
    b = backend(SETUP_MS=SETUP_MS, SEND_READY=0)
    rg = readygate(b.port, READYGATE_READY_GATE="delay", READYGATE_BASE_DELAY_MS=GATE_DELAY_MS,
                   READYGATE_HANDSHAKE_TIMEOUT_MS=5000)
    assert_none_lost(await run_early_clients(f"{rg.ws_url}/echo", n=N_SESSIONS), rg)
    summaries = rg.wait_for_records("session_summary", count=N_SESSIONS)
    assert len(summaries) == N_SESSIONS, rg.log()

    log = "\n".join(rg.lines) + "\nnot a log line\n"
    out = subprocess.run([str(readygate_bin), "analyze", "-"], input=log, capture_output=True, text=True,
                         timeout=30)
    assert out.returncode == 0, out.stderr
    report = out.stdout
    assert "1 bad (skipped), " in report, report
    assert f"; {N_SESSIONS} sessions" in report, report
    # Every session ended cleanly, the client closing with 1000, its first frame held.
    assert re.search(rf"^\s+- \(not ended by the proxy\)\s+{N_SESSIONS}\s+100\.0%$", report, re.M), report
    assert re.search(rf"^\s+1000\s+{N_SESSIONS}\s+100\.0%$", report, re.M), report
    assert re.search(rf"^\s+early_client_frames\s+{N_SESSIONS}$", report, re.M), report
    assert re.search(rf"^\s+upstream_error_after_ready\s+0$", report, re.M), report
    # Time to READY: all of them, none sooner than the gate's delay.
    row = re.search(rf"^\s+testing\s+delay\s+{N_SESSIONS}\s+{N_SESSIONS}\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)$",
                    report, re.M)
    assert row, report
    assert int(row.group(1)) >= GATE_DELAY_MS, report
    assert "READYGATE_READY_GATE=delay" in report, report


def test_analyze_missing_file_fails(readygate_bin, tmp_path):
    missing = tmp_path / "no-such.log"
    out = subprocess.run([str(readygate_bin), "analyze", str(missing)], capture_output=True, text=True,
                         timeout=30)
    assert out.returncode != 0
    assert f"cannot read {missing}" in out.stderr
