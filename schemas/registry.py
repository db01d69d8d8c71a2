"""Headrace's schema registry: subjects with versions, schema ids and compatibility modes, in the
shape of the Confluent Schema Registry (``connectors/serving/registry_api.py`` serves it over
the same REST API, so Confluent's serializers and any registry client can use it).

The store is SQLite (one file; the embedded default) or, under a service profile, the profile's
PostgreSQL (tables ``hr_registry_*``, shared by every server of that environment). A schema is
stored once, under one id, however many subjects register it; a subject's versions count from 1.
Registering a schema the subject already has returns its id and version again. A new version must be compatible with the
subject's earlier ones in the subject's mode (or the global one, BACKWARD by default):

==================  ==========================================================================
BACKWARD            readers of the new version can read records written with the last one
BACKWARD_TRANSITIVE the same, for every earlier version
FORWARD             readers of the last version can read records written with the new one
FORWARD_TRANSITIVE  the same, for every earlier version
FULL                both, with the last version
FULL_TRANSITIVE     both, with every earlier version
NONE                no check
==================  ==========================================================================

Each format's rules are its kind's (``FormatKind.incompatibilities``: Avro's schema resolution in
``operators/avro.py``, JSON Schema's in ``jsonschema.py``, Protobuf's in ``operators/protobuf.py``);
the registry is given the format kinds and applies them by schema type. A subject keeps one
schema type: another type is refused unless the mode is NONE.

>>> from headrace.jobs.registry import FORMATS
>>> registry = SchemaRegistry(":memory:", formats=FORMATS)
>>> v1 = '{"type": "record", "name": "Click", "fields": [{"name": "page", "type": "string"}]}'
>>> registry.register("clicks-value", v1).id
1
>>> v2 = v1.replace(']}', ', {"name": "plan", "type": "string"}]}')
>>> try:
...     registry.register("clicks-value", v2)
... except Incompatible as refused:
...     print(refused)
clicks-value v2: field 'plan' added without a default — breaks BACKWARD (readers of v2 cannot read v1 records)
"""

from __future__ import annotations

import re
import sqlite3
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from headrace.schemas.kinds import FormatKind

MODES = ("BACKWARD", "BACKWARD_TRANSITIVE", "FORWARD", "FORWARD_TRANSITIVE", "FULL", "FULL_TRANSITIVE", "NONE")
DEFAULT_MODE = "BACKWARD"


class RegistryError(ValueError):
    """A request the registry refuses; ``code`` is the Confluent error code, ``status`` the HTTP one."""

    def __init__(self, message: str, code: int, status: int) -> None:
        super().__init__(message)
        self.code = code
        self.status = status


class Incompatible(RegistryError):
    def __init__(self, message: str) -> None:
        super().__init__(message, 409, 409)


#: a schema's reference to another subject's version: (name, subject, version) — for Avro the
#: full name of the named type it defines, for Protobuf the import path of its file
Reference = tuple[str, str, int]


@dataclass(frozen=True)
class Registered:
    subject: str
    version: int
    id: int
    schema: str
    schema_type: str
    references: tuple[Reference, ...] = ()


class _Sqlite:
    """The embedded store: one SQLite file (or ``:memory:``)."""

    def __init__(self, path: str | Path) -> None:
        self.db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self.db.executescript("""
            PRAGMA journal_mode = WAL;
            CREATE TABLE IF NOT EXISTS schemas (id INTEGER PRIMARY KEY, schema_type TEXT NOT NULL,
                                                schema TEXT NOT NULL, UNIQUE (schema_type, schema));
            CREATE TABLE IF NOT EXISTS versions (subject TEXT NOT NULL, version INTEGER NOT NULL,
                                                 schema_id INTEGER NOT NULL REFERENCES schemas (id),
                                                 PRIMARY KEY (subject, version));
            CREATE TABLE IF NOT EXISTS config (subject TEXT PRIMARY KEY, compatibility TEXT NOT NULL);
            CREATE TABLE IF NOT EXISTS schema_refs (schema_id INTEGER NOT NULL REFERENCES schemas (id),
                                                    position INTEGER NOT NULL, name TEXT NOT NULL,
                                                    subject TEXT NOT NULL, version INTEGER NOT NULL,
                                                    PRIMARY KEY (schema_id, position));
        """)

    def execute(self, sql: str, params: tuple[Any, ...] = ()) -> Any:
        return self.db.execute(sql, params)

    @contextmanager
    def writing(self) -> Iterator[None]:
        self.db.execute("BEGIN IMMEDIATE")  # one writer at a time, across processes too
        try:
            yield
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")


class _Postgres:
    """The store under a service profile: tables ``hr_registry_*`` in the profile's PostgreSQL,
    so that every ``headrace registry serve`` of an environment shares one registry. A write
    holds an advisory lock for its transaction (ids and versions are assigned one at a time);
    a connection that broke (the database restarted) is opened again on the next call."""

    LOCK = 7_260_012

    def __init__(self, conninfo: dict[str, Any]) -> None:
        self.conninfo = conninfo
        self.db = self._connect()
        for statement in (
                "CREATE TABLE IF NOT EXISTS hr_registry_schemas (id BIGSERIAL PRIMARY KEY, schema_type TEXT "
                "NOT NULL, schema TEXT NOT NULL, UNIQUE (schema_type, schema))",
                "CREATE TABLE IF NOT EXISTS hr_registry_versions (subject TEXT NOT NULL, version INTEGER NOT NULL, "
                "schema_id BIGINT NOT NULL REFERENCES hr_registry_schemas (id), PRIMARY KEY (subject, version))",
                "CREATE TABLE IF NOT EXISTS hr_registry_config (subject TEXT PRIMARY KEY, compatibility TEXT "
                "NOT NULL)",
                "CREATE TABLE IF NOT EXISTS hr_registry_schema_refs (schema_id BIGINT NOT NULL REFERENCES "
                "hr_registry_schemas (id), position INTEGER NOT NULL, name TEXT NOT NULL, subject TEXT NOT NULL, "
                "version INTEGER NOT NULL, PRIMARY KEY (schema_id, position))"):
            with self.db.transaction():
                self.db.execute("SELECT pg_advisory_xact_lock(%s)", (self.LOCK,))
                self.db.execute(statement)

    def _connect(self) -> Any:
        import psycopg

        return psycopg.connect(**{"connect_timeout": 5, **self.conninfo, "autocommit": True})

    @staticmethod
    def _sql(sql: str) -> str:
        for table in ("schemas", "versions", "config", "schema_refs"):
            sql = re.sub(rf"\b(FROM|JOIN|INTO|UPDATE) {table}\b", rf"\1 hr_registry_{table}", sql)
        return sql.replace("?", "%s")

    def execute(self, sql: str, params: tuple[Any, ...] = ()) -> Any:
        import psycopg

        try:
            try:
                return self.db.execute(self._sql(sql), params)
            except psycopg.OperationalError:
                if not self.db.closed and not self.db.broken:
                    raise
                self.db = self._connect()  # the database restarted: once more, on a new connection
                return self.db.execute(self._sql(sql), params)
        except psycopg.OperationalError as exc:
            raise self.down(exc) from None

    @staticmethod
    def down(exc: Exception) -> RegistryError:
        first = (str(exc).strip().splitlines() or ["no answer"])[0]
        return RegistryError(f"the registry's store (PostgreSQL) does not answer: {first}", 50001, 500)

    @contextmanager
    def writing(self) -> Iterator[None]:
        import psycopg

        try:
            if self.db.closed or self.db.broken:
                self.db = self._connect()
            transaction = self.db.transaction()
            transaction.__enter__()
            self.db.execute("SELECT pg_advisory_xact_lock(%s)", (self.LOCK,))
        except psycopg.OperationalError as exc:
            raise self.down(exc) from None
        try:
            yield
        except BaseException as exc:
            transaction.__exit__(type(exc), exc, exc.__traceback__)
            raise
        try:
            transaction.__exit__(None, None, None)
        except psycopg.OperationalError as exc:
            raise self.down(exc) from None


class SchemaRegistry:
    """The registry's state: in SQLite (``path``, or ``:memory:``), or in PostgreSQL (``postgres``:
    psycopg connection settings). Thread-safe."""

    def __init__(self, path: str | Path = ":memory:", postgres: dict[str, Any] | None = None,
                 formats: Mapping[str, FormatKind] | None = None) -> None:
        self._store: _Sqlite | _Postgres = _Postgres(postgres) if postgres is not None else _Sqlite(path)
        self._lock = threading.Lock()
        self.where = "PostgreSQL" if postgres is not None else str(path)
        #: the format kinds by schema type: what can be registered, and the rules it is checked by
        self.formats = {kind.schema_type: kind for kind in (formats or {}).values()}

    def format(self, schema_type: str) -> FormatKind:
        """The format kind of ``schema_type``, or a 422 naming the types this registry knows."""
        kind = self.formats.get(schema_type)
        if kind is None:
            raise RegistryError(f"unknown schema type {schema_type}; one of {', '.join(self.formats) or 'none'}",
                                42201, 422)
        return kind

    def canonical(self, schema: str, schema_type: str) -> str:
        """The stored form of ``schema`` (422 when it is not a schema of its type)."""
        try:
            return self.format(schema_type).canonical(schema)
        except ValueError as exc:
            raise RegistryError(f"invalid {schema_type} schema: {exc}", 42201, 422) from None

    @property
    def _db(self) -> Any:
        return self._store

    # -- reads --------------------------------------------------------------------------------

    def subjects(self) -> list[str]:
        return [r[0] for r in self._db.execute("SELECT DISTINCT subject FROM versions ORDER BY subject").fetchall()]

    def versions(self, subject: str) -> list[int]:
        found = [r[0] for r in self._db.execute(
            "SELECT version FROM versions WHERE subject = ? ORDER BY version", (subject,)).fetchall()]
        if not found:
            raise RegistryError(f"Subject '{subject}' not found.", 40401, 404)
        return found

    def version(self, subject: str, version: int | str) -> Registered:
        versions = self.versions(subject)
        number = versions[-1] if version in ("latest", -1) else int(version)
        row = self._db.execute(
            "SELECT v.version, s.id, s.schema, s.schema_type FROM versions v JOIN schemas s ON s.id = v.schema_id "
            "WHERE v.subject = ? AND v.version = ?", (subject, number)).fetchone()
        if row is None:
            raise RegistryError(f"Version {version} not found.", 40402, 404)
        return Registered(subject, row[0], row[1], row[2], row[3], self.references(row[1]))

    def references(self, schema_id: int) -> tuple[Reference, ...]:
        rows = self._db.execute("SELECT name, subject, version FROM schema_refs WHERE schema_id = ? "
                                "ORDER BY position", (schema_id,)).fetchall()
        return tuple((str(r[0]), str(r[1]), int(r[2])) for r in rows)

    def resolved(self, references: tuple[Reference, ...], seen: frozenset[Reference] = frozenset()
                 ) -> dict[str, str]:
        """``{name: schema text}`` of ``references`` and of theirs, transitively."""
        out: dict[str, str] = {}
        for ref in references:
            if ref in seen:
                continue
            found = self.version(ref[1], ref[2])
            out[ref[0]] = found.schema
            out.update(self.resolved(found.references, seen | {ref}))
        return out

    def history(self, subject: str) -> list[Registered]:
        """Every version of ``subject``, oldest first (empty for a subject not registered yet)."""
        rows = self._db.execute(
            "SELECT v.version, s.id, s.schema, s.schema_type FROM versions v JOIN schemas s ON s.id = v.schema_id "
            "WHERE v.subject = ? ORDER BY v.version", (subject,)).fetchall()
        return [Registered(subject, r[0], r[1], r[2], r[3], self.references(r[1])) for r in rows]

    def by_id(self, schema_id: int) -> tuple[str, str]:
        row = self._db.execute("SELECT schema, schema_type FROM schemas WHERE id = ?", (schema_id,)).fetchone()
        if row is None:
            raise RegistryError(f"Schema {schema_id} not found", 40403, 404)
        return row[0], row[1]

    def lookup(self, subject: str, schema: str, schema_type: str = "AVRO",
               references: tuple[Reference, ...] = ()) -> Registered:
        """The version of ``subject`` holding ``schema`` (with these ``references``)."""
        text = self.canonical(schema, schema_type)
        rows = self._db.execute(
            "SELECT v.version, s.id FROM versions v JOIN schemas s ON s.id = v.schema_id "
            "WHERE v.subject = ? AND s.schema = ? AND s.schema_type = ?", (subject, text, schema_type)).fetchall()
        for row in rows:
            if self.references(row[1]) == tuple(references):
                return Registered(subject, row[0], row[1], text, schema_type, tuple(references))
        self.versions(subject)  # 40401 when the subject does not exist
        raise RegistryError("Schema not found", 40403, 404)

    def compatibility(self, subject: str | None = None) -> str:
        row = self._db.execute("SELECT compatibility FROM config WHERE subject = ?", (subject or "",)).fetchone()
        if row is not None:
            return str(row[0])
        if subject:
            return self.compatibility(None)
        return DEFAULT_MODE

    def subject_mode(self, subject: str) -> str | None:
        row = self._db.execute("SELECT compatibility FROM config WHERE subject = ?", (subject,)).fetchone()
        return None if row is None else str(row[0])

    # -- writes -------------------------------------------------------------------------------

    def set_compatibility(self, mode: str, subject: str | None = None) -> str:
        mode = mode.upper()
        if mode not in MODES:
            raise RegistryError(f"Invalid compatibility level {mode}; one of {', '.join(MODES)}", 42203, 422)
        with self._lock, self._store.writing():
            self._db.execute("INSERT INTO config (subject, compatibility) VALUES (?, ?) ON CONFLICT (subject) "
                             "DO UPDATE SET compatibility = excluded.compatibility", (subject or "", mode))
        return mode

    def register(self, subject: str, schema: str, schema_type: str = "AVRO",
                 references: tuple[Reference, ...] = ()) -> Registered:
        schema_type = (schema_type or "AVRO").upper()
        references = tuple(references)
        if references and not self.format(schema_type).takes_references:
            raise RegistryError(f"references in {schema_type} schemas are not supported", 42201, 422)
        text = self.canonical(schema, schema_type)
        with self._lock, self._store.writing():
            try:
                return self.lookup(subject, text, schema_type, references)
            except RegistryError:
                pass
            for name, ref_subject, ref_version in references:
                try:
                    self.version(ref_subject, ref_version)
                except RegistryError:
                    raise RegistryError(f"reference '{name}' names version {ref_version} of subject "
                                        f"'{ref_subject}', which does not exist", 42201, 422) from None
            existing = self.history(subject)
            problems = self.problems(subject, text, schema_type, existing, len(existing) + 1, references=references)
            if problems:
                raise Incompatible(problems[0])
            row = self._db.execute("SELECT id FROM schemas WHERE schema = ? AND schema_type = ?",
                                   (text, schema_type)).fetchone()
            if row is not None:  # a schema is stored once: its text and type, with its references
                schema_id = int(row[0])
                if self.references(schema_id) != references:
                    raise RegistryError(f"this schema is stored with other references (id {schema_id})", 42201, 422)
            else:
                schema_id = int(self._db.execute("INSERT INTO schemas (schema_type, schema) VALUES (?, ?) RETURNING id",
                                                 (schema_type, text)).fetchone()[0])
                for position, (name, ref_subject, ref_version) in enumerate(references):
                    self._db.execute("INSERT INTO schema_refs (schema_id, position, name, subject, version) "
                                     "VALUES (?, ?, ?, ?, ?)", (schema_id, position, name, ref_subject, ref_version))
            version = existing[-1].version + 1 if existing else 1
            self._db.execute("INSERT INTO versions (subject, version, schema_id) VALUES (?, ?, ?)",
                             (subject, version, schema_id))
            return Registered(subject, version, schema_id, text, schema_type, references)

    def problems(self, subject: str, text: str, schema_type: str, existing: list[Registered],
                 new_version: int, mode: str | None = None, references: tuple[Reference, ...] = ()) -> list[str]:
        """One line per breaking change of ``text`` against ``existing`` in the subject's mode."""
        try:
            return compatibility_problems(subject, text, self.format(schema_type), existing, new_version,
                                          mode or self.compatibility(subject), references, self.resolved)
        except ValueError as exc:
            raise RegistryError(f"Invalid schema: {exc}", 42201, 422) from None


def compatibility_problems(label: str, text: str, fmt: FormatKind, existing: list[Registered],
                           new_version: int, mode: str, references: tuple[Reference, ...] = (),
                           resolve: Callable[[tuple[Reference, ...]], dict[str, str]] | None = None) -> list[str]:
    """One line per breaking change of ``text`` (to be version ``new_version``, a schema of format
    ``fmt``) against the versions ``existing`` in ``mode``, each line starting
    ``<label> v<new_version>:``. Raises ``ValueError`` when ``text`` is not a schema of its type."""
    if mode == "NONE" or not existing:
        return []
    changed = [e for e in existing if e.schema_type != fmt.schema_type]
    if changed:
        return [f"{label} v{new_version}: schema type changed from {changed[-1].schema_type} to {fmt.schema_type} "
                f"— breaks {mode} (set the subject's mode to NONE to store it)"]
    against = existing if mode.endswith("_TRANSITIVE") else existing[-1:]
    base = mode.removesuffix("_TRANSITIVE")

    def parsed(schema: str, refs: tuple[Reference, ...]) -> Any:
        return fmt.parse(schema, resolve(refs) if refs and resolve is not None else {})

    new = parsed(text, references)
    out: list[str] = []
    for old in reversed(against):
        previous = parsed(old.schema, old.references)
        if base in ("BACKWARD", "FULL"):
            out += [f"{label} v{new_version}: {why} — breaks {mode} (readers of v{new_version} cannot read "
                    f"v{old.version} records)" for why in fmt.incompatibilities(previous, new, False)]
        if base in ("FORWARD", "FULL"):
            said = {line.split(": ", 1)[1].split(" — ")[0] for line in out}
            out += [f"{label} v{new_version}: {why} — breaks {mode} (readers of v{old.version} cannot read "
                    f"v{new_version} records)" for why in fmt.incompatibilities(new, previous, True) if why not in said]
    return out


def field_changes(old: dict[str, str], new: dict[str, str]) -> list[str]:
    """``+ path: decl``, ``- path: decl`` and ``~ path: old → new`` lines, in path order."""
    lines = []
    for path in sorted(set(old) | set(new)):
        if path not in old:
            lines.append(f"+ {path}: {new[path]}")
        elif path not in new:
            lines.append(f"- {path}: {old[path]}")
        elif old[path] != new[path]:
            lines.append(f"~ {path}: {old[path]} → {new[path]}")
    return lines
