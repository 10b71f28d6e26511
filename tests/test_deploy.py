"""Installing floorlink as a service, into a temporary root that stands in for a fresh
Debian box: user, venv, config, state, unit; then systemd's own checks of the unit as
installed, an upgrade that keeps what the plant wrote, and the uninstall."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, floorlink_command

from buffer import Outbox

ROOT_ONLY = pytest.mark.skipif(os.geteuid() != 0, reason="ownership needs root (CI runs as root)")
MAX_EXPOSURE = 2.5
ARTIFACTS = Path(os.environ.get("FLOORLINK_TEST_ARTIFACTS", REPO / "test-artifacts"))


def fresh_root(tmp_path: Path) -> Path:
    """What a fresh Debian has that the installer and systemd-analyze rely on."""
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    for name in ("passwd", "group", "shadow", "gshadow"):
        (root / "etc" / name).touch()
    (root / "usr/lib/systemd").mkdir(parents=True)
    shutil.copytree("/usr/lib/systemd/system", root / "usr/lib/systemd/system", symlinks=True)
    (root / "bin").mkdir()
    shutil.copy2("/bin/kill", root / "bin/kill")  # ExecReload=
    return root


def install(root: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "agent.install", "--root", str(root),
                           "--source", str(REPO), *extra],
                          cwd=REPO, capture_output=True, text=True, timeout=600)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@ROOT_ONLY
def test_install_verify_upgrade_uninstall(tmp_path: Path) -> None:
    root = fresh_root(tmp_path)
    done = install(root)
    assert done.returncode == 0, done.stderr
    print(done.stdout)
    assert "curl -s http://127.0.0.1:8080/readyz" in done.stdout

    passwd = (root / "etc/passwd").read_text()
    user = re.search(r"^floorlink:x:(\d+):(\d+):[^:]*:/var/lib/floorlink:/usr/sbin/nologin$",
                     passwd, re.MULTILINE)
    assert user, passwd
    uid, gid = int(user.group(1)), int(user.group(2))
    assert uid < 1000  # a system user

    etc, state = root / "etc/floorlink", root / "var/lib/floorlink"
    config = etc / "config.yaml"
    assert config.read_text() == (REPO / "config/example.yaml").read_text()
    assert (config.stat().st_uid, config.stat().st_gid, mode(config)) == (0, gid, 0o640)
    assert (etc.stat().st_gid, mode(etc)) == (gid, 0o750)
    assert (mode(etc / "credentials"), (etc / "credentials").stat().st_uid) == (0o700, 0)
    assert re.fullmatch(r"technician:\S{20,}\n", (etc / "credentials/status-users").read_text())
    assert (state.stat().st_uid, state.stat().st_gid, mode(state)) == (uid, gid, 0o750)

    unit = root / "etc/systemd/system/floorlink.service"
    assert unit.read_text() == (REPO / "systemd/floorlink.service").read_text()
    enabled = root / "etc/systemd/system/multi-user.target.wants/floorlink.service"
    assert enabled.is_symlink()

    floorlink = root / "opt/floorlink/.venv/bin/floorlink"
    checked = subprocess.run([str(floorlink), "check-config", "-c", str(config)],
                             capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert (checked.returncode, checked.stdout) == (0, "ok\n"), checked.stderr
    # Not the checkout: a copy that survives the checkout's removal.
    located = subprocess.run([str(root / "opt/floorlink/.venv/bin/python"), "-c",
                              "import agent; print(agent.__file__)"],
                             capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert str(root / "opt/floorlink/.venv") in located.stdout

    # systemd's own checks, on the unit as installed.
    verify = subprocess.run(["systemd-analyze", "verify", "--man=no", f"--root={root}",
                             str(unit)], capture_output=True, text=True, timeout=60)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert "floorlink.service" not in verify.stderr, verify.stderr
    security = subprocess.run(["systemd-analyze", "security", "--offline=true",
                               f"--root={root}", "floorlink.service"],
                              capture_output=True, text=True, timeout=60)
    exposure = re.search(r"Overall exposure level for floorlink\.service: ([\d.]+)",
                         security.stdout)
    assert exposure, security.stdout + security.stderr
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / "systemd-security.txt").write_text(security.stdout)
    print(f"systemd-analyze security: exposure {exposure.group(1)} (at most {MAX_EXPOSURE})")
    assert float(exposure.group(1)) <= MAX_EXPOSURE

    # Upgrade: run it again. What the plant wrote stays; the program is refreshed.
    config.write_text(config.read_text() + "# edited by the plant\n")
    login = (etc / "credentials/status-users").read_text()
    (state / "buffer.db").write_bytes(b"stand-in for the buffer")
    again = install(root)
    assert again.returncode == 0, again.stderr
    assert config.read_text().endswith("# edited by the plant\n")
    assert (etc / "credentials/status-users").read_text() == login
    assert passwd == (root / "etc/passwd").read_text()  # no second user
    assert "keeping" in again.stdout

    # Uninstall keeps configuration and buffer; --purge removes them too.
    removed = install(root, "--uninstall")
    assert removed.returncode == 0, removed.stderr
    assert not unit.exists()
    assert not enabled.exists()
    assert not (root / "opt/floorlink").exists()
    assert config.exists()
    assert (state / "buffer.db").exists()
    purged = install(root, "--uninstall", "--purge")
    assert purged.returncode == 0, purged.stderr
    assert not etc.exists()
    assert not state.exists()


def test_install_refuses_a_folder_that_is_not_a_checkout(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "agent.install", "--root", str(tmp_path),
                           "--source", str(tmp_path)], cwd=REPO, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 1
    assert "is not a floorlink checkout" in done.stderr
    assert "--source" in done.stderr


def test_the_service_installs_the_dependencies_the_tests_ran_with() -> None:
    def pins(name: str) -> dict[str, str]:
        text = (REPO / name).read_text()
        return dict(re.findall(r"^([a-z0-9_.-]+)==(\S+)", text, re.MULTILINE))

    runtime, tested = pins("requirements-runtime.lock"), pins("requirements.lock")
    assert runtime
    assert {name: version for name, version in runtime.items()
            if tested.get(name) != version} == {}


def test_unit_has_what_a_plant_box_needs() -> None:
    unit = (REPO / "systemd/floorlink.service").read_text()
    for line in ("Type=notify", "RestartPreventExitStatus=78", "Restart=on-failure",
                 "User=floorlink", "SupplementaryGroups=dialout", "StateDirectory=floorlink",
                 "ConfigurationDirectory=floorlink", "LoadCredential=floorlink:",
                 "ProtectSystem=strict", "ProtectHome=yes", "PrivateTmp=yes",
                 "NoNewPrivileges=yes", "SystemCallFilter=@system-service",
                 "CapabilityBoundingSet=\n", "MemoryMax=", "ExecReload=/bin/kill -HUP $MAINPID"):
        assert line in unit, line
    watchdog = re.search(r"^WatchdogSec=(\d+)$", unit, re.MULTILINE)
    assert watchdog
    assert int(watchdog.group(1)) >= 10
    # The stop budget systemd allows covers floorlink's own (<10 s).
    stop = re.search(r"^TimeoutStopSec=(\d+)$", unit, re.MULTILINE)
    assert stop
    assert int(stop.group(1)) > 10


def test_technicians_use_the_buffer_commands_without_the_service_credentials(
        tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(f"""
site: plant
devices:
  - {{id: plc, protocol: modbus_tcp, host: 127.0.0.1, port: 5020,
     tags: [{{name: state, register: 40001}}]}}
buffer: {{path: {tmp_path / 'buffer.db'}}}
uplinks:
  - {{id: broker, type: mqtt, host: 127.0.0.1, username: fl,
     password: "${{cred:floorlink_mqtt-password}}"}}
""")
    outbox = asyncio.run(Outbox.open(tmp_path / "buffer.db", ["broker"]))
    asyncio.run(outbox.close())
    env = {k: v for k, v in os.environ.items() if k != "CREDENTIALS_DIRECTORY"}
    stats = subprocess.run(floorlink_command("buffer", "stats", "-c", str(config)), cwd=REPO,
                           env=env, capture_output=True, text=True, timeout=60)
    assert stats.returncode == 0, stats.stderr
    assert "broker" in stats.stdout
    check = subprocess.run(floorlink_command("check-config", "-c", str(config)), cwd=REPO,
                           env=env, capture_output=True, text=True, timeout=60)
    assert check.returncode == 78
    assert "CREDENTIALS_DIRECTORY" in check.stderr
