"""What the page says when things are wrong: it is read at 3 a.m., so problems lead."""

from __future__ import annotations

from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from pki import TestCa

from agent.status.board import StatusBoard
from agent.status.clock import ClockStatus
from agent.status.page import render
from agent.uplinks import certificates
from agent.uplinks.base import UplinkHealth
from drivers.runner import DeviceHealth


def test_a_troubled_agent_leads_with_its_problems_and_escapes_what_plcs_say(
        tmp_path: Path) -> None:
    board = StatusBoard(site="plant", agent="edge-1", alive=True)
    board.devices = [DeviceHealth("press-plc", "modbus_tcp", state="down",
                                  last_error="<script>alert(1)</script> connection refused")]
    board.uplinks = [UplinkHealth("erp", "odoo", "https://erp", alarm="API key refused")]
    board.clock = ClockStatus(False, "kernel (adjtimex)", 0.0)
    ca = TestCa(tmp_path, "plant")
    soon = ca.issue("opcua-client", ["edge-1"], days=12)
    der = tmp_path / "client.der"
    der.write_bytes(x509.load_pem_x509_certificate(soon.cert.read_bytes())
                    .public_bytes(serialization.Encoding.DER))
    later = ca.issue("broker-client", ["edge-1"], days=200)
    board.other_certificates = [s.view() for s in
                                certificates.from_file(der, "press-plc", "OPC UA client")
                                + certificates.from_file(later.cert, "x", "client")]
    view = board.snapshot()
    page = render(view)
    assert '<header class="alarm"><h1>' in page
    assert "problems</h1>" in page
    assert page.index("id=alarms") < page.index("id=assets") < page.index("id=devices")
    assert "uplink.erp.paused" in page
    assert "API key refused" in page
    assert "NOT synchronised" in page
    assert "clock.unsynchronized" in page
    assert "<script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt; connection refused" in page
    assert [c["subject"] for c in view["certificates_expiring"]] == ["CN=opcua-client"]
    assert "CN=opcua-client" in page
    assert "CN=broker-client" not in page
    assert not view["agent"]["ready"]


def test_an_agent_not_running_says_so() -> None:
    page = render(StatusBoard(site="plant", agent="edge-1").snapshot())
    assert "<h1>Agent not running</h1>" in page
    assert "no devices configured" in page


def test_the_page_says_when_the_erp_last_accepted_the_key() -> None:
    board = StatusBoard(site="plant", agent="edge-1", alive=True)
    board.uplinks = [UplinkHealth("erp", "odoo", "https://erp", connected=True,
                                  credentials_accepted_at=1764687600.0)]
    view = board.snapshot()
    assert view["uplinks"][0]["credentials_accepted_at"] == "2025-12-02T15:00:00.000Z"
    assert "Key accepted</dt><dd>2025-12-02T15:00:00.000Z" in render(view)
