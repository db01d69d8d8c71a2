"""Benchmark: the example job vs a hand-written Flink SQL job vs a hand-written PyFlink job."""
