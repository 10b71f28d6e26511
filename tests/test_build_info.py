"""Which build runs: `floorlink --version` and the status page name the package and its
commit on an installed box (scripts/build-deb writes agent/build.json into the wheel; the
offline package check in scripts/check-deb reads them back), and say so from a checkout."""

from __future__ import annotations

import subprocess

from conftest import REPO, floorlink_command

from agent.build import Build
from agent.status.board import StatusBoard
from agent.status.page import render


def test_a_checkout_says_it_is_one() -> None:
    done = subprocess.run(floorlink_command("--version"), capture_output=True, text=True,
                          cwd=REPO, timeout=60)
    assert done.returncode == 0
    assert done.stdout.strip() == "floorlink 0.1.0 (from a source checkout)"


def test_a_package_names_its_version_and_commit() -> None:
    build = Build("0.1.0", "0.1.0-2", "73fe3eb3f0dc55f3bfa047570d0db8613fb698a2")
    assert build.describe() == (
        "floorlink 0.1.0-2 (commit 73fe3eb3f0dc55f3bfa047570d0db8613fb698a2)")


def test_the_status_page_header_shows_the_package_and_commit() -> None:
    snapshot = StatusBoard(site="plant", agent="edge-1").snapshot()
    snapshot["agent"].update(package="0.1.0-2", commit="73fe3eb3f0dc55f3bfa0")
    assert "floorlink 0.1.0-2 (73fe3eb3f0dc)" in render(snapshot)
    snapshot["agent"].update(package=None, commit=None)
    assert "floorlink 0.1.0 ·" in render(snapshot)
