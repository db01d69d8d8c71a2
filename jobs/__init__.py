"""Headrace job layer: spec model, planner, compiler to Flink SQL, runner and CLI."""
