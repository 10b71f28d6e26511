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

NODE_DIR = Path(__file__).parent / "node"
SCRIPT = NODE_DIR / "sparkplug-codec.cjs"


def missing() -> str | None:
    """Why the peer cannot run here, or None."""
    if shutil.which("node") is None:
        return "node is not installed (apt-get install nodejs npm)"
    if not (NODE_DIR / "node_modules" / "sparkplug-payload").is_dir():
        return "tests/node has no node_modules: run 'npm ci' there (scripts/test does)"
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

