"""The base layer, which every other layer may import and which imports none of them.

Record schemas (loading, field types for the planner; the schema files live here too,
``*.schema.json``), the shape of a materialized view (``views``), errors a user can cause
(``errors``) and durations as users write them (``durations``).

Layers, top to bottom (imports only point down; ``tests/unit/test_layers.py`` checks it)::

    headrace.jobs                         the CLI, spec, planner, compiler, runner, cluster
    headrace.operators, headrace.connectors   step kinds; sources, sinks and stores
    headrace.schemas                      this layer
"""
