"""The control socket refuses what is not a request, over the real Unix socket: a body
that is a list, a string or null, ids that are not a list of ids, too many of them.
Measured before: a 500 with a traceback, and {"ids": "abc"} audited as ids a, b, c."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from agent import audit
from agent.control.server import MAX_IDS, AgentLock, ControlServer
from buffer import Outbox


@pytest.fixture
async def control(tmp_path: Path) -> AsyncIterator[tuple[httpx.AsyncClient, Outbox]]:
    outbox = await Outbox.open(tmp_path / "buffer.db", ["broker"])
    server = ControlServer(outbox)
    await server.start()
    transport = httpx.AsyncHTTPTransport(uds=str(server.path))
    async with httpx.AsyncClient(transport=transport, base_url="http://floorlink") as client:
        yield client, outbox
    await server.close()
    await outbox.close()


@pytest.mark.parametrize(("body", "said"), [
    (b"[1, 2]", "body"),
    (b'"replay everything"', "body"),
    (b"null", "body"),
    (b'{"ids": "abc"}', "ids"),
    (b'{"ids": [1, 2]}', "ids.0"),
    (b'{"ids": ["x"], "uplink": 7}', "uplink"),
    (b'{"idz": ["x"]}', "idz"),
    (json.dumps({"ids": ["e"] * (MAX_IDS + 1)}).encode(), "ids"),
])
async def test_a_replay_body_that_is_no_request_is_refused_with_what_is_wrong(
        control: tuple[httpx.AsyncClient, Outbox], body: bytes, said: str) -> None:
    client, outbox = control
    answer = await client.post("/buffer/replay", content=body)
    assert answer.status_code == 400, answer.text
    assert answer.text.startswith("bad request body (")
    assert said in answer.text
    assert "Traceback" not in answer.text
    assert not audit.audit_path(outbox).exists()  # nothing was done, nothing audited


async def test_alarm_keys_are_checked_and_a_good_replay_still_works(
        control: tuple[httpx.AsyncClient, Outbox]) -> None:
    client, outbox = control
    assert (await client.post("/buffer/alarms/clear", content=b'{"key": ["a"]}')
            ).status_code == 400
    answer = await client.post("/buffer/replay", json={"ids": [f"e{n}" for n in range(50)]})
    assert answer.json() == {"queued": 0}
    [line] = audit.audit_path(outbox).read_text().splitlines()
    entry = json.loads(line)
    assert (len(entry["ids"]), entry["ids_not_listed"]) == (20, 30)  # one line stays short


async def test_the_audit_log_rotates(control: tuple[httpx.AsyncClient, Outbox]) -> None:
    client, outbox = control
    path = audit.audit_path(outbox)
    path.write_text("x" * (audit.AUDIT_ROTATE_BYTES + 1))
    await client.post("/buffer/alarms/clear", json={"key": "buffer.dropped"})
    assert path.with_name("audit.log.1").stat().st_size > audit.AUDIT_ROTATE_BYTES
    assert json.loads(path.read_text())["action"] == "clear-alarm"


AS_NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]


def _others_can_run_the_code() -> bool:
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        return False
    tried = subprocess.run([*AS_NOBODY, sys.executable, "-c", "import agent.control.server"],
                           capture_output=True, timeout=60, cwd=Path(__file__).parent.parent)
    return tried.returncode == 0


@pytest.mark.skipif(not _others_can_run_the_code(),
                    reason="needs root, and a checkout another user can run")
def test_a_member_of_the_service_group_can_tell_whether_the_agent_runs() -> None:
    """`floorlink buffer stats` by a member of the service group ended in a PermissionError:
    the lock probe opened for writing a file UMask=0027 makes 0640."""
    place = Path(tempfile.mkdtemp(prefix="floorlink-lock-"))
    try:
        os.chmod(place, 0o755)
        buffer = place / "buffer.db"
        lock = AgentLock(buffer)
        lock.acquire()  # the agent, running
        os.chown(lock.path, 0, 65534)  # owner root, group nogroup
        os.chmod(lock.path, 0o640)
        probe = ("import sys; from pathlib import Path; from agent.control.server import "
                 f"AgentLock; print(AgentLock.held(Path({str(buffer)!r})))")
        as_member = [*AS_NOBODY, sys.executable, "-c", probe]
        ran = subprocess.run(as_member, capture_output=True, text=True, timeout=60,
                             cwd=Path(__file__).parent.parent)
        assert (ran.returncode, ran.stdout.strip()) == (0, "True"), ran.stderr
        lock.release()
        ran = subprocess.run(as_member, capture_output=True, text=True, timeout=60,
                             cwd=Path(__file__).parent.parent)
        assert ran.stdout.strip() == "False", ran.stderr
    finally:
        shutil.rmtree(place, ignore_errors=True)
