"""``mask``: personal data never reaches an output in clear text.

Per field, one rule::

    - mask:
        fields:
          user_id: hash             # HMAC-SHA-256 (hex) under a key from the environment
          email: email_domain       # "@example.com"
          ip: truncate_ip           # 203.0.113.0 (/24), 2001:db8:85a3:: (/48)
          card: {keep_last: 4}      # "************1234"
          name: redact              # "[redacted]"

The step runs in the JVM (``operators/java/.../Mask*.java``): later steps and every sink see the
masked values. The key of ``hash`` is read from an environment variable of the process that runs
the task (``HEADRACE_MASK_KEY``, or the profile's ``mask: {key_env: NAME}``), never from the job
spec or the compiled plan, so it cannot leak through either.

Masking also covers the outputs that carry raw records: when a job has a mask step, every dead
letter and late record (whether refused before or after the step) carries its payload with the
masked fields masked, and its error text without their clear values. A payload that cannot be
parsed is, by ``dead_letter: {payload: masked | raw | omit}``, replaced by its length and keyed
hash (the default), kept, or left out.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, Literal

from headrace.connectors.sqltext import ident, literal
from headrace.operators import jvm
from headrace.schemas.errors import HeadraceError, SpecError
from headrace.schemas.kinds import SYSTEM_COLUMNS, ExecNode, NodeSql, PlanContext, StepKind, StepNode, Stream, Wiring
from headrace.schemas.options import Identifier, SpecModel, StepOptions
from headrace.schemas.profile import Profile, Section
from headrace.schemas.types import FieldType
from pydantic import Field

MASK_FUNCTION = "hr_mask"
MASK_PAYLOAD_FUNCTION = "hr_mask_payload"
MASK_ERROR_FUNCTION = "hr_mask_error"
DEFAULT_KEY_ENV = "HEADRACE_MASK_KEY"
#: its JVM functions (operators/java/.../functions/Mask*.java)
MASK_CLASS = f"{jvm.PACKAGE}.MaskValue"
MASK_PAYLOAD_CLASS = f"{jvm.PACKAGE}.MaskPayload"
MASK_ERROR_CLASS = f"{jvm.PACKAGE}.MaskError"


class MaskSettings(Section):
    """The profile's ``mask:`` section: the environment variable holding the key in the processes
    that run tasks (this one for local runs, the TaskManagers' on a cluster), at least 16
    characters. It names no server, so the embedded profile may have it too."""

    key: ClassVar[str] = "mask"
    service: ClassVar[bool] = False

    key_env: str = Field(default=DEFAULT_KEY_ENV, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")


class KeepLast(SpecModel):
    keep_last: Annotated[int, Field(ge=0, le=64)]


MaskRule = Literal["hash", "redact", "truncate_ip", "email_domain"] | KeepLast
#: rules that read text: a non-string field would be refused
_TEXT_RULES = ("truncate_ip", "email_domain")


class MaskOptions(StepOptions):
    """``fields``: the rule for each field to mask."""

    fields: dict[Identifier, MaskRule] = Field(min_length=1)


def rule_text(rule: MaskRule) -> str:
    """The rule as the JVM functions take it (``keep_last:4``)."""
    return f"keep_last:{rule.keep_last}" if isinstance(rule, KeepLast) else rule


@dataclass(kw_only=True)
class MaskNode(StepNode):
    rules: dict[str, str]
    key_env: str = DEFAULT_KEY_ENV

    def explain(self) -> str:
        rules = ", ".join(f"{name}: {rule.replace(':', ' ')}" for name, rule in self.rules.items())
        return f"mask {rules} in the JVM (also in dead-letter and late payloads and errors)"

    def owns(self, node: ExecNode) -> bool:
        return node.kind == "calc" and node.calls(MASK_FUNCTION) and not node.calls(MASK_PAYLOAD_FUNCTION)

    def functions(self) -> tuple[str, ...]:
        return (f"CREATE TEMPORARY SYSTEM FUNCTION {MASK_FUNCTION} AS {literal(MASK_CLASS)} LANGUAGE JAVA",)

    def sql(self, wiring: Wiring, input_view: str) -> NodeSql:
        key_env = mask_key_env(wiring.profile)
        columns = [ident(c) for c in SYSTEM_COLUMNS]
        carried = set(wiring.carried(self.id))  # the fields the view it reads carries
        for name, _ in self.output.fields:
            if name not in carried:
                continue
            if name in self.rules:
                columns.append(f"{MASK_FUNCTION}(CAST({ident(name)} AS STRING), {literal(self.rules[name])}, "
                               f"{literal(key_env)}) AS {ident(name)}")
            else:
                columns.append(ident(name))
        output = wiring.view(self.id, "masked")
        return NodeSql(views=(f"CREATE TEMPORARY VIEW {output} AS\nSELECT {', '.join(columns)}\nFROM {input_view}",),
                       output=output)

    rewrites_outputs: ClassVar[bool] = True

    def rewrite_outputs(self, same_kind: list[StepNode], payload: str, error: str, wiring: Wiring,
                        unparseable: str) -> tuple[str, str]:
        """Every mask step's fields, masked in every dead-letter and late payload and error text."""
        masks = [node for node in same_kind if isinstance(node, MaskNode)]
        spec = literal(payload_spec(masks, unparseable, mask_key_env(wiring.profile)))
        return f"{MASK_PAYLOAD_FUNCTION}({payload}, {spec})", f"{MASK_ERROR_FUNCTION}({error}, {payload}, {spec})"

    def output_functions(self) -> tuple[str, ...]:
        return dead_letter_functions()

    def environment(self, profile: Profile) -> frozenset[str]:
        return frozenset({mask_key_env(profile)})

    def check_environment(self, profile: Profile) -> None:
        """A job that masks fields runs here only with its key in this process's environment."""
        name = mask_key_env(profile)
        value = os.environ.get(name)
        if value is None or len(value) < 16:
            raise HeadraceError(f"the mask step needs its key in environment variable {name} "
                                f"({'not set' if value is None else 'shorter than 16 characters'})",
                                hint=f"export {name}=<a secret of 16+ characters> (keep it out of job specs)")


def mask_key_env(profile: Profile) -> str:
    return profile.section(MaskSettings).key_env


def payload_spec(nodes: list[MaskNode], unparseable: str, key_env: str) -> str:
    """What the payload and error functions mask: every mask step's fields, one JSON literal."""
    fields: dict[str, str] = {}
    for node in nodes:
        fields.update(node.rules)
    return json.dumps({"fields": fields, "unparseable": unparseable, "key_env": key_env}, separators=(",", ":"))


def dead_letter_functions() -> tuple[str, ...]:
    return (f"CREATE TEMPORARY SYSTEM FUNCTION {MASK_PAYLOAD_FUNCTION} AS {literal(MASK_PAYLOAD_CLASS)} "
            "LANGUAGE JAVA",
            f"CREATE TEMPORARY SYSTEM FUNCTION {MASK_ERROR_FUNCTION} AS {literal(MASK_ERROR_CLASS)} LANGUAGE JAVA")


class Mask(StepKind):
    name = "mask"
    options = MaskOptions
    sections = (MaskSettings,)

    def plan(self, options: Any, ctx: PlanContext, upstream: Stream, node_id: str, uid: str) -> MaskNode:
        opts: MaskOptions = options
        rules: dict[str, str] = {}
        for name, rule in opts.fields.items():
            if name == ctx.event_time_field:
                raise SpecError(f"the event-time field '{name}' cannot be masked: windows and the late "
                                "judgement read it", where=ctx.where("fields", name), hint="mask another field")
            ftype = ctx.field(upstream, name, "fields", name, what="masked field")
            if rule_text(rule) in _TEXT_RULES and ftype is not FieldType.STRING:
                raise SpecError(f"'{rule}' masks text, and '{name}' is a {ftype.value}",
                                where=ctx.where("fields", name), hint="use hash or redact")
            rules[name] = rule_text(rule)
        # a masked value is text whatever it was (a hash, a redaction)
        fields = tuple((n, FieldType.STRING if n in rules else t) for n, t in upstream.fields)
        return MaskNode(id=node_id, kind=self.name, uid=uid, reads=tuple(rules), rules=rules,
                        output=Stream(fields=fields, required=upstream.required,
                                      described_as=f"step '{node_id}' (masked {', '.join(rules)})"))
