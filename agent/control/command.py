"""`floorlink buffer ...`: through the running agent's socket, or the file itself.

    floorlink buffer stats
    floorlink buffer dead-letters [--uplink U] [--all]
    floorlink buffer replay --id ID [--id ID ...] | --all  [--uplink U]
    floorlink buffer export --since T [-o FILE]       T: RFC 3339 time or an age ('2h')
    floorlink buffer alarms [--clear KEY | --clear-all]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import IO, Any

import httpx

from buffer import Outbox

from ..errors import BufferError
from ..settings.models import Config
from . import operations
from .arguments import parse_since
from .server import AgentLock, socket_path

VIA = "direct"
EX_OK, EX_USAGE, EX_UNAVAILABLE, EX_CANTCREAT = 0, 64, 69, 73


def run(args: argparse.Namespace, config: Config) -> int:
    try:
        since = parse_since(args.since) if args.action == "export" else 0.0
    except ValueError as exc:
        print(exc, file=sys.stderr)
        return EX_USAGE
    path = config.buffer.path
    sock = socket_path(path)
    try:
        if AgentLock.held(path):
            if not sock.exists():
                print(f"the agent is running but its control socket {sock} is missing; "
                      "restart the agent, or stop it to work on the file directly",
                      file=sys.stderr)
                return EX_UNAVAILABLE
            return _remote(args, sock, since)
        if not path.exists():
            print(f"no buffer at {path} (buffer.path in {args.config})", file=sys.stderr)
            return EX_USAGE
        return asyncio.run(_direct(args, config, since))
    except BufferError as exc:
        print(exc, file=sys.stderr)
        return EX_CANTCREAT
    except httpx.HTTPError as exc:
        print(f"the agent did not answer on {sock}: {exc}", file=sys.stderr)
        return EX_UNAVAILABLE


def _user() -> str:
    return operations.user_name(os.getuid())


async def _direct(args: argparse.Namespace, config: Config, since: float) -> int:
    limits = config.buffer.limits
    outbox = await Outbox.open(config.buffer.path, [u.id for u in config.uplinks],
                               config.buffer.synchronous,
                               limits.to_limits())
    try:
        if args.action == "stats":
            _print_json(await operations.stats(outbox))
        elif args.action == "dead-letters":
            _print_json(await operations.dead_letters(outbox, args.uplink, args.all))
        elif args.action == "replay":
            count = await operations.replay(outbox, None if args.all else args.ids,
                                            args.uplink, _user(), VIA)
            print(f"{count} dead letter(s) queued; they are sent when the agent runs")
        elif args.action == "export":
            count = await _write_lines(operations.export(outbox, since, _user(), VIA),
                                       args.output)
            print(f"{count} event(s) exported", file=sys.stderr)
        elif args.action == "alarms":
            return await _alarms(args, outbox)
    finally:
        await outbox.close()
    return EX_OK


async def _alarms(args: argparse.Namespace, outbox: Outbox) -> int:
    if args.clear or args.clear_all:
        count = await operations.clear_alarms(outbox, args.clear, _user(), VIA)
        print(f"{count} alarm(s) acknowledged")
    else:
        _print_json((await operations.stats(outbox))["alarms"])
    return EX_OK


def _remote(args: argparse.Namespace, sock: Path, since: float) -> int:
    transport = httpx.HTTPTransport(uds=str(sock))
    with httpx.Client(transport=transport, base_url="http://floorlink", timeout=60) as client:
        if args.action == "stats":
            _print_json(_ok(client.get("/buffer/stats")).json())
        elif args.action == "dead-letters":
            params = {"all": "1"} if args.all else {}
            if args.uplink:
                params["uplink"] = args.uplink
            _print_json(_ok(client.get("/buffer/dead-letters", params=params)).json())
        elif args.action == "replay":
            answer = _ok(client.post("/buffer/replay", json={
                "ids": None if args.all else args.ids, "uplink": args.uplink})).json()
            print(f"{answer['queued']} dead letter(s) queued for replay")
        elif args.action == "export":
            with client.stream("GET", "/buffer/export", params={"since": str(since)}) as reply:
                _ok(reply)
                count = _write_sync(reply.iter_lines(), args.output)
            print(f"{count} event(s) exported", file=sys.stderr)
        elif args.action == "alarms":
            if args.clear or args.clear_all:
                answer = _ok(client.post("/buffer/alarms/clear", json={"key": args.clear})).json()
                print(f"{answer['cleared']} alarm(s) acknowledged")
            else:
                _print_json(_ok(client.get("/buffer/stats")).json()["alarms"])
    return EX_OK


def _ok(reply: httpx.Response) -> httpx.Response:
    if reply.status_code != 200:
        reply.read()
        raise httpx.HTTPStatusError(f"{reply.status_code}: {reply.text[:200]}",
                                    request=reply.request, response=reply)
    return reply


async def _write_lines(lines: AsyncIterator[str], output: Path | None) -> int:
    count = 0
    with _open_output(output) as out:
        async for line in lines:
            out.write(line + "\n")
            count += 1
    return count


def _write_sync(lines: Iterator[str], output: Path | None) -> int:
    count = 0
    with _open_output(output) as out:
        for line in lines:
            if line:
                out.write(line + "\n")
                count += 1
    return count


def _open_output(output: Path | None) -> IO[str]:
    if output is None:
        return os.fdopen(os.dup(sys.stdout.fileno()), "w")
    return open(output, "w", encoding="utf-8")


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, default=str))
