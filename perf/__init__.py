"""The performance runner of c2c_hf (`python -m perf.run`, `python -m perf.fuser_sizes`; run outside CI, results
under docs/results/perf/ and docs/results/train-step/)."""
