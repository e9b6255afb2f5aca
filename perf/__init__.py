"""Benchmarks for c2c_hf (run outside CI; results under docs/results/)."""
