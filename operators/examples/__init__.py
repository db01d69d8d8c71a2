"""Examples of user-defined aggregates (``udaf(...)`` measures), the ones the README shows."""
