"""Errors a user can cause: one line that says what, where and how to fix it."""

from __future__ import annotations


class HeadraceError(Exception):
    """An error with a one-line, user-facing explanation.

    ``where`` is ``file:line`` (or a service address), ``hint`` tells how to fix it.
    The CLI prints ``str(error)`` and exits non-zero; tracebacks only with ``--verbose``.

    >>> str(HeadraceError("unknown key 'windw'", where="jobs/a.yaml:14", hint="did you mean 'window'?"))
    "jobs/a.yaml:14: unknown key 'windw'; did you mean 'window'?"
    """

    def __init__(self, message: str, *, where: str | None = None, hint: str | None = None) -> None:
        self.message = message
        self.where = where
        self.hint = hint
        super().__init__(self.line())

    def line(self) -> str:
        """The error as one line: what, where, how to fix (a line break in a value quoted shows as \\n)."""
        text = f"{self.where}: {self.message}" if self.where else self.message
        text = f"{text}; {self.hint}" if self.hint else text
        return text.replace("\r", "\\r").replace("\n", "\\n")


class SpecError(HeadraceError):
    """A job spec or profile that does not hold together."""


class ServiceError(HeadraceError):
    """A broker, database or cluster that cannot be reached or refuses us."""


class JarError(HeadraceError):
    """A connector jar that is missing or does not match its pinned checksum."""


class SchemaFileError(ValueError):
    """A schema file (of any format) that cannot be read or is not a valid schema; the planner
    reports it at the spec's line that names the file."""
