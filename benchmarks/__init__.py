"""Benchmarks for the semops pipeline: `make bench` (python -m benchmarks.run).

Measurements, not tests: each benchmark records its figures and says whether its target is met.
Results go to benchmarks/results.md (readable) and benchmarks/results.json (raw figures).
"""
