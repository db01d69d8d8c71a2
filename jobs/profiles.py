"""Loading profiles: where a job's connections come from. Job specs never hold addresses or secrets.

``local`` (the default) is embedded: sources read ``<data_dir>/<topic>.jsonl`` files, sinks
write a SQLite file and JSON-lines files, and no server is needed. Other profiles name real
services; ``${ENV_VAR}`` anywhere in a profile is replaced from the environment, so secrets
stay out of files. The result is the typed :class:`headrace.schemas.profile.Profile`; every
section other than the framework's is declared by a kind (``sections``) and validated with its
model here::

    profiles:
      prod:
        kafka: {bootstrap_servers: "kafka-1:9093",
                security: {protocol: SASL_SSL, mechanism: SCRAM-SHA-512, username: headrace,
                           password_env: KAFKA_PASSWORD}}
        postgres: {host: db.internal, database: analytics, user: headrace,
                   password: "${HEADRACE_PG_PASSWORD}"}
"""

from __future__ import annotations

import importlib.resources
import os
import re
from pathlib import Path
from typing import Any

from headrace.jobs.yamlsrc import KeyPath, SourceMap, load_yaml
from headrace.schemas.errors import SpecError
from headrace.schemas.profile import Profile, Section
from pydantic import ValidationError

DEFAULT_PROFILES = Path(str(importlib.resources.files("headrace.jobs").joinpath("profiles.yaml")))
_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def declared_sections() -> dict[str, type[Section]]:
    """Every profile section a registered kind declares, by key."""
    from headrace.jobs.registry import SINKS, STEPS

    found: dict[str, type[Section]] = {}
    declared = [model for step in STEPS.values() for model in step.sections]
    declared += [model for sink in SINKS.values() for model in sink.sections]
    for model in declared:
        if found.setdefault(model.key, model) is not model:
            raise AssertionError(f"profile section '{model.key}' is declared by two models")
    return found


def _sections(raw: dict[str, Any], profile: str, smap: SourceMap) -> dict[str, Section]:
    """Move each kind's section out of ``raw`` into its validated model."""
    sections: dict[str, Section] = {}
    for key, model in declared_sections().items():
        if key in raw:
            value = raw.pop(key)
            if value is not None and not isinstance(value, dict):
                raise SpecError(f"profile '{profile}': '{key}' is a mapping of settings, not {value!r}"[:300],
                                where=smap.where(("profiles", profile, key)),
                                hint=f"write '{key}: {{...}}' (see README, 'Profiles')")
            try:
                sections[key] = model.model_validate(value or {})
            except ValidationError as exc:
                first = exc.errors()[0]
                loc = ("profiles", profile, key) + tuple(first["loc"])
                message = str(first["msg"]).removeprefix("Value error, ")
                raise SpecError(f"profile '{profile}': {key}.{'.'.join(map(str, first['loc']))}: {message}",
                                where=smap.where(loc)) from None
    return sections


def _interpolate(value: Any, profile: str, smap: SourceMap, path: KeyPath, keep: bool = False) -> Any:
    if isinstance(value, dict):
        return {k: _interpolate(v, profile, smap, path + (k,), keep) for k, v in value.items()}
    if isinstance(value, list):
        return [_interpolate(v, profile, smap, path + (i,), keep) for i, v in enumerate(value)]
    if isinstance(value, str) and not keep:
        def sub(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in os.environ:
                raise SpecError(f"profile '{profile}' needs environment variable {name}",
                                where=smap.where(path), hint=f"export {name}=... before running")
            return os.environ[name]
        return _ENV.sub(sub, value)
    return value


def load_profile(name: str = "local", path: Path | None = None, *, keep_env: bool = False) -> Profile:
    """Load profile ``name`` from ``path`` (default: $HEADRACE_PROFILES or jobs/profiles.yaml).

    ``keep_env``: leave ``${VAR}`` as written (for files rendered for other machines, which
    resolve them there: never a secret of this one in them)."""
    path = path or Path(os.environ.get("HEADRACE_PROFILES", DEFAULT_PROFILES))
    data, smap = load_yaml(path)
    profiles = data.get("profiles") if isinstance(data, dict) else None
    if not isinstance(profiles, dict):
        raise SpecError("a profiles file holds a 'profiles:' mapping", where=smap.where(()))
    if name not in profiles:
        raise SpecError(f"no profile '{name}'", where=str(path),
                        hint=f"known profiles: {', '.join(sorted(profiles))}")
    raw = _interpolate(profiles[name] or {}, name, smap, ("profiles", name), keep_env)
    sections = _sections(raw, name, smap) if isinstance(raw, dict) else {}
    try:
        return Profile.model_validate({"name": name, **raw, "sections": sections})
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ("profiles", name) + tuple(first["loc"])
        message = str(first["msg"]).removeprefix("Value error, ")
        named = re.match(r"'([^']+)'", message)  # a check of one key of a mapping: point at its line
        mapping = _at(raw, tuple(first["loc"]))
        if named and isinstance(mapping, dict) and named.group(1) in mapping:
            loc += (named.group(1),)
        raise SpecError(f"profile '{name}': {'.'.join(map(str, first['loc'])) or 'profile'}: {message}",
                        where=smap.where(loc)) from None


def _at(value: Any, path: tuple[Any, ...]) -> Any:
    for part in path:
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value
