"""Benchmark scripts; each is runnable as `python -m benchmarks.<name>` from the repository root."""
