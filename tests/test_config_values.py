"""Values that cannot work are refused with what to write instead.

Measured before: `type: float` got no suggestion; `bit:` on a uint16 was accepted;
`poll_interval: 0.000000001` and `timeout: .inf` were accepted; an environment override
that was wrong was blamed on the file's line; and MQTT topics that lose every event
(`$SYS/...`: acknowledged, never delivered), dead-letter every event (empty) or make the
broker drop the connection every second (NUL) went through.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.errors import ConfigError
from agent.settings import load_config_text

BASE = """
site: plant
devices:
  - id: plc
    protocol: modbus_tcp
    host: 127.0.0.1
    poll_interval: {poll}
    timeout: {timeout}
    tags:
      - {{name: state, register: 40001, type: {type}{bit}}}
buffer: {{commit_interval: 10ms}}
uplinks:
  - {{id: broker, type: mqtt, topic: {topic}}}
"""
GOOD = {"poll": "1s", "timeout": "2s", "type": "uint16", "bit": "", "topic": "'a/{asset}'"}


def problems(tmp_path: Path, **changes: str) -> str:
    text = BASE.format(**{**GOOD, **changes})
    with pytest.raises(ConfigError) as refused:
        load_config_text(text, "config.yaml", tmp_path)
    return str(refused.value)


def test_the_base_configuration_loads(tmp_path: Path) -> None:
    load_config_text(BASE.format(**GOOD), "config.yaml", tmp_path)


@pytest.mark.parametrize(("change", "said"), [
    ({"type": "float"}, "unknown value 'float'. Did you mean 'float32'?"),
    ({"type": "unit16"}, "Did you mean 'uint16'?"),
    ({"type": "bool", "bit": ", bit: 16"}, "less than or equal to 15"),
    ({"bit": ", bit: 3"}, "'bit' picks one bit of a register for type 'bool', not for 'uint16'"),
    ({"poll": "0.000000001"}, "poll_interval = 1e-09\n    input should be greater than or "
                              "equal to 0.001"),
    ({"poll": "0.0005"}, "greater than or equal to 0.001"),
    ({"timeout": ".inf"}, "timeout = inf\n    a duration is at most a year"),
    ({"timeout": ".nan"}, "a duration is at most a year"),
    ({"timeout": "400d"}, "a duration is at most a year"),
    ({"topic": "''"}, "a topic cannot be empty"),
    ({"topic": '"a/\\0/b"'}, "cannot contain a NUL character"),
    ({"topic": "'$SYS/floorlink/{asset}'"}, "topics starting with '$' belong to the broker"),
    ({"topic": "'" + "t" * 65_536 + "'"}, "a topic is at most 65,535 bytes"),
])
def test_values_that_cannot_work_are_refused_with_the_fix(
        tmp_path: Path, change: dict[str, str], said: str) -> None:
    assert said in problems(tmp_path, **change)


def test_protocol_typos_get_a_suggestion(tmp_path: Path) -> None:
    text = BASE.format(**GOOD).replace("protocol: modbus_tcp", "protocol: modbus")
    with pytest.raises(ConfigError) as refused:
        load_config_text(text, "config.yaml", tmp_path)
    assert "unsupported protocol 'modbus'. Did you mean 'modbus_tcp'?" in str(refused.value)


def test_a_wrong_environment_override_names_the_variable_not_the_line(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """buffer.commit_interval is in the file (a good value); the variable overrides it."""
    monkeypatch.setenv("FLOORLINK_BUFFER__COMMIT_INTERVAL", "fast")
    shown = problems(tmp_path)
    assert "environment FLOORLINK_BUFFER__COMMIT_INTERVAL: buffer.commit_interval = 'fast'" \
        in shown
    assert "config.yaml:" not in shown
