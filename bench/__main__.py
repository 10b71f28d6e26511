"""python -m bench [NAME ...]: run benchmarks, print one table, write bench/results.json."""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import platform
import time
from pathlib import Path

from .buffer_bench import run as buffer_bench
from .config_scale import run as config_scale
from .e2e import run as end_to_end
from .footprint import run as footprint
from .modbus_throughput import run as modbus_throughput
from .opcua_bench import run as opcua_bench
from .sparkplug_bench import run as sparkplug_bench

LIMIT_SECONDS = 1800  # a benchmark that takes longer is stuck, not slow

BENCHMARKS = {"modbus": modbus_throughput, "opcua": opcua_bench, "buffer": buffer_bench,
              "e2e": end_to_end, "footprint": footprint, "config": config_scale,
              "sparkplug": sparkplug_bench}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("names", nargs="*", metavar="NAME",
                        help=f"benchmarks to run (default: all): {', '.join(BENCHMARKS)}")
    parser.add_argument("--seconds", type=float, default=5.0, help="per measurement")
    parser.add_argument("--smoke", action="store_true",
                        help="a quick run that only proves the benchmarks still work (CI): "
                             "short measurements, a 20,000-event backlog; figures meaningless")
    args = parser.parse_args()
    if args.smoke:
        args.seconds = 0.5
        BENCHMARKS["buffer"] = functools.partial(buffer_bench, backlog=20_000)
        BENCHMARKS["config"] = functools.partial(config_scale, tag_counts=(1000,), rounds=1)
        BENCHMARKS["e2e"] = functools.partial(end_to_end, rounds=1)
        BENCHMARKS["sparkplug"] = functools.partial(sparkplug_bench, rounds=1)
    rows = []
    unknown = set(args.names) - set(BENCHMARKS)
    if unknown:
        parser.error(f"unknown benchmark {', '.join(sorted(unknown))}")
    failed = []
    for name in args.names or list(BENCHMARKS):
        try:
            rows.extend(asyncio.run(asyncio.wait_for(BENCHMARKS[name](args.seconds),
                                                     LIMIT_SECONDS)))
        except Exception as exc:  # one broken benchmark must not hide the others' figures
            failed.append(name)
            rows.append({"figure": f"{name}: FAILED", "floorlink": 0.0, "ceiling": 0.0,
                         "ratio": 0.0, "note": repr(exc)[:200]})
    print(f"{'figure':<44} {'floorlink':>14} {'raw ceiling':>14} {'ratio':>7}")
    for row in rows:
        print(f"{row['figure']:<44} {row['floorlink']:>14,.1f} {row['ceiling']:>14,.1f} "
              f"{row['ratio']:>7.2f}" + (f"   {row['note']}" if row.get("note") else ""))
    out = Path(__file__).parent / ("smoke.json" if args.smoke else "results.json")
    out.write_text(json.dumps({"when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                               "machine": platform.platform(), "rows": rows}, indent=2))
    print(f"\nwritten to {out}")
    if failed:
        raise SystemExit(f"benchmarks failed: {', '.join(failed)}")


if __name__ == "__main__":  # spawned server processes import this module too
    main()
