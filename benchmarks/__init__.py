"""Benchmarks: the evaluation suite and the performance suite (see benchmarks/README.md)."""
