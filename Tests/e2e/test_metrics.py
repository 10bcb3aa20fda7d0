"""/metrics after real traffic: every family has # HELP and # TYPE, the new families (messages and
bytes by direction, time to READY by gate) count, and every metric the Grafana dashboard
(deploy/grafana/readygate.json) queries is exported."""

from __future__ import annotations

import asyncio
import json
import re
import urllib.request

import pytest

from conftest import REPO_ROOT
from test_admin import OPENER, admin_get
from test_readiness import client, recv_data

DASHBOARD = REPO_ROOT / "deploy" / "grafana" / "readygate.json"
METRIC_NAME = re.compile(r"\breadygate_[a-z_]+\b")


def dashboard_metrics() -> set[str]:
    """The metric names in the dashboard's PromQL expressions (a histogram's as `_bucket`, …)."""
    dashboard = json.loads(DASHBOARD.read_text())
    names = set()
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            names.update(METRIC_NAME.findall(target["expr"]))
    return names


def samples(text: str) -> dict[str, list[str]]:
    """Sample lines by metric name (`name{labels} value` or `name value`)."""
    result: dict[str, list[str]] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name = re.match(r"[a-zA-Z_:][a-zA-Z0-9_:]*", line).group(0)
            result.setdefault(name, []).append(line)
    return result


def value(lines: list[str], labels: str) -> float:
    for line in lines:
        if labels in line:
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no sample with {labels} in {lines}")


def test_the_dashboard_queries_metrics():
    names = dashboard_metrics()
    assert "readygate_sessions_total" in names, names
    assert len(names) >= 10, names


@pytest.mark.parametrize("engine", ["websockets"])
async def test_metrics_after_traffic_cover_the_dashboard(backend, readygate):
    b = backend(SETUP_MS=100, SEND_READY=1)
    rg = readygate(b.port, READYGATE_READY_GATE="message")
    async with asyncio.timeout(20):
        async with client(f"{rg.ws_url}/echo") as ws:
            await ws.send("sent before the backend is ready")
            assert await recv_data(ws) == "sent before the backend is ready"
            await ws.send("a second one")
            assert await recv_data(ws) == "a second one"
    with OPENER.open(f"http://127.0.0.1:{rg.port}/http/info", timeout=10) as response:
        assert response.status == 200
    assert await asyncio.to_thread(rg.wait_for_records, "session_summary"), rg.log()
    summary = rg.wait_for_records("session_summary")[0]

    status, text = admin_get(rg, "/metrics")
    assert status == 200, text
    by_name = samples(text)

    # Every family has its help and type lines.
    families = {line.split()[2] for line in text.splitlines() if line.startswith("# TYPE ")}
    helped = {line.split()[2] for line in text.splitlines() if line.startswith("# HELP ")}
    assert families, text
    assert families == helped, f"without # HELP: {families - helped}"

    # Every metric the dashboard queries is exported.
    missing = sorted(name for name in dashboard_metrics() if name not in by_name)
    assert not missing, f"the dashboard queries metrics /metrics does not export: {missing}\n{text}"

    # Time to READY, labelled by gate; both gates' series exist from the start.
    assert value(by_name["readygate_session_ready_seconds_count"], 'gate="message"') == 1, text
    assert value(by_name["readygate_session_ready_seconds_count"], 'gate="delay"') == 0, text

    # Messages and bytes relayed by direction, as the session summary counted them.
    messages = by_name["readygate_messages_total"]
    bytes_ = by_name["readygate_bytes_total"]
    assert value(messages, 'direction="client_to_upstream"') == int(summary["messages_in"]) == 2, text
    assert value(messages, 'direction="upstream_to_client"') == int(summary["messages_out"]) >= 3, text
    assert value(bytes_, 'direction="client_to_upstream"') == int(summary["bytes_in"]) > 0, text
    assert value(bytes_, 'direction="upstream_to_client"') == int(summary["bytes_out"]) > 0, text

    assert value(by_name["readygate_http_responses_total"], 'source="backend",code="2xx"') == 1, text
