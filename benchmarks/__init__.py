"""Benchmarks of DEQ score models: memory, time and accuracy of variants run side by side.

`python -m benchmarks.run --suite=NAME [--device=cpu|cuda] [--quick]`; see benchmarks/README.md.
"""
