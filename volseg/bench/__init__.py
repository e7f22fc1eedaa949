"""Benchmarks users run on their own hardware: ``bench-memory`` (peak memory per patch size)."""

from volseg.bench.memory import bench_memory, parse_budget

__all__ = ["bench_memory", "parse_budget"]
