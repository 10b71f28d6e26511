"""A value read from ${env:}, ${file:} or ${cred:} is a secret wherever it lands.

Measured before: check-config and run printed it in clear when the key holding it was
misspelled in an HTTPS or Odoo uplink, when it sat in `type:` or `url:`, or inside a
URL (`http://user:${env:X}@host`: five times in the log, in /status and on the page);
and JSON logs masked after encoding, so a secret with a quote or a backslash in it
escaped the mask.
"""

from __future__ import annotations

import html
import json
import os
import subprocess
import time
import urllib.request
from pathlib import Path
from urllib.parse import quote

import pytest
from conftest import REPO, floorlink_command, free_port, wait_until

# A quote, a backslash and a control character: each changes under JSON's escaping.
AWKWARD = 'pw"with\\back\x01slash-71c2'
SECRETS = {"S_ODOO": "odoo-key-4e1b99", "S_TOKEN": "bearer-tok-8a2c31",
           "S_TYPE": "type-secret-9f0d12", "S_URL": "url-secret-b7e611"}

MISTAKES = """
site: plant
devices:
  - {id: plc, protocol: modbus_tcp, host: 127.0.0.1, port: 5020,
     tags: [{name: state, register: 40001}]}
uplinks:
  - {id: erp, type: odoo, url: "http://127.0.0.1:1", database: plant, username: bot,
     api_kye: "${env:S_ODOO}"}
  - {id: mes, type: https, url: "http://127.0.0.1:1/x",
     auth: {type: bearer, tokn: "${env:S_TOKEN}"}}
  - {id: other, type: "${env:S_TYPE}"}
  - {id: bad-url, type: https, url: "ht tp://floorlink:${env:S_URL}@mes/events"}
"""


def _forms(secret: str) -> list[str]:
    """The secret as each output would encode it."""
    return [secret, json.dumps(secret)[1:-1], html.escape(secret), quote(secret, safe="")]


def test_check_config_masks_every_value_that_came_from_a_reference(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(MISTAKES)
    result = subprocess.run(floorlink_command("check-config", "-c", str(config)), cwd=REPO,
                            env={**os.environ, **SECRETS}, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 78, result.stderr
    shown = result.stdout + result.stderr
    for name, secret in SECRETS.items():
        assert secret not in shown, f"{name} shown in clear:\n{shown}"
    # The errors themselves stay useful: the path as written, and the keys that exist.
    assert "uplinks[0].api_kye" in shown
    assert "Did you mean 'api_key'?" in shown
    assert "uplinks[1].auth.tokn" in shown
    assert "Did you mean 'token'?" in shown
    assert "Expected one of 'mqtt', 'https', 'odoo'" in shown
    assert "uplinks[3].url" in shown
    assert "Expected one of: none" not in shown


def test_a_secret_inside_a_url_with_awkward_characters_stays_masked_in_every_output(
        tmp_path: Path) -> None:
    status_port = free_port()
    config = tmp_path / "config.yaml"
    config.write_text(f"""
site: plant
agent: {{id: edge-1}}
devices:
  - {{id: plc, protocol: modbus_tcp, host: 127.0.0.1, port: {free_port()},
     tags: [{{name: state, register: 40001}}]}}
assets:
  - {{id: a1, state: {{tag: plc.state, map: {{1: running}}}}}}
buffer: {{path: {tmp_path / "b.db"}}}
uplinks:
  - {{id: mes, type: https, url: "http://floorlink:${{env:FL_URL_PW}}@127.0.0.1:{free_port()}/e"}}
status: {{port: {status_port}}}
""")
    env = {**os.environ, "FL_URL_PW": AWKWARD, "PYTHONUNBUFFERED": "1"}
    agent = subprocess.Popen(floorlink_command("run", "-c", str(config), "--log-level", "debug",
                                               "--log-format", "json"),
                             cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    outputs: dict[str, str] = {}

    def get(path: str) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{status_port}{path}", timeout=5) as a:
            return str(a.read().decode())

    def answering() -> bool:
        try:
            return bool(json.loads(get("/status"))["uplinks"])
        except OSError:
            return False

    try:
        wait_until(answering, 30, "the status page to answer")
        time.sleep(2)  # the PLC's connection failures and the uplink's start get logged
        for path in ("/status", "/", "/metrics"):
            outputs[path] = get(path)
    finally:
        agent.terminate()
        out, err = agent.communicate(timeout=20)
    outputs["log (json)"], outputs["stderr"] = out.decode(), err.decode()
    assert "floorlink:***@127.0.0.1" in outputs["/status"]  # it was there, and masked
    assert outputs["log (json)"].strip(), "the agent logged nothing"
    for line in outputs["log (json)"].splitlines():
        json.loads(line)  # masking kept each line valid JSON
    for where, text in outputs.items():
        for form in _forms(AWKWARD):
            assert form not in text, f"{form!r} leaked into {where}"


def test_secret_files_that_others_can_read_are_named_with_the_fix(tmp_path: Path) -> None:
    secret = tmp_path / "odoo.key"
    secret.write_text("odoo-key-from-a-file\n")
    users = tmp_path / "status-users"
    users.write_text("night-shift:correct-horse-battery\n")
    config = tmp_path / "config.yaml"
    config.write_text(f"""
site: plant
devices:
  - {{id: plc, protocol: modbus_tcp, host: 127.0.0.1, port: 5020,
     tags: [{{name: state, register: 40001}}]}}
uplinks:
  - {{id: erp, type: odoo, url: "http://127.0.0.1:1", database: plant, username: bot,
     api_key: "${{file:{secret}}}"}}
status: {{bind: 0.0.0.0, credentials_file: {users}}}
""")

    def check() -> str:
        result = subprocess.run(floorlink_command("check-config", "-c", str(config)), cwd=REPO,
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        return result.stderr

    secret.chmod(0o644)
    users.chmod(0o640)
    warned = check()
    assert f"the secret file {secret} is readable by its group and every user" in warned
    assert f"chmod 600 {secret}" in warned
    assert "the status users file is readable by its group (mode 0o640)" in warned
    assert "odoo-key-from-a-file" not in warned
    secret.chmod(0o600)
    users.chmod(0o600)
    assert "readable" not in check()


@pytest.mark.parametrize("awkward", [AWKWARD, 'q"uote-only-123', "back\\slash-only-123"])
def test_json_log_lines_mask_before_encoding(awkward: str, capsys: pytest.CaptureFixture[str]
                                             ) -> None:
    import logging

    from agent import redact
    from agent.logs import JsonFormatter

    redact.register_value(awkward)
    record = logging.LogRecord("floorlink.test", logging.ERROR, __file__, 1,
                               "upstream said %s", (f"denied for {awkward}",), None)
    line = JsonFormatter().format(record)
    assert json.loads(line)["msg"] == "upstream said denied for ***"
    for form in _forms(awkward):
        assert form not in line
