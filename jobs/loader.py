"""Load a job spec file into a :class:`jobs.spec.JobSpec`, with errors at ``file:line``."""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from headrace.jobs.spec import SINK_KINDS, STEP_KINDS, JobSpec, all_keys
from headrace.jobs.yamlsrc import KeyPath, SourceMap, load_yaml
from headrace.schemas.errors import SpecError
from pydantic import ValidationError

_TAGS = set(STEP_KINDS) | set(SINK_KINDS)


@dataclass(frozen=True)
class LoadedJob:
    """A parsed spec plus where it came from (for later error messages)."""

    spec: JobSpec
    path: Path
    source_map: SourceMap


def _dotted(path: KeyPath) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _hint_for(word: str, choices: set[str] | tuple[str, ...]) -> str | None:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f"did you mean '{close[0]}'?" if close else None


def _check_kinds(data: dict[str, Any], smap: SourceMap) -> None:
    """Steps and sinks are one-key mappings whose key names their kind."""
    for section, kinds in (("steps", STEP_KINDS), ("sinks", SINK_KINDS)):
        items = data.get(section)
        if not isinstance(items, list):
            continue
        for i, item in enumerate(items):
            where = smap.where((section, i))
            if not isinstance(item, dict) or len(item) != 1:
                raise SpecError(f"{section}[{i}] must be a mapping with one key naming its kind",
                                where=where, hint=f"write e.g. '- {kinds[0]}: {{...}}'")
            kind = str(next(iter(item)))
            if kind not in kinds:
                hint = _hint_for(kind, kinds) or f"known kinds: {', '.join(kinds)}"
                raise SpecError(f"unknown {section[:-1]} kind '{kind}' in {section}[{i}]",
                                where=where, hint=hint)
            if item[kind] is None:
                item[kind] = {}


def _error_line(exc: ValidationError, smap: SourceMap) -> SpecError:
    # an unknown key usually explains the 'missing' error next to it: report it first
    errors = sorted(exc.errors(), key=lambda e: e["type"] != "extra_forbidden")
    first = errors[0]
    # pydantic repeats the union tag (steps, 1, 'aggregate', 'aggregate', ...): drop the repeat
    cleaned: list[str | int] = []
    for part in first["loc"]:
        if cleaned and part == cleaned[-1] and part in _TAGS:
            continue
        cleaned.append(part)
    loc: KeyPath = tuple(cleaned)
    more = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
    kind = first["type"]
    if kind == "extra_forbidden":
        key = str(loc[-1])
        parent = _dotted(loc[:-1])
        return SpecError(f"unknown key '{key}' in {parent}{more}", where=smap.where(loc),
                         hint=_hint_for(key, all_keys()) or "remove it (see README, 'Job spec')")
    if kind == "missing":
        key = str(loc[-1])
        return SpecError(f"missing key '{key}' in {_dotted(loc[:-1])}{more}",
                         where=smap.where(loc[:-1]), hint=f"add '{key}:' (see README, 'Job spec')")
    message = str(first["msg"]).removeprefix("Value error, ")
    return SpecError(f"{_dotted(loc)}: {message}{more}", where=smap.where(loc),
                     hint="see README, 'Job spec'" if kind != "value_error" else None)


def parse_job(path: Path, text: str | None = None) -> LoadedJob:
    """Parse and type-check one job spec; raises :class:`SpecError` with file:line."""
    data, smap = load_yaml(path, text)
    if not isinstance(data, dict):
        raise SpecError("a job spec is a mapping with 'job', 'source', 'steps' and 'sinks'",
                        where=smap.where(()), hint="see jobs/page_activity.yaml for an example")
    _check_kinds(data, smap)
    try:
        spec = JobSpec.model_validate(data)
    except ValidationError as exc:
        raise _error_line(exc, smap) from None
    return LoadedJob(spec=spec, path=path, source_map=smap)
