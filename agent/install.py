"""`floorlink install-service`: install floorlink as a hardened systemd service.

Runs on a fresh Debian, Ubuntu or Raspberry Pi OS box with nothing but python3
(so: standard library only), from a checkout:  sudo ./scripts/install-service
It is also how an upgrade is done (run it again: the venv is refreshed, the unit
replaced, config and buffer kept; the buffer migrates its schema at the next start)
and how floorlink is removed (--uninstall, --purge).

    user and group  floorlink (system user; technicians join the group)
    program         /opt/floorlink/.venv  (from requirements-runtime.lock, hashes checked)
    configuration   /etc/floorlink/config.yaml      root:floorlink 0640, never overwritten
    secrets         /etc/floorlink/credentials/     root only, loaded by LoadCredential=
    state           /var/lib/floorlink/             floorlink:floorlink 0750 (the buffer)
    unit            /etc/systemd/system/floorlink.service, enabled

`--root DIR` installs into DIR instead of / (for images and tests): no service
is started there, and systemctl works offline on DIR.
"""

from __future__ import annotations

import argparse
import os
import pwd
import secrets
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

USER = "floorlink"
SOURCE = Path(__file__).resolve().parents[1]  # the checkout this runs from
UNIT_NAME = "floorlink.service"
OPT, ETC, STATE = Path("opt/floorlink"), Path("etc/floorlink"), Path("var/lib/floorlink")
UNIT = Path("etc/systemd/system") / UNIT_NAME


class InstallError(Exception):
    pass


@dataclass
class Installer:
    root: Path
    source: Path
    enable: bool = True
    python: str = sys.executable
    quiet: bool = False

    @property
    def on_this_machine(self) -> bool:
        return self.root.resolve() == Path("/")

    def at(self, relative: Path) -> Path:
        return self.root / relative

    def say(self, message: str) -> None:
        if not self.quiet:
            print(message, flush=True)

    def run(self, *command: str) -> None:
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0:
            raise InstallError(f"{' '.join(command)} failed ({result.returncode}):\n"
                               f"{(result.stderr or result.stdout).strip()}")

    # ------------------------------------------------------------------ install
    def install(self) -> None:
        self._check()
        uid, gid = self._user()
        self._venv()
        self._configuration(gid)
        self._state(uid, gid)
        self._unit()
        self.say(self._next_steps())

    def _check(self) -> None:
        if self.on_this_machine and os.geteuid() != 0:
            raise InstallError("installing a service needs root: run it with sudo")
        for needed in ("requirements-runtime.lock", "pyproject.toml", "systemd/" + UNIT_NAME,
                       "config/example.yaml"):
            if not (self.source / needed).exists():
                raise InstallError(f"{self.source} is not a floorlink checkout ({needed} is "
                                   "missing); pass --source")
        too_old = "import sys; sys.exit(sys.version_info < (3, 11))"
        probe = subprocess.run([self.python, "-c", too_old], capture_output=True)
        if probe.returncode != 0:
            raise InstallError(f"floorlink needs Python 3.11 or newer; {self.python} is older "
                               "(pass --python)")

    def _user(self) -> tuple[int, int]:
        found = self._lookup_user()
        if found is None:
            command = ["useradd", "--system", "--user-group", "--home-dir", "/var/lib/floorlink",
                       "--no-create-home", "--shell", "/usr/sbin/nologin",
                       "--comment", "floorlink edge gateway"]
            if not self.on_this_machine:
                command += ["--prefix", str(self.root)]
            self.run(*command, USER)
            found = self._lookup_user()
            if found is None:
                raise InstallError("useradd reported success but the floorlink user is missing")
            self.say(f"created system user and group {USER}")
        else:
            self.say(f"user {USER} exists")
        return found

    def _lookup_user(self) -> tuple[int, int] | None:
        if self.on_this_machine:
            try:
                entry = pwd.getpwnam(USER)
            except KeyError:
                return None
            return entry.pw_uid, entry.pw_gid
        passwd = self.at(Path("etc/passwd"))
        if not passwd.exists():
            return None
        for line in passwd.read_text().splitlines():
            fields = line.split(":")
            if fields[0] == USER and len(fields) > 3:
                return int(fields[2]), int(fields[3])
        return None

    def _venv(self) -> None:
        venv = self.at(OPT / ".venv")
        if not (venv / "bin" / "python").exists():
            self.say(f"creating {venv}")
            self.run(self.python, "-m", "venv", str(venv))
        pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet",
               "--disable-pip-version-check"]
        self.say("installing floorlink and its locked dependencies (hashes checked)")
        self.run(*pip, "--require-hashes", "-r", str(self.source / "requirements-runtime.lock"))
        # A non-editable copy: the checkout may go away after the install.
        self.run(*pip, "--no-deps", "--no-build-isolation", "--force-reinstall", str(self.source))
        for name in ("README.md", "docs"):
            target = self.at(OPT / name)
            if (self.source / name).is_dir():
                shutil.copytree(self.source / name, target, dirs_exist_ok=True)
            elif (self.source / name).exists():
                shutil.copy2(self.source / name, target)

    def _configuration(self, gid: int) -> None:
        etc = self.at(ETC)
        etc.mkdir(parents=True, exist_ok=True)
        _own(etc, 0, gid, 0o750)
        config = etc / "config.yaml"
        if config.exists():
            self.say(f"keeping {config}")
        else:
            shutil.copy2(self.source / "config" / "example.yaml", config)
            self.say(f"wrote {config} from the example: edit it for your PLCs")
        _own(config, 0, gid, 0o640)
        credentials = etc / "credentials"
        credentials.mkdir(exist_ok=True)
        _own(credentials, 0, 0, 0o700)
        users = credentials / "status-users"
        if not users.exists():
            # Ready for when the status page is opened to the plant network.
            users.write_text(f"technician:{secrets.token_urlsafe(18)}\n")
            self.say(f"wrote a status page login to {users}")
        _own(users, 0, 0, 0o600)

    def _state(self, uid: int, gid: int) -> None:
        state = self.at(STATE)
        state.mkdir(parents=True, exist_ok=True)
        _own(state, uid, gid, 0o750)

    def _unit(self) -> None:
        unit = self.at(UNIT)
        unit.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(self.source / "systemd" / UNIT_NAME, unit)
        unit.chmod(0o644)
        self.say(f"installed {unit}")
        if not self.enable:
            return
        systemctl = shutil.which("systemctl")
        if self.on_this_machine:
            if systemctl is None:
                raise InstallError("systemctl not found: is this a systemd system?")
            self.run(systemctl, "daemon-reload")
            self.run(systemctl, "enable", UNIT_NAME)
        elif systemctl is not None:
            self.run(systemctl, f"--root={self.root}", "enable", UNIT_NAME)
        else:  # what `systemctl enable` does for WantedBy=multi-user.target
            wants = self.at(Path("etc/systemd/system/multi-user.target.wants"))
            wants.mkdir(parents=True, exist_ok=True)
            link = wants / UNIT_NAME
            link.unlink(missing_ok=True)
            link.symlink_to(Path("/") / UNIT)
        self.say("enabled floorlink.service (starts at boot)")

    def _next_steps(self) -> str:
        return f"""
floorlink is installed.
  1. Edit /etc/floorlink/config.yaml for your PLCs, assets and uplinks, then check it:
       sudo -u {USER} /opt/floorlink/.venv/bin/floorlink check-config
  2. Start it:                 sudo systemctl start floorlink
  3. Check the status page:    curl -s http://127.0.0.1:8080/readyz
                               open http://127.0.0.1:8080/ (or ssh -L 8080:127.0.0.1:8080 this box)
     Its log:                  journalctl -u floorlink -f
     Metrics for Prometheus:   http://127.0.0.1:8080/metrics
  4. Let technicians use the CLI and read the state: sudo usermod -aG {USER} <their login>
Secrets go in /etc/floorlink/credentials/<name> (root only) and into the YAML as
${{cred:floorlink_<name>}}. Apply device or uplink changes with: sudo systemctl reload floorlink
"""

    # ---------------------------------------------------------------- uninstall
    def uninstall(self, purge: bool) -> None:
        if self.on_this_machine and os.geteuid() != 0:
            raise InstallError("removing a service needs root: run it with sudo")
        systemctl = shutil.which("systemctl")
        if self.on_this_machine and systemctl is not None:
            subprocess.run([systemctl, "disable", "--now", UNIT_NAME], capture_output=True)
        elif systemctl is not None:
            subprocess.run([systemctl, f"--root={self.root}", "disable", UNIT_NAME],
                           capture_output=True)
        self.at(Path("etc/systemd/system/multi-user.target.wants") / UNIT_NAME).unlink(
            missing_ok=True)
        self.at(UNIT).unlink(missing_ok=True)
        if self.on_this_machine and systemctl is not None:
            subprocess.run([systemctl, "daemon-reload"], capture_output=True)
        shutil.rmtree(self.at(OPT), ignore_errors=True)
        self.say("removed the unit and /opt/floorlink")
        if purge:
            shutil.rmtree(self.at(ETC), ignore_errors=True)
            shutil.rmtree(self.at(STATE), ignore_errors=True)
            self.say("purged /etc/floorlink and /var/lib/floorlink (the buffer is gone)")
        else:
            self.say("kept /etc/floorlink (configuration) and /var/lib/floorlink (the buffer, "
                     "with any undelivered events); --purge removes them")


def _own(path: Path, uid: int, gid: int, mode: int) -> None:
    path.chmod(mode)
    if os.geteuid() == 0:
        os.chown(path, uid, gid)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--root", type=Path, default=Path("/"),
                        help="install into this directory instead of / (images, tests)")
    parser.add_argument("--source", type=Path, default=SOURCE,
                        help=f"the floorlink checkout to install (default {SOURCE})")
    parser.add_argument("--no-enable", action="store_true", help="install, but do not enable")
    parser.add_argument("--python", default=sys.executable,
                        help="the Python 3.11+ that makes the venv (default: this one)")
    parser.add_argument("--uninstall", action="store_true",
                        help="remove the unit and /opt/floorlink; keep config and buffer")
    parser.add_argument("--purge", action="store_true",
                        help="with --uninstall: also remove /etc/floorlink and the buffer")


def execute(args: argparse.Namespace) -> int:
    installer = Installer(root=args.root, source=args.source.resolve(),
                          enable=not args.no_enable, python=args.python)
    try:
        if args.uninstall:
            installer.uninstall(args.purge)
        else:
            installer.install()
    except InstallError as exc:
        print(f"install-service: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"install-service: {exc}", file=sys.stderr)
        return 73  # EX_CANTCREAT
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="install-service", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    return execute(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
