"""Reusable Headrace operators: validate, windowed aggregate and their measures.

Each operator is plain Python logic (unit-testable without a JVM) plus the piece of
Flink SQL or the UDF the compiler wires into the job.
"""
