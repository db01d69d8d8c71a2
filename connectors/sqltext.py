"""Quoting for generated Flink SQL: identifiers in backticks, options as escaped literals."""

from __future__ import annotations


def ident(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


def literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def with_options(options: dict[str, str]) -> str:
    body = ",\n  ".join(f"{literal(k)} = {literal(v)}" for k, v in options.items())
    return f"WITH (\n  {body}\n)"


SECRET_KEYS = ("password", "sasl.jaas.config", "secret", "token")


def masked(sql: str) -> str:
    """The SQL with every secret option value replaced, for display and logs."""
    out = []
    for line in sql.splitlines():
        key = line.strip().split("=", 1)[0].lower()
        if "=" in line and any(s in key for s in SECRET_KEYS):
            line = line.split("=", 1)[0] + "= '******'" + ("," if line.rstrip().endswith(",") else "")
        out.append(line)
    return "\n".join(out)
