"""How long `floorlink check-config` takes, and how much memory, as a configuration grows.

Each figure is a separate `check-config` process on a generated file with N Modbus tags
(25 devices, with one asset per device); peak RSS comes from the kernel (ru_maxrss of the
child). The raw baseline, in the same run and in alternating rounds, is a process that
only reads the same file with PyYAML's libyaml loader (CSafeLoader, the one floorlink
uses): the ratio is what locating every value, resolving secrets, validating and
cross-checking add to reading the YAML. The supported scale
(`agent.settings.loader.SUPPORTED_TAGS`) must load well inside the unit's MemoryMax=512M.

    python -m bench.config_scale [--tags 1000 5000 20000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DEVICES = 25
RAW = "import sys, yaml; yaml.load(open(sys.argv[1], encoding='utf-8'), Loader=yaml.CSafeLoader)"


def write_config(path: Path, tags: int) -> None:
    per_device = max(1, tags // DEVICES)
    lines = ["site: bench", "agent: {id: scale}", "devices:"]
    for d in range(DEVICES):
        lines += [f"  - id: plc{d}", "    protocol: modbus_tcp", "    host: 127.0.0.1",
                  f"    port: {5020 + d}", "    tags:"]
        lines += [f"      - {{name: t{n}, register: {40001 + n % 9000}, type: uint16}}"
                  for n in range(per_device)]
    lines.append("assets:")
    lines += [f"  - {{id: asset{d}, state: {{tag: plc{d}.t0, map: {{1: running}}}}}}"
              for d in range(DEVICES)]
    path.write_text("\n".join(lines) + "\n")


def _measure(command: list[str]) -> tuple[float, float]:
    """Seconds and peak RSS (MB) of one child process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    started = time.perf_counter()
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        raise RuntimeError(f"{command[-1]}: exit {result.returncode}: {result.stderr[-500:]}")
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    # ru_maxrss of children is the largest child so far: only a new maximum is this child's.
    return elapsed, max(peak, before) / 1024


def measure(tags: int, rounds: int) -> list[dict[str, Any]]:
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "config.yaml"
        write_config(config, tags)
        ours = [sys.executable, "-m", "agent", "check-config", "-c", str(config)]
        raw = [sys.executable, "-c", RAW, str(config)]
        times: dict[str, list[float]] = {"floorlink": [], "raw": []}
        peaks: dict[str, float] = {"floorlink": 0.0, "raw": 0.0}
        for _ in range(rounds):  # alternating, so drift hits both alike
            for name, command in (("raw", raw), ("floorlink", ours)):
                seconds, _ = _measure(command)
                times[name].append(seconds)
        # Peak memory: one child each through a fresh interpreter that reports its own.
        for name, command in (("raw", raw), ("floorlink", ours)):
            peaks[name] = _peak_mb(command)
        size_mb = config.stat().st_size / 1e6
    best = {name: min(values) for name, values in times.items()}
    return [
        {"figure": f"check-config {tags:,} tags ({size_mb:.1f} MB): s",
         "floorlink": best["floorlink"], "ceiling": best["raw"],
         "ratio": best["floorlink"] / best["raw"], "note": "best of rounds; lower is better"},
        {"figure": f"check-config {tags:,} tags: peak MB",
         "floorlink": peaks["floorlink"], "ceiling": peaks["raw"],
         "ratio": peaks["floorlink"] / peaks["raw"], "note": "ru_maxrss"},
    ]


def _peak_mb(command: list[str]) -> float:
    wrapper = ("import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True, "
               "capture_output=True); "
               "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
    result = subprocess.run([sys.executable, "-c", wrapper, *command], cwd=REPO,
                            capture_output=True, text=True, timeout=600, check=True)
    return int(result.stdout.strip()) / 1024


async def run(seconds: float, tag_counts: tuple[int, ...] = (1000, 20_000),
              rounds: int = 2) -> list[dict[str, Any]]:
    """For `python -m bench`: `seconds` is not used, the files are what they are."""
    rows: list[dict[str, Any]] = []
    for tags in tag_counts:
        rows.extend(await asyncio.to_thread(measure, tags, rounds))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.config_scale")
    parser.add_argument("--tags", type=int, nargs="+", default=[1000, 5000, 20_000, 100_000])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    print(f"{'figure':<44} {'floorlink':>10} {'raw yaml':>10} {'ratio':>7}")
    for tags in args.tags:
        for row in measure(tags, args.rounds):
            print(f"{row['figure']:<44} {row['floorlink']:>10.2f} {row['ceiling']:>10.2f} "
                  f"{row['ratio']:>7.2f}")


if __name__ == "__main__":
    main()
