"""Golden configuration cases: tests/cases/<name>/config.yaml with load.err or expected.out.

Each bad case must be refused with exit code 78 (EX_CONFIG) and exactly the
expected message: file and line, field path, the value (secrets masked), and
what is expected instead.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

CASES = sorted(p for p in (Path(__file__).parent / "cases").iterdir()
               if p.is_dir() and not (p / "samples.jsonl").exists())  # those are derive cases


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_check_config(case: Path, monkeypatch: pytest.MonkeyPatch,
                      capsys: pytest.CaptureFixture[str]) -> None:
    from agent.cli import main

    monkeypatch.chdir(case)
    monkeypatch.delenv("FLOORLINK_TEST_SURELY_UNSET", raising=False)
    code = main(["check-config", "-c", "config.yaml"])
    out, err = capsys.readouterr()
    if (case / "load.err").exists():
        assert code == 78
        assert err == (case / "load.err").read_text()
        assert "hunter2" not in err  # a secret in clear is never echoed
    else:
        assert code == 0, err
        assert out == (case / "expected.out").read_text()


def test_there_are_enough_bad_cases() -> None:
    assert sum((c / "load.err").exists() for c in CASES) >= 8


def test_default_config_path_comes_from_the_environment(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    from agent.cli import main

    monkeypatch.setenv("FLOORLINK_CONFIG", str(tmp_path / "nowhere.yaml"))
    assert main(["check-config"]) == 78
    assert f"{tmp_path / 'nowhere.yaml'}: (top level)\n    cannot read the file" in \
        capsys.readouterr().err


def test_environment_overrides_the_file(monkeypatch: pytest.MonkeyPatch) -> None:
    from agent.settings import load_config

    monkeypatch.setenv("FLOORLINK_STATUS__PORT", "9191")
    config = load_config(CASES[[c.name for c in CASES].index("valid_minimal")] / "config.yaml")
    assert config.status.port == 9191


def test_secret_from_file_is_resolved_and_never_echoed(tmp_path: Path) -> None:
    from agent.errors import ConfigError
    from agent.settings import load_config

    (tmp_path / "broker.pw").write_text("s3cret-value\n")
    base = (CASES[[c.name for c in CASES].index("valid_minimal")] / "config.yaml").read_text()
    good = base + "uplinks:\n  - {id: b, type: mqtt, username: u, password: '${file:broker.pw}'}\n"
    (tmp_path / "config.yaml").write_text(good)
    config = load_config(tmp_path / "config.yaml")
    assert config.uplinks[0].password is not None
    assert config.uplinks[0].password.get_secret_value() == "s3cret-value"
    bad = good.replace("port: 8080", "") + "status: {port: '${file:broker.pw}'}\n"
    (tmp_path / "config.yaml").write_text(bad)
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path / "config.yaml")
    assert "s3cret" not in str(caught.value)
    assert "status.port = '***' (secret, masked)" in str(caught.value)


def test_run_refuses_a_bad_config_with_ex_config() -> None:
    case = CASES[[c.name for c in CASES].index("wrong_type")]
    result = subprocess.run([sys.executable, "-m", "agent", "run", "-c", "config.yaml"],
                            cwd=case, capture_output=True, text=True, timeout=60)
    assert result.returncode == 78
    assert "devices[0].port = 'five-oh-two'" in result.stderr


def test_published_config_schema_is_current() -> None:
    import json

    from agent.settings import config_json_schema

    published = Path(__file__).parent.parent / "config" / "floorlink.schema.json"
    assert json.loads(published.read_text()) == config_json_schema(), \
        "run scripts/generate-schemas"
