"""``headrace schema list | show | publish | check | diff``: a project's schemas as subjects with
versions in a schema registry (Headrace's own or any Confluent-compatible one).

A TARGET is a job spec (its source's schema file, under its subject: ``source.format.subject``,
by default ``<topic>-value``) or a schema file with ``--subject`` (``.avsc`` Avro, ``.proto``
Protobuf, ``.json`` JSON Schema). ``check`` compares the file with what the registry holds, in the
subject's mode, or with an earlier copy of it (``--against schemas/click.v2.avsc``); it prints one
line per breaking change and exits 1 when there is any, so CI can gate a deploy on it.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from headrace.connectors import registry as client
from headrace.jobs.registry import FORMATS
from headrace.schemas.errors import SpecError
from headrace.schemas.kinds import FormatKind
from headrace.schemas.profile import Profile, RegistryConnection
from headrace.schemas.registry import MODES, Registered, compatibility_problems, field_changes
from rich.console import Console
from rich.table import Table

out = Console(highlight=False, soft_wrap=True)
BY_SUFFIX = {suffix: kind for kind in FORMATS.values() for suffix in kind.suffixes}


@dataclass(frozen=True)
class Target:
    """A schema file in the working tree and the subject it is a version of."""

    path: Path
    subject: str
    format: FormatKind

    @property
    def schema_type(self) -> str:
        return self.format.schema_type

    @property
    def text(self) -> str:
        return self.path.read_text(encoding="utf-8")

    @property
    def label(self) -> str:
        try:
            return str(self.path.resolve().relative_to(Path.cwd()))
        except ValueError:
            return str(self.path)


def target_of(args: argparse.Namespace) -> Target:
    path = Path(args.target)
    if not path.is_file():
        raise SpecError(f"{path} does not exist",
                        hint="name a job spec (.yaml) or a schema file (.avsc, .proto, .json)")
    if path.suffix in (".yaml", ".yml"):
        from headrace.jobs.loader import parse_job
        from headrace.jobs.plan import build_plan

        plan = build_plan(parse_job(path))
        fmt = plan.spec.source.format
        return Target(plan.schema.path, args.subject or fmt.subject or f"{plan.spec.source.kafka.topic}-value",
                      fmt.format)
    found = BY_SUFFIX.get(path.suffix)
    if found is None:
        raise SpecError(f"{path}: not a schema file I know ({path.suffix or 'no suffix'})",
                        hint="use .avsc (Avro), .proto (Protobuf) or .json (JSON Schema), or name a job spec")
    if not args.subject:
        raise SpecError(f"{path}: which subject is it a version of?",
                        hint="add --subject (e.g. --subject clicks-value), or name the job spec instead")
    return Target(path, args.subject, found)


def connection(args: argparse.Namespace) -> Profile:
    """What the registry client takes: ``--registry URL`` (a profile naming only that registry),
    or the profile's ``registry`` section."""
    if getattr(args, "registry", None):
        return Profile.model_construct(name="--registry", registry=RegistryConnection(url=args.registry))
    from headrace.jobs.profiles import load_profile

    return load_profile(args.profile, Path(args.profiles) if args.profiles else None)


def _history(args: argparse.Namespace, target: Target) -> tuple[list[Registered], str]:
    """The versions to compare with, and the mode: the registry's, or ``--against``'s file."""
    if getattr(args, "against", None):
        earlier = Path(args.against)
        if not earlier.is_file():
            raise SpecError(f"{earlier} does not exist", hint="--against names an earlier copy of the schema file")
        text = _canonical(earlier.read_text(encoding="utf-8"), target.format, str(earlier))
        return [Registered(str(earlier), 1, 0, text, target.schema_type)], (args.mode or "BACKWARD").upper()
    profile = connection(args)
    versions = [Registered(v.subject, v.version, v.id, v.schema, v.schema_type)
                for v in client.versions(profile, target.subject)]
    return versions, (args.mode or client.mode(profile, target.subject)).upper()


def _canonical(text: str, fmt: FormatKind, label: str) -> str:
    try:
        return fmt.canonical(text)
    except ValueError as exc:
        raise SpecError(f"{label}: not a schema (invalid {fmt.schema_type} schema: {exc})",
                        hint="fix the schema file") from None


@dataclass(frozen=True)
class Verdict:
    """A schema file against its subject: the version it is already (``same``), or the version it
    would become and its breaking changes in ``mode``."""

    target: Target
    mode: str
    history: list[Registered]
    same: Registered | None
    version: int
    problems: list[str]


def judged(args: argparse.Namespace) -> Verdict:
    target = target_of(args)
    history, mode = _history(args, target)
    text = _canonical(target.text, target.format, target.label)
    same = None if args.against else next(
        (v for v in history if v.schema == text and v.schema_type == target.schema_type), None)
    version = (history[-1].version + 1) if history else 1
    problems: list[str] = []
    if same is None:
        try:
            problems = compatibility_problems(target.label, text, target.format, history, version, mode)
        except ValueError as exc:
            raise SpecError(f"{target.label}: {exc}", hint="fix the schema file") from None
    return Verdict(target, mode, history, same, version, problems)


def cmd_check(args: argparse.Namespace) -> int:
    v = judged(args)
    target = v.target
    if v.same is not None:
        out.print(f"ok: {target.label} is {target.subject} v{v.same.version} (id {v.same.id}), unchanged")
        return 0
    for line in v.problems:
        out.print(line)
    if v.problems:
        return 1
    against = args.against or (f"{target.subject} v1-v{v.version - 1}" if v.history else "nothing")
    out.print(f"ok: {target.label} can be v{v.version} of {target.subject} ({v.mode}, compared with {against})")
    return 0


def cmd_publish(args: argparse.Namespace) -> int:
    args.against = None
    v = judged(args)
    target = v.target
    if v.same is not None:
        out.print(f"{target.label} is already {target.subject} v{v.same.version} (id {v.same.id})")
        return 0
    if v.problems:
        for line in v.problems:
            out.print(line)
        out.print(f"not published: {len(v.problems)} breaking change(s) for {v.mode}")
        return 1
    schema_id = client.register(connection(args), target.subject, target.text, target.format)
    out.print(f"published {target.label} as {target.subject} v{v.version} (id {schema_id}, {v.mode})")
    return 0


def cmd_diff(args: argparse.Namespace) -> int:
    target = target_of(args)
    history, _mode = _history(args, target)
    if args.version and not args.against:
        history = [v for v in history if v.version == args.version]
        if not history:
            raise SpecError(f"{target.subject} has no version {args.version}", hint="see 'headrace schema list'")
    if not history:
        out.print(f"{target.subject} has no version yet: every field of {target.label} is new")
        old: dict[str, str] = {}
    else:
        old = target.format.fields(target.format.parse(history[-1].schema, {}))
    try:
        new = target.format.fields(target.format.parse(target.text, {}))
    except ValueError as exc:
        raise SpecError(f"{target.label}: {exc}", hint="fix the schema file") from None
    base = args.against or (f"{target.subject} v{history[-1].version}" if history else "nothing")
    lines = field_changes(old, new)
    out.print(f"{base} → {target.label}: " + (f"{len(lines)} field change(s)" if lines else "no field-level change"))
    for line in lines:
        out.print("  " + line, markup=False)
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    profile = connection(args)
    where = profile.registry.url if profile.registry is not None else "the embedded registry"
    table = Table(title=f"subjects of {where}")
    for column in ("subject", "versions", "latest id", "type", "mode"):
        table.add_column(column)
    for subject in client.subjects(profile):
        versions = client.versions(profile, subject)
        if versions:
            table.add_row(subject, str(len(versions)), str(versions[-1].id), versions[-1].schema_type,
                          client.mode(profile, subject))
    out.print(table)
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    versions = client.versions(connection(args), args.subject)
    chosen = [v for v in versions if args.version in (None, v.version)]
    if not chosen:
        raise SpecError(f"subject '{args.subject}' has no version {args.version or ''}".strip(),
                        hint="see 'headrace schema list'")
    shown = chosen[-1]
    out.print(f"# {shown.subject} v{shown.version} (id {shown.id}, {shown.schema_type})", markup=False)
    text = shown.schema
    try:  # JSON schema texts indented; others (Protobuf) as registered
        text = json.dumps(json.loads(text), indent=2)
    except ValueError:
        pass
    print(text)
    return 0


def check_job_reads_subject(plan: Any, profile: Profile) -> list[str]:
    """For ``headrace validate --profile``: one line per registered version of the job's subject
    that the job's schema cannot read (every version's records may be on the topic)."""
    fmt = plan.spec.source.format
    if fmt.wire != "confluent":
        return []
    kind, rules = fmt.format.schema_type, fmt.format
    subject = fmt.subject or f"{plan.spec.source.kafka.topic}-value"
    reader = rules.parse(plan.schema.path.read_text(encoding="utf-8"), {})
    lines = []
    for version in client.versions(profile, subject):
        if version.schema_type != kind:
            lines.append(f"{subject} v{version.version} (id {version.id}) is {version.schema_type}, not {kind}")
            continue
        for why in rules.incompatibilities(rules.parse(version.schema, {}), reader, False):
            lines.append(f"{plan.schema.path.name} cannot read {subject} v{version.version} (id {version.id}): {why}")
    return lines


def add_parsers(sub: Any, with_profile: Any, cmd_spec: Any) -> None:
    """``headrace schema …`` (bare ``headrace schema`` prints the job spec's JSON Schema, as it did)."""
    p = sub.add_parser("schema", help="schemas in the registry: list, show, publish, check, diff; spec")
    p.set_defaults(func=cmd_spec)
    actions = p.add_subparsers(dest="action")
    q = actions.add_parser("spec", help="print the job spec's JSON Schema, for editors")
    q.set_defaults(func=cmd_spec)

    def registry_options(q: argparse.ArgumentParser) -> None:
        with_profile(q)
        q.add_argument("--registry", metavar="URL", help="this registry instead of the profile's")

    for name, func, helptext in (("check", cmd_check, "breaking changes of a schema file against its subject"),
                                 ("publish", cmd_publish, "register a schema file as its subject's next version"),
                                 ("diff", cmd_diff, "field-level changes of a schema file against its subject")):
        q = actions.add_parser(name, help=helptext)
        q.add_argument("target", help="a job spec, or a schema file with --subject")
        q.add_argument("--subject", help="the subject (default: the job's, <topic>-value)")
        if name != "publish":
            q.add_argument("--against", metavar="FILE", help="compare with this earlier copy, not the registry")
        if name == "diff":
            q.add_argument("--version", type=int, help="compare with this version (default: the latest)")
        else:
            q.add_argument("--mode", type=str.upper, choices=MODES, metavar="MODE",
                           help="compatibility mode (default: the subject's; BACKWARD with --against)")
        registry_options(q)
        q.set_defaults(func=func, against=None, mode=None)
    q = actions.add_parser("list", help="the registry's subjects, versions, types and modes")
    registry_options(q)
    q.set_defaults(func=cmd_list)
    q = actions.add_parser("show", help="one version of a subject (default: the latest)")
    q.add_argument("subject")
    q.add_argument("--version", type=int)
    registry_options(q)
    q.set_defaults(func=cmd_show)
