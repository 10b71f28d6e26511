"""floorlink benchmarks: each measures floorlink against its raw baseline in the same run."""
