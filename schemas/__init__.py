"""Schemas of the records Headrace reads: loading, field types for the planner.

The schema files themselves live in this folder too (``*.schema.json``).
"""
