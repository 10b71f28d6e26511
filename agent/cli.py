"""The `floorlink` command.

    floorlink run -c FILE            the service entry point (--watch: one line per event)
    floorlink init --modbus HOST     an annotated configuration for one PLC, to edit
    floorlink demo                   simulated line + agent on loopback, events on the console
    floorlink check-config -c FILE   'ok', or every error at once (exit 78)
    floorlink schema                 the configuration's JSON Schema
    floorlink simulate               only the simulated line (for tests and benchmarks)
    floorlink buffer ACTION -c FILE  stats, dead-letters, replay, export, alarms
    floorlink browse ENDPOINT        an OPC UA server's address space, for writing the YAML
    floorlink opcua-cert             a client certificate and key for OPC UA security
    floorlink odoo check -c FILE     log in to Odoo and resolve everything the mapping names
    floorlink install-service        install as a systemd service (or --uninstall)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from .build import this_build
from .errors import BufferError, ConfigError

EX_OK = 0
EX_USAGE = 64
EX_SOFTWARE = 70
EX_CANTCREAT = 73
EX_CONFIG = 78


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    return int(args.handler(args))


def _parser() -> argparse.ArgumentParser:
    from .settings import default_config_path

    parser = argparse.ArgumentParser(
        prog="floorlink",
        description="Edge gateway: PLC signals to ERP-ready events, buffered, delivered.")
    parser.add_argument("--version", action="version", version=this_build().describe())
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    def add(name: str, handler: Any, help_text: str, config: bool = True) -> Any:
        sub = commands.add_parser(name, help=help_text, description=help_text)
        if config:
            sub.add_argument("-c", "--config", type=Path, default=default_config_path(),
                             help="configuration file (default: $FLOORLINK_CONFIG or "
                                  "/etc/floorlink/config.yaml)")
        sub.add_argument("--log-level", default="info",
                         choices=["debug", "info", "warning", "error"])
        sub.add_argument("--log-format", default="auto", choices=["auto", "json", "text"],
                         help="json: one object per line on stdout, for journald (the default "
                              "under systemd); text: for a terminal")
        sub.set_defaults(handler=handler)
        return sub

    run = add("run", _run, "Run the agent (the systemd service entry point).")
    run.add_argument("--watch", action="store_true",
                     help="print one line per event as it is derived (for commissioning)")
    init = add("init", _init, "Write an annotated configuration for one PLC, to edit.",
               config=False)
    target = init.add_argument_group("the PLC (one of)").add_mutually_exclusive_group(
        required=True)
    target.add_argument("--modbus", metavar="HOST[:PORT]", help="a Modbus TCP PLC")
    target.add_argument("--opcua", metavar="ENDPOINT", help="an OPC UA server, opc.tcp://...")
    init.add_argument("--unit", type=int, default=1, help="Modbus unit id (default 1)")
    init.add_argument("-o", "--output", type=Path, default=Path("floorlink.yaml"),
                      help="the file to write (default ./floorlink.yaml)")
    init.add_argument("--force", action="store_true", help="overwrite an existing file")
    demo = add("demo", _demo, "Run a simulated press line and the agent on loopback.")
    demo.set_defaults(config=None)
    demo.add_argument("--seed", type=int, default=7)
    demo.add_argument("--state-dir", type=Path, default=None,
                      help="where the demo keeps its buffer (default: a fresh temporary folder)")
    for name, default in (("opcua", 4840), ("modbus", 5020), ("mqtt", 1883), ("status", 8080)):
        demo.add_argument(f"--{name}-port", type=int, default=default,
                          help=f"default {default}")
    add("check-config", _check_config, "Validate a configuration file; print 'ok' or every error.")
    probe = add("probe", _probe, "Read every tag of one device once, for commissioning.")
    probe.add_argument("device", help="the device id from the configuration")
    browse = add("browse", _browse, "Print an OPC UA server's address space as a tree, with "
                 "nsu= node ids, data types and current values.")
    browse.add_argument("endpoint", nargs="?", help="opc.tcp://host:port/path (or --device)")
    browse.add_argument("--device", help="take endpoint and security from this configured device")
    browse.add_argument("--path", help="start here: a browse path from Objects, e.g. "
                        "'Line1/Press1' (with --namespace), or '0:Server'")
    browse.add_argument("--namespace", help="namespace URI of --path's names")
    browse.add_argument("--depth", type=int, default=3, help="levels to show (default 3)")
    browse.add_argument("--security-mode", choices=["None", "Sign", "SignAndEncrypt"])
    from .settings.models import OPCUA_POLICIES

    browse.add_argument("--policy", choices=list(OPCUA_POLICIES))
    browse.add_argument("--certificate", type=Path)
    browse.add_argument("--private-key", type=Path)
    browse.add_argument("--trusted-servers", type=Path)
    browse.add_argument("--trust-on-first-use", action="store_true")
    browse.add_argument("--username")
    browse.add_argument("--password-env", metavar="VARIABLE",
                        help="read the password from this environment variable")
    browse.add_argument("--timeout", type=float, default=10.0)
    cert = add("opcua-cert", _opcua_cert, "Make floorlink's OPC UA client certificate and key "
               "(self-signed, with the application URI servers check).", config=False)
    cert.add_argument("--out", type=Path, default=Path("/etc/floorlink/pki"),
                      help="folder for floorlink.pem and floorlink.key "
                           "(default /etc/floorlink/pki)")
    cert.add_argument("--uri", default=None,
                      help="application URI (default urn:floorlink:<host name>)")
    cert.add_argument("--host", default=None, help="host name in the certificate")
    cert.add_argument("--days", type=int, default=825)
    cert.add_argument("--force", action="store_true", help="replace existing files")
    odoo = add("odoo", _odoo, "Commissioning of Odoo uplinks: `check` logs in and resolves "
               "every work center, loss reason, equipment and lot model the mapping names, "
               "and the rights the API user needs. It only reads.")
    odoo.add_argument("action", choices=["check"])
    odoo.add_argument("--uplink", help="only this uplink id (default: every Odoo uplink)")
    buffer = add("buffer", _buffer, "Inspect the buffer, replay dead letters, export events.")
    from .control.arguments import add_arguments

    add_arguments(buffer)
    add("schema", _schema, "Print the configuration's JSON Schema.", config=False)
    install = add("install-service", _install_service, "Install (or upgrade, or remove) "
                  "floorlink as a hardened systemd service; see docs/deploy.md.", config=False)
    from .install import add_arguments as add_install_arguments

    add_install_arguments(install)
    sim = add("simulate", _simulate, "Serve only the simulated press line.", config=False)
    sim.add_argument("--seed", type=int, default=7)
    sim.add_argument("--opcua-port", type=int, default=4840)
    sim.add_argument("--modbus-port", type=int, default=5020)
    sim.add_argument("--truth", type=Path, default=None, help="write ground truth (JSON lines)")
    sim.add_argument("--duration", type=float, default=None,
                     help="seconds of scenario, then the line idles for good")
    sim.add_argument("--wait-for-signal", action="store_true",
                     help="start the scenario on SIGUSR1, not at once")
    return parser


def _setup_logging(level: str, log_format: str = "auto") -> None:
    from .logs import setup

    setup(level, log_format)


def _load(path: Path, secrets_required: bool = True) -> Any:
    from .redact import register
    from .settings import load_config

    config = load_config(path, secrets_required)
    register(config)
    return config


def _check_config(args: argparse.Namespace) -> int:
    _setup_logging("warning")  # warnings (a secret file others can read) go to stderr
    try:
        from .status.auth import status_users
        from .status.operators import line_operators

        config = _load(args.config)
        status_users(config)
        line_operators(config)
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        print(f"{len(exc.issues)} problem{'s' if len(exc.issues) != 1 else ''} found",
              file=sys.stderr)
        return EX_CONFIG
    print("ok")
    return EX_OK


def _quiet_tool(args: argparse.Namespace, secrets_required: bool = True) -> Any:
    """Logging and configuration for a command a person runs: only errors are logged,
    and a bad configuration is printed for them (the caller exits with EX_CONFIG)."""
    _setup_logging("error" if args.log_level == "info" else args.log_level)
    try:
        return _load(args.config, secrets_required)
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return None


def _probe(args: argparse.Namespace) -> int:
    config = _quiet_tool(args)
    if config is None:
        return EX_CONFIG
    known = [d.id for d in config.devices]
    if args.device not in known:
        print(f"no device '{args.device}' in {args.config}; devices are: {', '.join(known)}",
              file=sys.stderr)
        return EX_USAGE
    from .probe import probe

    return asyncio.run(probe(config, args.device))


def _browse(args: argparse.Namespace) -> int:
    from agent.settings.models import OpcUaDevice, OpcUaSecurity

    _setup_logging("error" if args.log_level == "info" else args.log_level)
    security = OpcUaSecurity()
    endpoint, username, password = args.endpoint, args.username, None
    if args.device:
        config = _quiet_tool(args)
        if config is None:
            return EX_CONFIG
        device = next((d for d in config.devices if d.id == args.device), None)
        if not isinstance(device, OpcUaDevice):
            print(f"no OPC UA device '{args.device}' in {args.config}", file=sys.stderr)
            return EX_USAGE
        endpoint, security = endpoint or device.endpoint, device.security
        username = username or device.username
        password = device.password.get_secret_value() if device.password else None
    if not endpoint:
        print("give an endpoint (opc.tcp://host:port/...) or --device ID", file=sys.stderr)
        return EX_USAGE
    if args.password_env:
        password = os.environ.get(args.password_env)
        if password is None:
            print(f"environment variable {args.password_env} is not set", file=sys.stderr)
            return EX_USAGE
    overrides = {key: value for key, value in (
        ("mode", args.security_mode), ("policy", args.policy),
        ("certificate", args.certificate), ("private_key", args.private_key),
        ("trusted_servers", args.trusted_servers),
        ("trust_on_first_use", args.trust_on_first_use or None)) if value is not None}
    try:
        security = OpcUaSecurity.model_validate(security.model_dump() | overrides)
    except ValueError as exc:
        print(f"security options: {exc}", file=sys.stderr)
        return EX_USAGE
    from .errors import DriverError

    async def go() -> int:
        from drivers.opcua.browse import browse
        from drivers.opcua.session import open_session

        client = await open_session(endpoint, security, username, password, args.timeout)
        try:
            printed = await browse(client, print, args.path, args.namespace, args.depth)
        finally:
            await client.disconnect()
        return EX_OK if printed or args.path else 1

    try:
        return asyncio.run(go())
    except (DriverError, LookupError) as exc:
        print(str(exc), file=sys.stderr)
        return 69  # EX_UNAVAILABLE
    except BrokenPipeError:  # piped into head: the reader has seen enough
        sys.stderr.close()
        return EX_OK


def _opcua_cert(args: argparse.Namespace) -> int:
    import socket

    from drivers.opcua.certs import (
        default_application_uri,
        describe,
        make_application_certificate,
    )

    cert_file, key_file = args.out / "floorlink.pem", args.out / "floorlink.key"
    existing = [str(f) for f in (cert_file, key_file) if f.exists()]
    if existing and not args.force:
        print(f"{', '.join(existing)} already exist; --force replaces them (servers that "
              "trust the old certificate must then be given the new one)", file=sys.stderr)
        return EX_CANTCREAT
    uri = args.uri or default_application_uri()
    host = args.host or socket.gethostname()
    try:
        cert = make_application_certificate(cert_file, key_file, uri, host, args.days)
    except OSError as exc:
        print(f"cannot write to {args.out}: {exc.strerror}", file=sys.stderr)
        return EX_CANTCREAT
    print(f"certificate {cert_file}\nprivate key {key_file} (mode 0600)\n"
          f"application URI {uri}\nsubject {describe(cert)}\n"
          f"valid until {cert.not_valid_after_utc:%Y-%m-%d}\n"
          "Next: put both under security: in the device's YAML, and add the certificate to "
          "the OPC UA server's trusted clients.")
    return EX_OK


def _odoo(args: argparse.Namespace) -> int:
    config = _quiet_tool(args)
    if config is None:
        return EX_CONFIG
    from .uplinks.odoo.check import check

    return asyncio.run(check(config, args.uplink))


def _buffer(args: argparse.Namespace) -> int:
    # Technicians of the floorlink group run this without the service's credentials.
    config = _quiet_tool(args, secrets_required=False)
    if config is None:
        return EX_CONFIG
    from .control.command import run

    return run(args, config)


def _install_service(args: argparse.Namespace) -> int:
    from .install import execute

    return execute(args)


def _schema(args: argparse.Namespace) -> int:
    from .settings import config_json_schema

    print(json.dumps(config_json_schema(), indent=2))
    return EX_OK


def _run(args: argparse.Namespace) -> int:
    _setup_logging(args.log_level, args.log_format)
    try:
        config = _load(args.config)
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return EX_CONFIG
    from .app import Agent

    on_event = None
    if args.watch:
        from .eventline import print_event

        on_event = print_event
    agent = Agent(config, config_path=args.config, on_event=on_event)
    return _serve(agent.run(), graceful=agent.request_stop, reload=agent.request_reload)


def _init(args: argparse.Namespace) -> int:
    from .starter import starter_text, write_starter

    protocol, target = ("modbus", args.modbus) if args.modbus else ("opcua", args.opcua)
    try:
        write_starter(args.output, starter_text(protocol, target, args.unit), args.force)
    except ValueError as exc:
        print(f"floorlink init: {exc}", file=sys.stderr)
        return EX_USAGE
    except FileExistsError:
        print(f"floorlink init: {args.output} exists; edit it, or pass --force to replace it",
              file=sys.stderr)
        return EX_CANTCREAT
    except OSError as exc:
        print(f"floorlink init: cannot write {args.output}: {exc.strerror}", file=sys.stderr)
        return EX_CANTCREAT
    shown = f"-c {args.output}"
    print(f"wrote {args.output}: one {protocol} PLC and one asset, annotated. Next:\n"
          f"  edit it: tags, the state codes in state.map, the fault texts\n"
          f"  floorlink check-config {shown}\n"
          f"  floorlink probe {shown} plc\n"
          f"  floorlink run {shown} --watch")
    return EX_OK


def _serve(main_coroutine: Coroutine[Any, Any, None],
           graceful: Callable[[], None] | None = None,
           reload: Callable[[], None] | None = None) -> int:
    """Run until SIGTERM/SIGINT. The first signal asks for a graceful stop where there is
    one; a second one (or the only one, without) cancels everything and unwinds."""

    async def supervised() -> None:
        task = asyncio.ensure_future(main_coroutine)
        loop = asyncio.get_running_loop()
        asked = False

        def on_signal() -> None:
            nonlocal asked
            if graceful is not None and not asked:
                asked = True
                graceful()
            else:
                task.cancel()

        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, on_signal)
        if reload is not None:
            loop.add_signal_handler(signal.SIGHUP, reload)
        try:
            await task
        except asyncio.CancelledError:
            logging.getLogger("floorlink").info("stopped")

    try:
        asyncio.run(supervised())
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return EX_CONFIG
    except BufferError as exc:
        logging.getLogger("floorlink").error("%s", exc)
        return EX_CANTCREAT
    except OSError as exc:
        logging.getLogger("floorlink").error("cannot start: %s", exc)
        return EX_SOFTWARE
    except BaseExceptionGroup as group:  # a task of the TaskGroup failed
        for leaf in _leaves(group):
            logging.getLogger("floorlink").error("stopped by an error: %r", leaf,
                                                 exc_info=leaf)
        return EX_SOFTWARE
    return EX_OK


def _leaves(group: BaseExceptionGroup[Any]) -> list[BaseException]:
    found: list[BaseException] = []
    for exc in group.exceptions:
        found.extend(_leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc])
    return found


def _demo(args: argparse.Namespace) -> int:
    _setup_logging("warning" if args.log_level == "info" else args.log_level)
    # The demo reports the broker's state on its own lines; the log would say it twice.
    logging.getLogger("floorlink.mqtt").setLevel(logging.ERROR)
    from .demo import DemoPorts, run_demo

    ports = DemoPorts(args.opcua_port, args.modbus_port, args.mqtt_port, args.status_port)
    return _serve(run_demo(seed=args.seed, state_dir=args.state_dir, ports=ports))


def _simulate(args: argparse.Namespace) -> int:
    _setup_logging(args.log_level)
    from .simulator.servers import run_line

    return _serve(run_line(seed=args.seed, opcua_port=args.opcua_port,
                           modbus_port=args.modbus_port, truth=args.truth,
                           duration=args.duration, wait_for_signal=args.wait_for_signal))


if __name__ == "__main__":
    sys.exit(main())
