"""Benchmarks: time and memory of the mixers, numerical precision, training throughput, result tables."""
