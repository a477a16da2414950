"""Benchmarks behind `voiced bench`."""
