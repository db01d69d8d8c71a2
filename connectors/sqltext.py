"""Quoting for generated Flink SQL: identifiers in backticks, options as escaped literals."""

from __future__ import annotations

import re


def ident(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


def literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def with_options(options: dict[str, str]) -> str:
    body = ",\n  ".join(f"{literal(k)} = {literal(v)}" for k, v in options.items())
    return f"WITH (\n  {body}\n)"


SECRET_KEYS = ("password", "sasl.jaas.config", "secret", "token", "keystore.key", "key.pem", "oauthbearer.config")
#: an option: a quoted key, '=', a quoted value (either may span lines; '' is a quote inside)
_OPTION = re.compile(r"'((?:[^']|'')*)'(\s*=\s*)'((?:[^']|'')*)'")


def masked(sql: str) -> str:
    r"""The SQL with every secret option's value replaced, for display and logs. Literals are
    matched whole, so a value with a line break or a quote is masked entirely.

    >>> masked("WITH ('url' = 'x', 'password' = 'a\nb''c')")
    "WITH ('url' = 'x', 'password' = '******')"
    """
    def mask(match: re.Match[str]) -> str:
        key = match.group(1).lower()
        if any(s in key for s in SECRET_KEYS):
            return f"'{match.group(1)}'{match.group(2)}'******'"
        return match.group(0)

    return _OPTION.sub(mask, sql)
