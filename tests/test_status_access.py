"""Who may read the status endpoint, and what /readyz says before the agent is ready.

The server runs for real on loopback; a non-loopback bind is only checked in the
configuration (tests stay on 127.0.0.1).
"""

from __future__ import annotations

import asyncio
import base64
import logging
import re
import subprocess
import time
from collections import Counter
from pathlib import Path

import aiohttp
import httpx
import pytest
from conftest import REPO, floorlink_command, free_port

from agent.errors import ConfigError
from agent.settings import load_config_text
from agent.status.auth import SESSION_COOKIE, LoginThrottle, status_users
from agent.status.board import StatusBoard
from agent.status.server import StatusServer

PASSWORD = "correct-horse-battery"


def basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


async def serve(users: dict[str, str] | None = None) -> tuple[StatusServer, str]:
    board = StatusBoard(site="plant", agent="edge-1")
    port = free_port()
    server = StatusServer(board, "127.0.0.1", port, users=users)
    await server.start()
    return server, f"http://127.0.0.1:{port}"


async def test_readyz_is_503_until_config_buffer_and_uplinks_are_in_place() -> None:
    server, base = await serve()
    try:
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{base}/readyz") as answer:
                assert answer.status == 503
                assert "config_loaded NO" in await answer.text()
            async with http.get(f"{base}/healthz") as answer:
                assert answer.status == 503
            board = server.board
            board.config_loaded_at, board.buffer_open, board.alive = 1.0, True, True
            async with http.get(f"{base}/readyz") as answer:
                assert answer.status == 503
                assert "uplinks_started NO" in await answer.text()
            board.uplinks_started = True
            async with http.get(f"{base}/readyz") as answer:
                assert answer.status == 200
    finally:
        await server.close()


def _csrf(answer: httpx.Response) -> tuple[str, str]:
    """The hidden field's token and the cookie's, from a login form."""
    field = re.search(r'name=csrf value="([^"]+)"', answer.text)
    assert field is not None
    return field.group(1), answer.cookies["floorlink_csrf"]


async def test_logins_by_basic_auth_or_the_form_and_never_in_a_url() -> None:
    server, base = await serve({"night-shift": PASSWORD})
    try:
        async with httpx.AsyncClient(base_url=base) as http:
            page = await http.get("/")
            # A browser gets the form, not the basic-auth dialog; nothing about it is cached.
            assert page.status_code == 401
            assert "www-authenticate" not in page.headers
            assert 'method=post action="/login"' in page.text
            assert page.headers["cache-control"] == "no-store"
            for path in ("/status", "/metrics"):
                answer = await http.get(path)
                assert answer.status_code == 401, path
                assert answer.headers["www-authenticate"].startswith("Basic")
                assert answer.headers["cache-control"] == "no-store"
            assert (await http.get("/status", auth=("night-shift", "wrong"))).status_code == 401
            assert (await http.get("/status", auth=("nobody", PASSWORD))).status_code == 401
            answer = await http.get("/status", auth=("night-shift", PASSWORD))
            assert answer.status_code == 200
            assert answer.json()["agent"]["site"] == "plant"
            # Probes carry no plant data: a load balancer or systemd may ask without a login.
            assert (await http.get("/healthz")).status_code == 503
            # The password in a URL stays in history and proxy logs: refused, even if right.
            token = await http.get(f"/?token={PASSWORD}")
            assert token.status_code == 400
            assert "set-cookie" not in token.headers
            assert "/login" in token.text
        async with httpx.AsyncClient(base_url=base) as phone:
            form = await phone.get("/login")
            assert form.status_code == 200
            field, cookie = _csrf(form)
            assert field == cookie
            login = {"user": "night-shift", "password": PASSWORD}
            # Without the form's token (a post from another site): refused.
            forged = await phone.post("/login", data={**login, "csrf": "guess"})
            assert forged.status_code == 403
            assert not phone.cookies.get(SESSION_COOKIE)
            other_site = await phone.post("/login", data={**login, "csrf": field},
                                          headers={"Origin": "http://evil.example"})
            assert other_site.status_code == 403
            field, _ = _csrf(await phone.get("/login"))
            wrong = await phone.post("/login", data={**login, "password": "nope", "csrf": field})
            assert wrong.status_code == 401
            assert "Wrong user or password" in wrong.text
            field, _ = _csrf(wrong)
            answer = await phone.post("/login", data={**login, "csrf": field},
                                      headers={"Origin": base})
            assert answer.status_code == 303
            assert answer.headers["location"] == "/"
            assert answer.headers["cache-control"] == "no-store"
            session = answer.cookies[SESSION_COOKIE]
            assert "HttpOnly" in answer.headers["set-cookie"]
            assert "SameSite=Strict" in answer.headers["set-cookie"]
            page = await phone.get("/", headers={"Cookie": f"{SESSION_COOKIE}={session}"})
            assert page.status_code == 200
            assert "floorlink" in page.text
        async with httpx.AsyncClient(base_url=base) as stranger:
            forged_session = await stranger.get("/", headers={"Cookie": f"{SESSION_COOKIE}=forged"})
            assert forged_session.status_code == 401
    finally:
        await server.close()


async def test_wrong_logins_make_their_client_wait_and_the_log_sums_them_up(
        caplog: pytest.LogCaptureFixture) -> None:
    """Measured before: 2,000 tries in 0.9 s, no slowdown, a log line each."""
    server, base = await serve({"night-shift": PASSWORD})
    assert server.gate is not None
    server.gate.throttle = LoginThrottle(free=5, first_wait=0.2, longest=1.0)
    caplog.set_level(logging.INFO, logger="floorlink.status")
    try:
        async with httpx.AsyncClient(base_url=base) as http:
            statuses: Counter[int] = Counter()
            started = time.monotonic()
            for _ in range(2000):
                answer = await http.get("/status", auth=("night-shift", "guess"))
                statuses[answer.status_code] += 1
            elapsed = time.monotonic() - started
            # Only tries outside a wait are looked at: 5 free, then about one per second.
            assert statuses[401] <= 5 + elapsed / 1.0 + 2, (statuses, elapsed)
            assert statuses[429] >= 2000 - statuses[401]
            waiting = await http.get("/status", auth=("night-shift", PASSWORD))
            assert waiting.status_code == 429  # the right password waits its turn too
            assert int(waiting.headers["retry-after"]) >= 1
            # Another client on the plant network is not held up by this one.
            transport = httpx.AsyncHTTPTransport(local_address="127.0.0.2")
            async with httpx.AsyncClient(base_url=base, transport=transport) as other:
                assert (await other.get("/status", auth=("night-shift", PASSWORD))
                        ).status_code == 200
            await asyncio.sleep(1.1)
            assert (await http.get("/status", auth=("night-shift", PASSWORD))).status_code == 200
    finally:
        await server.close()
    lines = [r.getMessage() for r in caplog.records if "login" in r.getMessage()]
    assert 1 <= len(lines) <= 4, lines  # a summary, not 2,000 lines
    assert any("127.0.0.1" in line for line in lines)


async def test_every_answer_carries_the_security_headers() -> None:
    for users in (None, {"night-shift": PASSWORD}):
        server, base = await serve(users)
        try:
            async with httpx.AsyncClient(base_url=base) as http:
                for path in ("/", "/status", "/metrics", "/healthz", "/missing"):
                    headers = (await http.get(path)).headers
                    assert headers["content-security-policy"] == (
                        "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; "
                        "script-src 'self'; form-action 'self'; frame-ancestors 'none'"), path
                    assert headers["x-content-type-options"] == "nosniff"
                    assert headers["x-frame-options"] == "DENY"
                    assert headers["referrer-policy"] == "same-origin"
        finally:
            await server.close()


async def test_without_logins_the_page_answers_to_loopback_names_only() -> None:
    """DNS rebinding: a page on evil.example resolves its own name to 127.0.0.1 and reads
    the status through the technician's SSH tunnel. Its requests carry its own Host."""
    server, base = await serve()
    port = server.port
    try:
        async with httpx.AsyncClient(base_url=base) as http:
            for host in (f"evil.example:{port}", "evil.example", f"10.0.0.5:{port}",
                         f"localhost.evil.example:{port}"):
                answer = await http.get("/status", headers={"Host": host})
                assert answer.status_code == 421, host
                assert f"http://localhost:{port}/" in answer.text
            for host in (f"localhost:{port}", f"127.0.0.1:{port}", f"[::1]:{port}",
                         "localhost", f"LOCALHOST:{port}"):
                assert (await http.get("/status", headers={"Host": host})).status_code == 200
    finally:
        await server.close()


CONFIG = """
site: plant
devices:
  - {{id: plc, protocol: modbus_tcp, host: 127.0.0.1, port: 5020,
     tags: [{{name: state, register: 40001}}]}}
status: {status}
"""


def test_binding_beyond_loopback_needs_a_credentials_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as refused:
        load_config_text(CONFIG.format(status="{bind: 0.0.0.0}"), "c.yaml", tmp_path)
    assert "status.credentials_file" in str(refused.value)
    assert "bind 127.0.0.1" in str(refused.value)
    for loopback in ("127.0.0.1", "::1", "localhost"):
        load_config_text(CONFIG.format(status=f"{{bind: '{loopback}'}}"), "c.yaml", tmp_path)
    users = tmp_path / "status-users"
    users.write_text("# technicians\nnight-shift:short\n")
    outside = CONFIG.format(status=f"{{bind: 0.0.0.0, credentials_file: {users}}}")
    with pytest.raises(ConfigError) as weak:
        status_users(load_config_text(outside, "c.yaml", tmp_path))
    assert "at least 12 characters" in str(weak.value)
    assert "short" not in str(weak.value)  # the password itself is never echoed
    users.write_text(f"# technicians\nnight-shift:{PASSWORD}\n")
    assert status_users(load_config_text(outside, "c.yaml", tmp_path)) == {
        "night-shift": PASSWORD}
    users.unlink()
    with pytest.raises(ConfigError) as missing:
        status_users(load_config_text(outside, "c.yaml", tmp_path))
    assert "cannot read" in str(missing.value)
    assert "status.credentials_file" in str(missing.value)


def test_an_agent_with_an_unreadable_credentials_file_exits_78(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(CONFIG.format(
        status=f"{{bind: 0.0.0.0, port: {free_port()}, credentials_file: {tmp_path / 'nope'}}}")
        + f"buffer: {{path: {tmp_path / 'b.db'}}}\n")
    for command in ("check-config", "run"):
        result = subprocess.run(floorlink_command(command, "-c", str(config)), cwd=REPO,
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 78, (command, result.stderr)
        assert "status.credentials_file" in result.stderr
