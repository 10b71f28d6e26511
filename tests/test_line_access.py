"""Who may use the line page, and how hard it is to misuse: the operators file, PIN
lock-outs (per client and site-wide, from several loopback addresses), the rate limit,
the loopback-only rule without technicians' logins, and refusals shown to the operator.
A real status server on loopback, with a real pipeline writing a real SQLite buffer."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from conftest import REPO, floorlink_command, free_port

from agent.derive import DeriveContext, compile_assets
from agent.errors import ConfigError
from agent.pipeline import Pipeline
from agent.settings import load_config_text
from agent.shared import QueueItem, Sample
from agent.status import line as line_module
from agent.status import operators as line_operators_module
from agent.status.board import StatusBoard
from agent.status.line import LineDesk
from agent.status.operators import LineGate, line_operators, load_operators
from agent.status.server import StatusServer
from buffer import Outbox

CONFIG = """
site: s
agent: {{id: a}}
devices:
  - {{id: plc, protocol: modbus_tcp, host: 127.0.0.1, tags: [{{name: state, register: 40001}}]}}
assets:
  - id: press-1
    state: {{tag: plc.state, map: {{1: running, 3: down}}}}
    reason: {{choices: [{{code: 21, text: Waiting for material}}]}}
    downtime: {{micro_stop: 0s}}
  - id: press-2
    state: {{tag: plc.state, map: {{1: running, 3: down}}}}
status: {{operators_file: {operators}}}
"""


def operators_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "operators"
    path.write_text(text)
    os.chmod(path, 0o600)
    return path


@pytest.mark.parametrize(("text", "said"), [
    ("ana:47:press-1\n", "must be 4 to 64 letters or digits"),
    ("ana:4711:press-1\nbob:4711:press-2\n", "bob has the same PIN as line 1"),
    ("ana:4711:press-7\n", "press-7, which the config has no asset of"),
    ("ana 4711 press-1\n", "write `person:PIN:assets`"),
    ("# nobody yet\n", "holds no `person:PIN:assets` line"),
])
def test_the_operators_file_says_which_line_to_fix(tmp_path: Path, text: str,
                                                   said: str) -> None:
    path = operators_file(tmp_path, text)
    config = load_config_text(CONFIG.format(operators=path), "config.yaml", tmp_path)
    with pytest.raises(ConfigError, match=re.escape(said)):
        line_operators(config)


def test_check_config_refuses_a_bad_operators_file(tmp_path: Path) -> None:
    path = operators_file(tmp_path, "ana:12:*\n")
    (tmp_path / "config.yaml").write_text(CONFIG.format(operators=path))
    done = subprocess.run(floorlink_command("check-config", "-c", str(tmp_path / "config.yaml")),
                          capture_output=True, text=True, cwd=REPO, timeout=60)
    assert done.returncode == 78
    assert "status.operators_file" in done.stderr
    assert "Traceback" not in done.stderr


def test_one_code_means_one_reason(tmp_path: Path) -> None:
    path = operators_file(tmp_path, "ana:4711:*\n")
    text = CONFIG.format(operators=path).replace(
        "reason: {choices: [{code: 21, text: Waiting for material}]}",
        "reason: {texts: {21: Jam}, choices: [{code: 21, text: Waiting for material}]}")
    with pytest.raises(ConfigError, match="one code means one reason"):
        load_config_text(text, "config.yaml", tmp_path)


class Desk:
    def __init__(self, base: str, pipeline: Pipeline, server: StatusServer,
                 writer: asyncio.Task[None]) -> None:
        self.base, self.pipeline, self.server, self.writer = base, pipeline, server, writer

    async def stop_of(self, asset: str = "press-1") -> str:
        """A closed stop of `asset`, made by PLC samples through the pipeline."""
        await self.pipeline.queue.put([Sample("plc", "state", 1, "good", 1000.0)])
        await self.pipeline.queue.put([Sample("plc", "state", 3, "good", 1100.0)])
        await self.pipeline.queue.put([Sample("plc", "state", 1, "good", 1200.0)])
        for _ in range(100):
            rows = await self.pipeline.outbox.read(
                "SELECT ref FROM history WHERE kind = 'downtime' AND asset = ? AND end IS NOT "
                "NULL", (asset,))
            if rows:
                return str(rows[-1][0])
            await asyncio.sleep(0.05)
        raise AssertionError("no stop was recorded")


@pytest.fixture
async def desk(tmp_path: Path) -> AsyncIterator[Desk]:
    path = operators_file(tmp_path, "ana:4711:press-1\nbob:9999:press-2\n")
    config = load_config_text(CONFIG.format(operators=path), "config.yaml", tmp_path)
    outbox = await Outbox.open(tmp_path / "b.db", [])
    queue: asyncio.Queue[QueueItem] = asyncio.Queue(10)
    # Stops from 1970: the page lists the stops of the current and the previous shift, so
    # the clock is the derivation's, and the page's recent stops are read by their end.
    pipeline = Pipeline(compile_assets(config), {}, outbox,
                        DeriveContext(site="s", agent="a", epoch=outbox.epoch), queue)
    operators = line_operators(config)
    assert operators is not None
    desk = LineDesk(LineGate(operators), outbox, pipeline.specs, queue.put)
    port = free_port()
    server = StatusServer(StatusBoard(site="s", agent="a"), "127.0.0.1", port, line=desk)
    await server.start()
    task = asyncio.create_task(pipeline.run())
    try:
        yield Desk(f"http://127.0.0.1:{port}", pipeline, server, task)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await server.close()
        await outbox.close()


async def log_in(http: httpx.AsyncClient, pin: str = "4711") -> str:
    answer = await http.post("/line/login", data={"pin": pin})
    assert answer.status_code == 303, answer.text
    return await token(http)


async def token(http: httpx.AsyncClient) -> str:
    page = await http.get("/line")
    found = re.search(r'name=csrf value="([^"]+)"', page.text)
    assert found is not None, page.text
    return found.group(1)


async def test_wrong_pins_make_a_client_wait_and_many_lock_the_page_for_everyone(
        desk: Desk, monkeypatch: pytest.MonkeyPatch) -> None:
    async with httpx.AsyncClient(base_url=desk.base) as http:
        for _ in range(5):
            assert (await http.post("/line/login", data={"pin": "0000"})).status_code == 401
        waiting = await http.post("/line/login", data={"pin": "4711"})  # even the right one
        assert waiting.status_code == 429
        assert "try again in" in waiting.text
    # Site-wide: wrong PINs from many addresses (loopback has 16 million of them).
    monkeypatch.setattr(line_operators_module, "LOCK_AFTER", 8)
    for n in range(2, 10):
        transport = httpx.AsyncHTTPTransport(local_address=f"127.0.0.{n}")
        async with httpx.AsyncClient(base_url=desk.base, transport=transport) as http:
            await http.post("/line/login", data={"pin": "0000"})
    transport = httpx.AsyncHTTPTransport(local_address="127.0.0.77")
    async with httpx.AsyncClient(base_url=desk.base, transport=transport) as http:
        locked = await http.post("/line/login", data={"pin": "4711"})
        assert locked.status_code == 429
        assert "Too many wrong PINs" in locked.text


async def test_a_person_classifies_only_their_assets_at_a_bounded_rate(
        desk: Desk, monkeypatch: pytest.MonkeyPatch) -> None:
    stop = await desk.stop_of("press-1")
    async with httpx.AsyncClient(base_url=desk.base) as http:
        csrf = await log_in(http)
        page = (await http.get("/line")).text
        assert "press-1" in page
        assert "press-2" not in page
        form = {"csrf": csrf, "asset": "press-2", "downtime": stop, "code": "21"}
        assert (await http.post("/line/classify", data=form)).status_code == 403
        # Someone else's stop named under her asset: the pipeline finds no such stop there.
        other = await desk.stop_of("press-2")
        form = {"csrf": await token(http), "asset": "press-1", "downtime": other, "code": "21"}
        assert (await http.post("/line/classify", data=form)).status_code == 303
        assert "no longer listed" in (await http.get("/line")).text
        # A split outside the stop is refused with the times it may take.
        form = {"csrf": await token(http), "asset": "press-1", "downtime": stop,
                "at": "03:00:00", "code": "21", "second_code": "21"}
        assert (await http.post("/line/split", data=form)).status_code == 303
        assert "Choose a time between 00:18:20 and 00:20:00" in (await http.get("/line")).text
        monkeypatch.setattr(line_operators_module, "POSTS_PER_MINUTE", 4)
        answers = []
        for _ in range(3):
            form = {"csrf": await token(http), "asset": "press-1", "downtime": stop,
                    "code": "21"}
            answers.append((await http.post("/line/classify", data=form)).status_code)
        assert answers == [303, 429, 429]  # two posts above and one here made four


async def test_without_technicians_logins_the_line_page_is_for_loopback_names_only(
        desk: Desk) -> None:
    async with httpx.AsyncClient(base_url=desk.base) as http:
        assert (await http.get("/line")).status_code == 401  # the PIN form: no stops
        rebound = await http.get("/line", headers={"Host": "evil.example"})
        assert rebound.status_code == 421
        # A form from another site is refused before the PIN is looked at.
        forged = await http.post("/line/login", data={"pin": "4711"},
                                 headers={"Origin": "http://evil.example"})
        assert forged.status_code == 403
        await log_in(http)
        # The operator's cookie is for /line: the technicians' page never sees it.
        cookie = next(c for c in http.cookies.jar if c.name == "floorlink_line")
        assert cookie.path == "/line"
        logout = await http.post("/line/logout", data={"csrf": await token(http)})
        assert logout.status_code == 303
        assert (await http.get("/line")).status_code == 401


def test_a_reloaded_file_logs_out_whoever_it_no_longer_names(tmp_path: Path) -> None:
    first = load_operators(operators_file(tmp_path, "ana:4711:*\nbob:9999:*\n"), set())
    gate = LineGate(first)
    ana, bob = gate.open_session(first[0]), gate.open_session(first[1])
    gate.replace_operators(load_operators(operators_file(tmp_path, "ana:4711:*\n"), set()))
    assert gate.session(ana) is not None
    assert gate.session(bob) is None


def test_lock_outs_in_a_row_grow_longer_until_a_right_pin(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(line_operators_module, "LOCK_AFTER", 2)
    gate = LineGate(load_operators(operators_file(tmp_path, "ana:4711:*\n"), set()))
    locks = []
    for round_ in range(7):
        if round_ == 5:
            gate.succeeded("10.0.0.9")  # someone logged in: the next lock-out is short again
        gate.failed("10.0.0.1")
        gate.failed("10.0.0.2")
        locks.append(round(gate.lock_left() / 60))
        gate.locked_until = 0.0  # as if the lock-out had passed
    assert locks == [10, 20, 40, 80, 160, 10, 20]
    assert gate.lockouts == 7


@pytest.mark.parametrize(("form", "status", "said"), [
    ({"code": "abc"}, 400, "code is not a number"),
    ({"code": "99999999999"}, 400, "code is not a number"),
    ({"code": "-1"}, 400, "code is not a number"),
    ({"downtime": "x" * 65}, 400, "which stop"),
    ({"downtime": ""}, 400, "which stop"),
    ({"asset": "<script>"}, 403, "may not classify"),
])
async def test_hostile_forms_get_a_clear_answer_and_change_nothing(
        desk: Desk, form: dict[str, str], status: int, said: str) -> None:
    stop = await desk.stop_of("press-1")
    before = desk.pipeline.events_committed
    async with httpx.AsyncClient(base_url=desk.base) as http:
        csrf = await log_in(http)
        answer = await http.post("/line/classify", data={
            "csrf": csrf, "asset": "press-1", "downtime": stop, "code": "21", **form})
        assert answer.status_code == status
        assert said in answer.text
        huge = await http.post("/line/classify", content=b"csrf=" + b"x" * 5000)
        assert huge.status_code == 413
        binary = await http.post("/line/classify", content=b"\xff\xfe" * 100)
        assert binary.status_code in (400, 403)
    assert desk.pipeline.events_committed == before


async def test_a_writer_that_does_not_answer_is_told_honestly(
        desk: Desk, monkeypatch: pytest.MonkeyPatch) -> None:
    """The writer stalls (as on a full disk): the page says the choice is not saved yet;
    with the queue full as well, that the agent is busy. Nothing claims "Saved"."""
    stop = await desk.stop_of("press-1")
    desk.writer.cancel()
    await asyncio.gather(desk.writer, return_exceptions=True)
    monkeypatch.setattr(line_module, "ANSWER_SECONDS", 0.3)
    monkeypatch.setattr(line_module, "ENQUEUE_SECONDS", 0.3)
    async with httpx.AsyncClient(base_url=desk.base) as http:
        form = {"csrf": await log_in(http), "asset": "press-1", "downtime": stop,
                "code": "21"}
        assert (await http.post("/line/classify", data=form)).status_code == 303
        assert "Not saved yet" in (await http.get("/line")).text
        queue = desk.pipeline.queue
        while not queue.full():
            queue.put_nowait([])
        form["csrf"] = await token(http)
        assert (await http.post("/line/classify", data=form)).status_code == 303
        page = (await http.get("/line")).text
        assert "The agent is busy" in page
        assert "Saved" not in page
