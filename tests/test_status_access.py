"""Who may read the status endpoint, and what /readyz says before the agent is ready.

The server runs for real on loopback; a non-loopback bind is only checked in the
configuration (tests stay on 127.0.0.1).
"""

from __future__ import annotations

import base64
import subprocess
from pathlib import Path

import aiohttp
import pytest
from conftest import REPO, floorlink_command, free_port

from agent.errors import ConfigError
from agent.settings import load_config_text
from agent.status.auth import SESSION_COOKIE, status_users
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


async def test_logins_by_basic_auth_or_a_token_that_sets_a_session_cookie() -> None:
    server, base = await serve({"night-shift": PASSWORD})
    try:
        async with aiohttp.ClientSession() as http:
            for path in ("/", "/status", "/metrics"):
                async with http.get(f"{base}{path}") as answer:
                    assert answer.status == 401, path
                    assert answer.headers["WWW-Authenticate"].startswith("Basic")
            async with http.get(f"{base}/status", headers=basic("night-shift", "wrong")) as a:
                assert a.status == 401
            async with http.get(f"{base}/status", headers=basic("nobody", PASSWORD)) as a:
                assert a.status == 401
            async with http.get(f"{base}/status", headers=basic("night-shift", PASSWORD)) as a:
                assert a.status == 200
                assert (await a.json())["agent"]["site"] == "plant"
            # Probes carry no plant data: a load balancer or systemd may ask without a login.
            async with http.get(f"{base}/healthz") as answer:
                assert answer.status == 503
            async with http.get(f"{base}/?token=not-it", allow_redirects=False) as answer:
                assert answer.status == 401
        async with aiohttp.ClientSession() as phone:
            async with phone.get(f"{base}/?token={PASSWORD}", allow_redirects=False) as answer:
                assert answer.status == 303
                assert answer.headers["Location"] == "/"  # the token leaves the address bar
                cookie = answer.cookies[SESSION_COOKIE]
                assert cookie["httponly"]
                assert cookie["samesite"] == "Strict"
            async with phone.get(f"{base}/", headers={"Cookie": f"{SESSION_COOKIE}="
                                                                f"{cookie.value}"}) as answer:
                assert answer.status == 200
                assert "floorlink" in await answer.text()
            async with phone.get(f"{base}/", headers={"Cookie": f"{SESSION_COOKIE}=forged"}) as a:
                assert a.status == 401
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
