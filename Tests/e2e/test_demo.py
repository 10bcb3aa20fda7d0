"""`readygate demo`, the README's first command, run as a newcomer would (with fewer clients)."""

from __future__ import annotations

import subprocess


def run_demo(readygate_bin, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(readygate_bin), "demo", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def table_rows(stdout: str) -> dict[str, list[str]]:
    """The result table's rows by run name: sessions, ok, closed 1011, other, p50, p99."""
    rows = {}
    for line in stdout.splitlines():
        names = ("direct", "readygate, ping gate", "readygate, delay gate", "readygate, message gate",
                 "fixed delay", "defaults", "defaults + replay")
        # The longest name first: "defaults + replay" also starts with "defaults ".
        for name in sorted(names, key=len, reverse=True):
            if line.startswith(name + " "):
                rows[name] = line[len(name):].split()
                break
    return rows


def test_demo_proves_every_gate_and_the_bursts(readygate_bin):
    result = run_demo(readygate_bin, "--clients", "100")
    assert result.returncode == 0, result.stdout + result.stderr
    rows = table_rows(result.stdout)
    gates = ("readygate, ping gate", "readygate, delay gate", "readygate, message gate")
    assert set(rows) == {"direct", *gates, "fixed delay", "defaults", "defaults + replay"}, result.stdout
    sessions, ok, closed_1011 = (int(v) for v in rows["direct"][:3])
    assert sessions == 100 and closed_1011 > 0, result.stdout
    for gated in gates:
        assert rows[gated][:4] == ["100", "100", "0", "0"], result.stdout
    assert "through ReadyGate, none" in result.stdout
    # Bursts against a 40 ms set-up: the fixed 25 ms delay loses sessions in every burst, the
    # defaults none in the last, replay none at all.
    assert all(int(n) > 0 for n in rows["fixed delay"]), result.stdout
    assert rows["defaults"][-1] == "0", result.stdout
    assert rows["defaults + replay"] == ["0", "0", "0"], result.stdout


def test_demo_fails_when_the_gate_it_proves_loses_sessions(readygate_bin):
    # A set-up longer than the production profile's 25 ms delay: the delay gate cannot cover it,
    # and the demo must say so with a non-zero exit.
    result = run_demo(readygate_bin, "--clients", "50", "--gate", "delay", "--setup-ms", "150", "--bursts", "0")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "FAILED" in result.stdout
    rows = table_rows(result.stdout)
    assert int(rows["readygate, delay gate"][2]) > 0, result.stdout


def test_demo_message_gate_covers_a_long_setup(readygate_bin):
    result = run_demo(readygate_bin, "--clients", "50", "--gate", "message", "--setup-ms", "150", "--bursts", "0")
    assert result.returncode == 0, result.stdout + result.stderr
    assert table_rows(result.stdout)["readygate, message gate"][:2] == ["50", "50"]


def test_demo_rejects_bad_options(readygate_bin):
    result = run_demo(readygate_bin, "--clients", "0")
    assert result.returncode != 0
    assert "--clients" in result.stderr
