"""The OPC UA driver against asyncua servers on loopback: delivery by subscription
and by polling, value types and status codes, browse paths, security with
certificates and a user, the errors a plant engineer sees, the staleness
watchdog, operation limits with 5,000 items, and counters across a restart.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from conftest import free_port
from test_drivers import Sink, stop

from agent.derive import AssetSpec, AssetState, DeriveContext, apply_samples, apply_stop
from agent.errors import DeviceUnreachable
from agent.settings.models import OpcUaDevice
from drivers.opcua.certs import make_application_certificate
from drivers.opcua.client import OpcUaDriver
from drivers.runner import DeviceHealth, run_device

NS = "urn:test:line"
SERVER_URI = "urn:test:opcua-server"


@pytest.fixture(autouse=True)
def quiet_asyncua() -> None:
    logging.getLogger("asyncua").setLevel(logging.CRITICAL)


class Plc:
    """An asyncua server with a small press and whatever else a test adds."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.endpoint = f"opc.tcp://127.0.0.1:{self.port}/plc"
        self.server: Any = None
        self.vars: dict[str, Any] = {}
        self.kinds: dict[str, Any] = {}

    async def start(self, fillers: int = 0, security: list[Any] | None = None,
                    cert_dir: Path | None = None, users: dict[str, str] | None = None,
                    values: dict[str, Any] | None = None, extra: int = 0) -> Plc:
        from asyncua import Server, ua
        from asyncua.server.user_managers import User, UserRole

        class Users:
            def get_user(self, iserver: Any, username: Any = None, password: Any = None,
                         certificate: Any = None) -> Any:
                if users is None:
                    return User(role=UserRole.User)
                if username in users and users[username] == password:
                    return User(role=UserRole.User)
                return None

        server = Server(user_manager=Users())
        await server.init()
        server.set_endpoint(self.endpoint)
        await server.set_application_uri(SERVER_URI)
        server.set_security_policy(security or [ua.SecurityPolicyType.NoSecurity])
        if users is not None:
            server.set_security_IDs(["Username"])
        if cert_dir is not None:
            await server.load_certificate(str(cert_dir / "server.pem"))
            await server.load_private_key(str(cert_dir / "server.key"), format="pem")
        for n in range(fillers):  # shifts the index our namespace gets
            await server.register_namespace(f"urn:test:filler:{n}")
        idx = await server.register_namespace(NS)
        press = await server.nodes.objects.add_object(ua.NodeId("Press1", idx),
                                                      ua.QualifiedName("Press1", idx))
        initial = {"Good": ua.Variant(100, ua.VariantType.UInt32),
                   "State": ua.Variant(1, ua.VariantType.Int32),
                   "Speed": ua.Variant(12.5, ua.VariantType.Double),
                   "Temp": ua.Variant(21.5, ua.VariantType.Float),
                   "Running": ua.Variant(True, ua.VariantType.Boolean),
                   "Order": ua.Variant("WO-1", ua.VariantType.String),
                   "Since": ua.Variant(datetime(2026, 11, 23, 6, 0, tzinfo=UTC),
                                       ua.VariantType.DateTime),
                   "Small": ua.Variant(-3, ua.VariantType.Int16),
                   "Big": ua.Variant(2**40, ua.VariantType.UInt64)}
        for name, variant in initial.items():
            if values and name in values:
                variant = ua.Variant(values[name], variant.VariantType)
            self.vars[name] = await press.add_variable(
                ua.NodeId(f"Press1.{name}", idx), ua.QualifiedName(name, idx), variant)
            self.kinds[name] = variant.VariantType
        codes = ua.LocalizedText("1 running, 2 idle, 3 down")  # as PLCs document them
        await self.vars["State"].write_attribute(ua.AttributeIds.Description, ua.DataValue(
            ua.Variant(codes, ua.VariantType.LocalizedText)))
        for n in range(extra):
            self.vars[f"x{n}"] = await press.add_variable(
                ua.NodeId(f"Press1.x{n}", idx), ua.QualifiedName(f"x{n}", idx),
                ua.Variant(n, ua.VariantType.Int32))
        await server.start()
        self.server = server
        return self

    async def write(self, name: str, value: Any, status: Any = None) -> None:
        from asyncua import ua

        node = self.vars[name]
        kind = self.kinds[name]
        stamp = datetime.now(UTC)
        # Straight into the address space: a PLC may report any status with a value.
        await self.server.write_attribute_value(node.nodeid, ua.DataValue(
            ua.Variant(value, kind), StatusCode=status or ua.StatusCode(ua.StatusCodes.Good),
            SourceTimestamp=stamp, ServerTimestamp=stamp))

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.stop()
            self.server = None


@pytest.fixture
async def plc() -> AsyncIterator[Plc]:
    server = await Plc().start()
    yield server
    await server.stop()


def device(endpoint: str, tags: list[dict[str, Any]], **settings: Any) -> OpcUaDevice:
    return OpcUaDevice.model_validate({
        "id": "ua", "protocol": "opcua", "endpoint": endpoint, "timeout": 2,
        "publishing_interval": 0.05, "keepalive": 0.5, **settings, "tags": tags})


def node(name: str) -> str:
    return f"nsu={NS};s=Press1.{name}"


async def run(settings: OpcUaDevice) -> tuple[asyncio.Task[None], Sink, DeviceHealth,
                                               OpcUaDriver]:
    sink, health, driver = Sink(), DeviceHealth("ua", "opcua"), OpcUaDriver(settings)
    task = asyncio.create_task(run_device(driver, sink, health, max_backoff=0.5))
    return task, sink, health, driver


async def test_subscribe_and_poll_deliver_every_type_with_the_plc_time(plc: Plc) -> None:
    from asyncua import ua

    names = ["Good", "State", "Speed", "Temp", "Running", "Order", "Since", "Small", "Big"]
    tags = [{"name": n.lower(), "node": node(n)} for n in names]
    tags += [{"name": "polled", "path": "Press1/Good", "mode": "poll", "poll_interval": "0.2s"},
             {"name": "std", "path": "0:Server/0:ServerStatus/0:State", "mode": "poll"}]
    task, sink, health, _ = await run(device(plc.endpoint, tags, namespace=NS))
    try:
        await sink.wait_for(lambda: len(sink.latest()) == len(tags))
        latest = sink.latest()
        assert {n: latest[n.lower()].value for n in names} == {
            "Good": 100, "State": 1, "Speed": 12.5, "Temp": 21.5, "Running": True,
            "Order": "WO-1", "Since": datetime(2026, 11, 23, 6, 0, tzinfo=UTC).timestamp(),
            "Small": -3, "Big": 2**40}
        assert latest["polled"].value == 100
        assert latest["std"].value == 0  # ServerState.Running, an enumeration
        assert all(s.after_gap for s in sink.samples[:len(tags)])
        assert health.details["subscriptions"] == 1
        assert health.details["monitored_items"] == 9
        assert health.details["polled"] == 2
        offset = health.details["server_clock_offset_s"]
        assert isinstance(offset, float)
        assert abs(offset) < 1

        await plc.write("Good", 101)
        await sink.wait_for(lambda: sink.latest()["good"].value == 101
                            and sink.latest()["polled"].value == 101)
        assert not sink.latest()["good"].after_gap

        # A sensor fault: Bad status. Never a number, never zero.
        await plc.write("Speed", 0.0, ua.StatusCode(ua.StatusCodes.BadSensorFailure))
        await sink.wait_for(lambda: sink.latest()["speed"].quality == "bad")
        assert sink.latest()["speed"].value is None
        await plc.write("Speed", 7.0)
        await sink.wait_for(lambda: sink.latest()["speed"].value == 7.0)
        assert sink.latest()["speed"].quality == "good"
        # Uncertain keeps its value and says so (seen here through a polled read).
        await plc.write("Good", 102, ua.StatusCode(ua.StatusCodes.UncertainLastUsableValue))
        await sink.wait_for(lambda: sink.latest()["polled"].quality == "uncertain")
        assert sink.latest()["polled"].value == 102
        assert health.state == "up"
    finally:
        await stop(task)


async def test_a_missing_node_is_reported_and_the_rest_still_flows(plc: Plc) -> None:
    tags = [{"name": "good", "node": node("Good")},
            {"name": "ghost", "path": "Press1/Nope"},
            {"name": "elsewhere", "node": "nsu=urn:not:there;s=X"}]
    task, sink, health, _ = await run(device(plc.endpoint, tags, namespace=NS))
    try:
        await sink.wait_for(lambda: "good" in sink.latest())
        problems = health.details["unresolved"]
        assert isinstance(problems, dict)
        assert "BadNoMatch" in problems["ghost"]
        assert "has no namespace 'urn:not:there'" in problems["elsewhere"]
    finally:
        await stop(task)


def make_pki(tmp_path: Path) -> Path:
    pki = tmp_path / "pki"
    (pki / "trusted").mkdir(parents=True)
    make_application_certificate(pki / "client.pem", pki / "client.key", "urn:test:floorlink",
                                 "localhost")
    make_application_certificate(pki / "server.pem", pki / "server.key", SERVER_URI,
                                 "127.0.0.1")
    return pki


def secure(pki: Path, mode: str, policy: str, trusted: bool = True) -> dict[str, Any]:
    if trusted:
        (pki / "trusted" / "server.pem").write_bytes((pki / "server.pem").read_bytes())
    return {"security": {"mode": mode, "policy": policy, "certificate": str(pki / "client.pem"),
                         "private_key": str(pki / "client.key"),
                         "trusted_servers": str(pki / "trusted")}}


@pytest.mark.parametrize(("mode", "policy", "server_policy"), [
    ("SignAndEncrypt", "Basic256Sha256", "Basic256Sha256_SignAndEncrypt"),
    ("Sign", "Basic256Sha256", "Basic256Sha256_Sign"),
    ("SignAndEncrypt", "Aes128_Sha256_RsaOaep", "Aes128Sha256RsaOaep_SignAndEncrypt"),
    ("SignAndEncrypt", "Aes256_Sha256_RsaPss", "Aes256Sha256RsaPss_SignAndEncrypt"),
])
async def test_secure_endpoints_with_a_certificate_and_a_user(
        tmp_path: Path, mode: str, policy: str, server_policy: str) -> None:
    from asyncua import ua

    pki = make_pki(tmp_path)
    plc = await Plc().start(security=[getattr(ua.SecurityPolicyType, server_policy)],
                            cert_dir=pki, users={"floorlink": "s3cret"})
    settings = device(plc.endpoint, [{"name": "good", "node": node("Good")}],
                      username="floorlink", password="s3cret", **secure(pki, mode, policy))
    task, sink, health, _ = await run(settings)
    try:
        await sink.wait_for(lambda: "good" in sink.latest())
        assert sink.latest()["good"].value == 100
        assert health.state == "up"
    finally:
        await stop(task)
        await plc.stop()


async def connect_error(settings: OpcUaDevice) -> str:
    driver = OpcUaDriver(settings)
    with pytest.raises(DeviceUnreachable) as caught:
        await driver.open()
    await driver.close()
    return str(caught.value)


async def test_a_wrong_password_says_so(tmp_path: Path) -> None:
    plc = await Plc().start(users={"floorlink": "s3cret"})
    try:
        error = await connect_error(device(plc.endpoint, [{"name": "g", "node": node("Good")}],
                                           username="floorlink", password="wrong"))
    finally:
        await plc.stop()
    assert "the server refused user 'floorlink'" in error, error
    assert "check username and password" in error


async def test_an_untrusted_server_is_refused_and_its_certificate_kept_for_review(
        tmp_path: Path) -> None:
    from asyncua import ua

    pki = make_pki(tmp_path)
    plc = await Plc().start(security=[ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt],
                            cert_dir=pki)
    try:
        settings = device(plc.endpoint, [{"name": "g", "node": node("Good")}],
                          **secure(pki, "SignAndEncrypt", "Basic256Sha256", trusted=False))
        error = await connect_error(settings)
        [rejected] = list((pki / "rejected").iterdir())
        assert "is not trusted" in error, error
        assert f"copy it into security.trusted_servers ({pki / 'trusted'})" in error
        assert str(rejected) in error
        # The engineer moves it into the trusted folder: now it connects.
        rejected.rename(pki / "trusted" / rejected.name)
        driver = OpcUaDriver(settings)
        await driver.open()
        await driver.close()
        # Trust on first use stores the first certificate it sees, once.
        for old in (pki / "trusted").iterdir():
            old.unlink()
        tofu = settings.model_copy(update={"security": settings.security.model_copy(
            update={"trust_on_first_use": True})})
        driver = OpcUaDriver(tofu)
        await driver.open()
        await driver.close()
        assert len(list((pki / "trusted").iterdir())) == 1
    finally:
        await plc.stop()


async def test_an_unreachable_endpoint_says_so() -> None:
    error = await connect_error(device(f"opc.tcp://127.0.0.1:{free_port()}/none",
                                       [{"name": "g", "node": node("Good")}]))
    assert "connection refused; check the port and that the server runs" in error, error


async def test_a_silent_subscription_is_recreated_but_quiet_values_are_not(plc: Plc) -> None:
    settings = device(plc.endpoint, [{"name": "good", "node": node("Good")}],
                      keepalive=0.2, timeout=0.5)
    task, sink, health, _ = await run(settings)
    try:
        await sink.wait_for(lambda: "good" in sink.latest())
        # Nothing changes for more than ten times the staleness limit (0.6 s + 0.5 s):
        # keep-alives arrive, and nothing is created again.
        await asyncio.sleep(12)
        assert health.details["recreated_subscriptions"] == 0
        assert len(sink.samples) == 1
        # The server stops serving the subscription; the connection stays up.
        for internal in list(plc.server.iserver.subscription_service.subscriptions.values()):
            await internal.stop()
        await sink.wait_for(lambda: health.details["recreated_subscriptions"] == 1, 10)
        await sink.wait_for(lambda: len(sink.samples) == 2, 5)
        again = sink.samples[-1]
        assert again.value == 100
        assert again.after_gap  # counters treat it as a value seen after a gap
        await plc.write("Good", 150)
        await sink.wait_for(lambda: sink.latest()["good"].value == 150)
        assert health.state == "up"
        assert health.reconnects == 0  # the session itself never went down
    finally:
        await stop(task)


@pytest.mark.slow
async def test_five_thousand_items_split_to_a_limit_of_100_per_call(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from asyncua import ua
    from asyncua.common.utils import ServiceError
    from asyncua.server.subscription_service import SubscriptionService

    calls: list[int] = []
    original = SubscriptionService.create_monitored_items

    async def limited(self: Any, params: Any) -> Any:
        calls.append(len(params.ItemsToCreate))
        if len(params.ItemsToCreate) > 100:
            raise ServiceError(ua.StatusCodes.BadTooManyOperations)
        return await original(self, params)

    monkeypatch.setattr(SubscriptionService, "create_monitored_items", limited)
    plc = await Plc().start(extra=5000)
    limit = plc.server.get_node(ua.NodeId(
        ua.ObjectIds.Server_ServerCapabilities_OperationLimits_MaxMonitoredItemsPerCall))
    await limit.write_value(ua.Variant(100, ua.VariantType.UInt32))
    tags = [{"name": f"x{n}", "node": node(f"x{n}")} for n in range(5000)]
    task, sink, health, _ = await run(device(plc.endpoint, tags, publishing_interval=0.2,
                                                  keepalive=2, timeout=10))
    try:
        await sink.wait_for(lambda: len(sink.latest()) == 5000, 120)
        assert calls == [100] * 50  # 5 subscriptions of 1,000, ten calls each, none refused
        assert health.details["subscriptions"] == 5
        assert health.details["requests"] == {"create_monitored_items": 50, "read": 0}
        assert {s.value for s in sink.latest().values()} == set(range(5000))
    finally:
        await stop(task)
        await plc.stop()
    # A server that enforces a limit it does not publish: halves until accepted.
    calls.clear()
    plc = await Plc().start(extra=300)
    tags = [{"name": f"x{n}", "node": node(f"x{n}")} for n in range(300)]
    task, sink, health, _ = await run(device(plc.endpoint, tags))
    try:
        await sink.wait_for(lambda: len(sink.latest()) == 300, 60)
        assert calls == [300, 150, 75, 75, 150, 75, 75]
    finally:
        await stop(task)
        await plc.stop()


async def test_a_restart_with_reordered_namespaces_loses_and_doubles_no_parts() -> None:
    """Parts keep coming while the server is down; the count made across the gap is
    confirmed exactly once, by the real derivation."""
    port = free_port()
    plc = await Plc(port).start()
    settings = device(plc.endpoint, [{"name": "good", "node": node("Good")}])
    task, sink, health, _ = await run(settings)
    made = 100
    try:
        await sink.wait_for(lambda: "good" in sink.latest())
        for _ in range(20):
            made += 1
            await plc.write("Good", made)
            await asyncio.sleep(0.02)
        await sink.wait_for(lambda: sink.latest()["good"].value == made)
        await plc.stop()
        await sink.wait_for(lambda: health.state == "down", 20)
        made += 37  # parts made while we could not see
        plc = await Plc(port).start(fillers=3, values={"Good": made})
        await sink.wait_for(lambda: health.state == "up"
                            and sink.latest()["good"].value == made, 30)
        for _ in range(10):
            made += 1
            await plc.write("Good", made)
            await asyncio.sleep(0.02)
        await sink.wait_for(lambda: sink.latest()["good"].value == made)
    finally:
        await stop(task)
        await plc.stop()
    spec = AssetSpec(id="press-1", area=None, line=None, roles={"ua.good": "good"},
                     state_map={}, micro_stop=5.0, interval=3600.0)
    context = DeriveContext(site="s", agent="a", epoch=1, new_id=lambda: "id")
    state, events = AssetState(), []
    for batch in sink.batches:  # batch by batch, as the pipeline applies them
        state, produced = apply_samples(spec, state, batch, 0.0, context)
        events += produced
    state, final = apply_stop(spec, state, 1.0, context)
    [confirmation] = [e for e in events + final if e.type.endswith("production.confirmed")]
    assert confirmation.data["good"] == made - 100  # every part after the baseline, once
    gaps = [s for s in sink.samples if s.after_gap]
    assert [s.value for s in gaps] == [100, 157]  # the baseline, and the first after restart


@pytest.mark.skipif(sys.platform != "linux", reason="uses the installed console script")
async def test_browse_prints_the_tree_with_node_ids_types_and_values(plc: Plc) -> None:
    command = os.path.join(os.path.dirname(sys.executable), "floorlink")
    proc = await asyncio.create_subprocess_exec(
        command, "browse", plc.endpoint, "--path", "Press1", "--namespace", NS, "--depth", "1",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    text = out.decode()
    assert proc.returncode == 0, err.decode()
    assert f"Press1  nsu={NS};s=Press1" in text
    assert f"├─ Good  nsu={NS};s=Press1.Good  UInt32 = 100" in text
    assert f"Order  nsu={NS};s=Press1.Order  String = 'WO-1'" in text
    assert f"State  nsu={NS};s=Press1.State  Int32 = 1  — 1 running, 2 idle, 3 down" in text


@pytest.mark.skipif(sys.platform != "linux", reason="uses the installed console script")
async def test_browse_without_a_namespace_says_what_to_add(plc: Plc) -> None:
    """It used to end in an AssertionError traceback."""
    command = os.path.join(os.path.dirname(sys.executable), "floorlink")
    proc = await asyncio.create_subprocess_exec(
        command, "browse", plc.endpoint, "--path", "Press1",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    _, err = await asyncio.wait_for(proc.communicate(), 60)
    text = err.decode()
    assert proc.returncode == 69
    assert "Traceback" not in text
    assert "give its URI (--namespace" in text
    assert NS in text  # the namespaces the server offers


async def test_probe_shows_path_tags_and_keeps_its_columns(plc: Plc, tmp_path: Path) -> None:
    """A tag addressed by `path` made probe end in a TypeError; long names and values
    pushed the columns apart."""
    from agent.probe import probe
    from agent.settings import load_config_text

    await plc.write("Order", "WO-" + "9" * 300)
    config = load_config_text(f"""
site: s
agent: {{id: a}}
devices:
  - id: ua
    protocol: opcua
    endpoint: {plc.endpoint}
    timeout: 2
    namespace: "{NS}"
    tags:
      - {{name: good, path: Press1/Good}}
      - {{name: a_very_long_tag_name_for_the_order_number, node: "{node('Order')}"}}
""", "config.yaml", tmp_path)
    lines: list[str] = []
    code = await probe(config, "ua", lines.append)
    assert code == 0, lines
    header, *rows = [line for line in lines if not line.startswith("ua:")]
    assert "path Press1/Good" in rows[0]
    assert rows[0].split()[-1] == "100"
    assert len(rows[1]) < 300  # a long value is shortened on its line
    assert rows[1].endswith("…")
    assert header.index("node") == rows[0].index("path Press1/Good") == rows[1].index("nsu=")
