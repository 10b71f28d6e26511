"""Plant secrets in a configuration, make upstreams echo them back, and search every
output floorlink has: its log (JSON and text, at debug level), /status, the page,
/metrics, the buffer commands and check-config's error messages."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import threading
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from conftest import REPO, Line, floorlink_command, free_port, wait_until

TOKEN = "tok-5f3a9c1e-planted-bearer"
PASSWORD = "pw-77d0b2-planted-basic"
API_KEY = "key-c41f9e-planted-odoo"
SIGNING = "sig-9e8d7c-planted-signing"
SECRETS = (TOKEN, PASSWORD, API_KEY, SIGNING,
           base64.b64encode(f"mes:{PASSWORD}".encode()).decode())


class Echo(BaseHTTPRequestHandler):
    """A badly behaved middleware: it repeats the credentials it was sent in its errors."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        auth = self.headers.get("Authorization", "")
        if auth.startswith("Basic"):
            status, body = 500, f"backend down; you sent {auth} ({PASSWORD})"
        else:
            status, body = 400, f"schema error; your token {auth} is fine"
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.end_headers()
        self.wfile.write(body.encode())

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def echo() -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Echo)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


CONFIG = """
site: plant
agent: {{id: edge-1}}
devices:
  - id: press2-plc
    protocol: modbus_tcp
    host: 127.0.0.1
    port: {modbus_port}
    poll_interval: 100ms
    tags:
      - {{name: state, register: 40001}}
      - {{name: good, register: 40002, type: uint32}}
assets:
  - id: press-2
    state: {{tag: press2-plc.state, map: {{1: running, 2: idle, 3: down, 4: setup}}}}
    counters: {{good: press2-plc.good}}
buffer: {{path: {buffer}}}
uplinks:
  - id: mes
    type: https
    url: http://127.0.0.1:{echo}/events
    auth: {{type: bearer, token: "${{env:FL_TOKEN}}"}}
    signing_secret: "${{env:FL_SIGNING}}"
  - id: historian
    type: https
    url: http://127.0.0.1:{echo}/events
    auth: {{type: basic, username: mes, password: "${{env:FL_PASSWORD}}"}}
  - id: erp
    type: odoo
    url: http://127.0.0.1:{nothing}
    database: plant
    username: floorlink-bot
    api_key: "${{env:FL_API_KEY}}"
status: {{port: {status_port}}}
"""


def test_planted_secrets_appear_in_no_output(tmp_path: Path, echo: int) -> None:
    line = Line(tmp_path, seed=3, duration=60)
    status_port = free_port()
    config = tmp_path / "config.yaml"
    config.write_text(CONFIG.format(modbus_port=line.modbus_port, buffer=tmp_path / "b.db",
                                    echo=echo, nothing=free_port(), status_port=status_port))
    env = {**os.environ, "FL_TOKEN": TOKEN, "FL_PASSWORD": PASSWORD, "FL_API_KEY": API_KEY,
           "FL_SIGNING": SIGNING, "PYTHONUNBUFFERED": "1"}
    outputs: dict[str, str] = {}
    agent = subprocess.Popen(floorlink_command("run", "-c", str(config), "--log-level", "debug",
                                               "--log-format", "json"),
                             cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    line.go()

    def get(path: str) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{status_port}{path}", timeout=5) as a:
            return str(a.read().decode())

    def get_or(path: str) -> str:
        try:
            return get(path)
        except OSError as exc:
            return str(exc)

    try:
        def troubled() -> bool:
            try:
                view = json.loads(get("/status"))
            except OSError:
                return False
            by_id = {u["uplink"]: u for u in view["uplinks"]}
            return (by_id["mes"]["dead_lettered"] > 0 and bool(by_id["historian"]["last_error"])
                    and bool(by_id["erp"]["last_error"]))

        try:
            wait_until(troubled, 45, "the echoing upstreams to refuse and fail")
        except AssertionError:
            seen = get_or("/status")
            agent.terminate()
            out, err = agent.communicate(timeout=20)
            raise AssertionError((out + err).decode()[-4000:] + seen) from None
        for path in ("/status", "/", "/metrics"):
            outputs[path] = get(path)
        for action in (["dead-letters", "--all"], ["stats"], ["export"]):
            outputs[" ".join(action)] = subprocess.run(
                floorlink_command("buffer", *action, "-c", str(config)), cwd=REPO, env=env,
                capture_output=True, text=True, timeout=60).stdout
    finally:
        agent.terminate()
        out, err = agent.communicate(timeout=20)
        line.stop()
    outputs["agent stdout (json)"], outputs["agent stderr"] = out.decode(), err.decode()
    # The upstream's echo did arrive: the scrubbing had something to do.
    assert "schema error; your token Bearer ***" in outputs["dead-letters --all"]
    assert '"event_id"' in outputs["agent stdout (json)"]
    # check-config on a broken file that also holds the secrets.
    broken = tmp_path / "broken.yaml"
    broken.write_text(config.read_text().replace("poll_interval: 100ms", "poll_interval: x")
                      .replace('"${env:FL_PASSWORD}"', PASSWORD))
    checked = subprocess.run(floorlink_command("check-config", "-c", str(broken)), cwd=REPO,
                             env=env, capture_output=True, text=True, timeout=60)
    assert checked.returncode == 78
    outputs["check-config"] = checked.stdout + checked.stderr
    assert "poll_interval" in outputs["check-config"]
    for where, text in outputs.items():
        for secret in SECRETS:
            assert secret not in text, f"{secret!r} leaked into {where}"
