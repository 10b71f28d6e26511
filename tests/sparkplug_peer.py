"""npm's sparkplug-payload as an independent Sparkplug B codec (tests/node/sparkplug-codec.cjs).

One Node process per codec, fed a line at a time: starting Node costs about 100 ms.
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

NODE_DIR = Path(__file__).parent / "node"
SCRIPT = NODE_DIR / "sparkplug-codec.cjs"


def missing(package: str = "sparkplug-payload") -> str | None:
    """Why a Node peer using `package` cannot run here, or None."""
    if shutil.which("node") is None:
        return "node is not installed (apt-get install nodejs npm)"
    if not (NODE_DIR / "node_modules" / package).is_dir():
        return f"tests/node has no {package}: run 'npm ci' there (scripts/test does)"
    return None


class NodeCodec:
    def __init__(self, encode: bool = False) -> None:
        why = missing()
        if why is not None:  # a failure, not a skip: a skipped peer proves nothing
            raise RuntimeError(f"the Sparkplug peer cannot run: {why}")
        args = ["node", str(SCRIPT), *(["--encode"] if encode else [])]
        self._process = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                         text=True, cwd=NODE_DIR)

    def _ask(self, line: str) -> str:
        assert self._process.stdin is not None
        assert self._process.stdout is not None
        self._process.stdin.write(line + "\n")
        self._process.stdin.flush()
        answer = self._process.stdout.readline()
        if not answer:
            raise RuntimeError(f"the Node codec ended (exit {self._process.poll()})")
        return answer.strip()

    def decode(self, raw: bytes) -> dict[str, Any]:
        decoded: dict[str, Any] = json.loads(self._ask(base64.b64encode(raw).decode()))
        if "error" in decoded:
            raise ValueError(decoded["error"])
        return decoded

    def encode(self, payload: dict[str, Any]) -> bytes:
        return base64.b64decode(self._ask(json.dumps(payload)))

    def close(self) -> None:
        if self._process.stdin is not None:
            self._process.stdin.close()
        try:
            self._process.wait(5)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait(5)
        if self._process.stdout is not None:
            self._process.stdout.close()



class Host:
    """A host application's view: every Sparkplug message on the broker, decoded by
    `decoder`; it sends commands encoded by `encoder`, and publishes its STATE."""

    def __init__(self, port: int, decoder: NodeCodec, encoder: NodeCodec, group: str,
                 node: str, client_id: str = "host") -> None:
        self.codec, self.encoder, self.group, self.node = decoder, encoder, group, node
        self.raw: list[tuple[str, bytes]] = []
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id)
        self.client.on_message = lambda c, u, m: self.raw.append((m.topic, bytes(m.payload)))
        self.client.connect("127.0.0.1", port)
        self.client.subscribe("spBv1.0/#", qos=0)
        self.client.loop_start()

    def messages(self, verb: str | None = None) -> list[tuple[str, dict[str, Any]]]:
        return [(topic, self.codec.decode(payload)) for topic, payload in list(self.raw)
                if (verb is None and "/STATE/" not in topic)
                or (verb is not None and f"/{verb}/" in topic)]

    def command(self, payload: dict[str, Any]) -> None:
        encoded = self.encoder.encode(payload)
        self.client.publish(f"spBv1.0/{self.group}/NCMD/{self.node}", encoded, qos=1)

    def state(self, host_id: str, online: bool, timestamp: int) -> None:
        """A Sparkplug 3.0 STATE, retained at QoS 1, as a primary host publishes it."""
        body = json.dumps({"online": online, "timestamp": timestamp}).encode()
        self.client.publish(f"spBv1.0/STATE/{host_id}", body, qos=1, retain=True
                            ).wait_for_publish(5)

    def stop(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def metric(message: dict[str, Any], name: str) -> dict[str, Any]:
    return next(m for m in message["metrics"] if m.get("name") == name)


def bd_seq(message: dict[str, Any]) -> int:
    return int(metric(message, "bdSeq")["value"])
