"""Operator logic without a JVM: validate, window assignment, measures, durations, SQL quoting."""

from __future__ import annotations

from pathlib import Path

import pytest
from headrace.connectors.sqltext import masked
from headrace.operators.aggregate import assign_windows, merge_sessions
from headrace.operators.measures import parse_measure
from headrace.operators.validate import RecordCheck
from headrace.schemas.durations import format_duration_ms, parse_duration_ms
from headrace.schemas.types import FieldType

SCHEMA = {
    "type": "object",
    "required": ["tenant_id", "ts", "latency_ms"],
    "properties": {"tenant_id": {"type": "string"}, "ts": {"type": "integer"},
                   "latency_ms": {"type": "integer", "minimum": 0}, "score": {"type": "number"}},
    "additionalProperties": False,
}
FIELDS = [("tenant_id", FieldType.STRING), ("latency_ms", FieldType.INTEGER), ("score", FieldType.NUMBER)]


@pytest.fixture()
def check() -> RecordCheck:
    return RecordCheck(SCHEMA, FIELDS)


def test_valid_record_yields_typed_fields(check: RecordCheck) -> None:
    assert check.check('{"tenant_id": "a", "ts": 5, "latency_ms": 7, "score": 2}') == (None, None, "a", 7, 2.0)


def test_optional_field_absent_is_null(check: RecordCheck) -> None:
    assert check.check('{"tenant_id": "a", "ts": 5, "latency_ms": 7}') == (None, None, "a", 7, None)


def test_invalid_json_is_a_root_error(check: RecordCheck) -> None:
    path, message, *fields = check.check('{"tenant_id": ')
    assert path == "/" and message.startswith("not valid JSON") and fields == [None, None, None]


def test_schema_violation_reports_json_pointer(check: RecordCheck) -> None:
    assert check.check('{"tenant_id": "a", "ts": 5, "latency_ms": -1}')[:2] == (
        "/latency_ms", "-1 is less than the minimum of 0")
    assert check.check('{"tenant_id": "a", "ts": 5}')[:2] == ("/", '"latency_ms" is a required property')


def test_integer_beyond_64_bits_is_refused_not_crashing(check: RecordCheck) -> None:
    path, message, *_ = check.check('{"tenant_id": "a", "ts": 5, "latency_ms": 99999999999999999999}')
    assert path == "/latency_ms" and "64-bit" in message


def test_empty_record_is_refused(check: RecordCheck) -> None:
    assert check.check(None)[:2] == ("/", "empty record")
    assert check.check("")[:2] == ("/", "empty record")


def test_tumbling_and_sliding_window_assignment() -> None:
    assert assign_windows(59_999, "tumbling", 60_000) == [(0, 60_000)]
    assert assign_windows(60_000, "tumbling", 60_000) == [(60_000, 120_000)]
    assert assign_windows(150_000, "sliding", 180_000, 60_000) == [(0, 180_000), (60_000, 240_000),
                                                                   (120_000, 300_000)]


def test_sessions_merge_within_the_gap() -> None:
    assert merge_sessions([100, 0, 30, 200], 60) == [(0, 90), (100, 160), (200, 260)]


def test_measures_fold_like_sql() -> None:
    values = [3, None, 5, 1]
    assert parse_measure("n", "count()").fold(values) == 4
    assert parse_measure("n", "count(x)").fold(values) == 3
    assert parse_measure("s", "sum(x)").fold(values) == 9
    assert parse_measure("a", "avg(x)").fold(values) == 3.0
    assert parse_measure("lo", "min(x)").fold(values) == 1
    assert parse_measure("hi", "max(x)").fold(values) == 5
    assert parse_measure("s", "sum(x)").fold([None]) is None


def test_measure_sql_averages_integers_as_double() -> None:
    assert parse_measure("a", "avg(latency_ms)").sql() == "AVG(CAST(`latency_ms` AS DOUBLE))"
    assert parse_measure("n", "count()").sql() == "COUNT(*)"


@pytest.mark.parametrize("text", ["sum()", "median(x)", "count", "sum(x"])
def test_bad_measures_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_measure("m", text)


def test_durations_round_trip() -> None:
    assert [parse_duration_ms(t) for t in ("250ms", "10s", "1m", "2h", "1d")] == [
        250, 10_000, 60_000, 7_200_000, 86_400_000]
    assert [format_duration_ms(v) for v in (250, 10_000, 90_000, 3_600_000)] == ["250ms", "10s", "90s", "1h"]
    with pytest.raises(ValueError):
        parse_duration_ms("10 parsecs")


def test_secrets_are_masked_in_displayed_sql() -> None:
    sql = "WITH (\n  'url' = 'jdbc:postgresql://h/db',\n  'password' = 'hunter2'\n)"
    assert "hunter2" not in masked(sql) and "'url' = 'jdbc:postgresql://h/db'" in masked(sql)


def test_a_secret_with_a_line_break_or_a_quote_is_masked_whole() -> None:
    """A password from the environment may hold a line break; a PEM key always does."""
    from headrace.connectors.sqltext import with_options

    sql = "CREATE TABLE t (a INT, w AS INTERVAL '5' SECOND) " + with_options({
        "url": "jdbc:postgresql://h/db", "password": "line1\nline2'quoted",
        "properties.ssl.keystore.key": "-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----",
        "properties.sasl.oauthbearer.config": "clientSecret=abc", "user": "u"})
    shown = masked(sql)
    for secret in ("line1", "line2", "quoted", "MIIE", "BEGIN PRIVATE", "clientSecret"):
        assert secret not in shown, shown
    assert "'url' = 'jdbc:postgresql://h/db'" in shown and "'user' = 'u'" in shown
    assert shown.count("'******'") == 3


def test_the_source_flags_each_string_field_by_its_index_and_the_check_finds_only_its_own() -> None:
    """``_nul`` holds ``,i,`` per decoded string field with a U+0000: a field's check names its
    own index, so no other field (nor a name with LIKE's wildcards) can match it."""
    from headrace.connectors.source import decoded_source_ddl
    from headrace.schemas.kinds import SourceDecoding, holds_nul

    fields = (("bytes", FieldType.INTEGER), ("tenant_id", FieldType.STRING), ("tenantxid", FieldType.STRING),
              ("page", FieldType.STRING))
    ddl = decoded_source_ddl("src", delegate="kafka", options={}, out_of_orderness_ms=0,
                             decoding=SourceDecoding("dev.headrace.functions.ValidateJson", "{}", fields))
    assert "'headrace.nul-fields' = '1,2,3'" in ddl and "`_nul` STRING" in ddl
    assert holds_nul(fields, "tenant_id") == "(POSITION(',1,' IN `_nul`) > 0)"
    assert holds_nul(fields, "page") == "(POSITION(',3,' IN `_nul`) > 0)"
    assert holds_nul(fields, "bytes") is None and holds_nul(fields, "email") is None
    # no string field: no flags, no column (the Python engine's source decodes none)
    assert "_nul" not in decoded_source_ddl("src", delegate="kafka", options={}, out_of_orderness_ms=0,
                                            decoding=SourceDecoding("x", "{}", fields[:1]))


@pytest.mark.parametrize("between", ["", "enrich", "mask"])
def test_a_sink_tests_the_source_flag_of_a_value_no_step_changed_and_the_value_of_one_a_step_made(
        tmp_path: Path, between: str) -> None:
    """A value that would not fit a sink (U+0000 in PostgreSQL text) is found by the source's flag
    (``_nul``) when every step before the sink passes fields unchanged (validate, enrich: the enrich
    step carries the column on), and by testing the value itself when a step made or changed it
    (the enrich step's own fields, a masked field). The flag saves Flink a copy of the string."""
    from headrace.jobs.compiler import compile_job
    from headrace.jobs.loader import parse_job
    from headrace.jobs.plan import build_plan
    from headrace.jobs.profiles import load_profile

    from tests.jobfiles import example_job_on

    profiles = tmp_path / "p.yaml"  # compiling needs no running services
    profiles.write_text("profiles:\n  svc:\n    kafka: {bootstrap_servers: '127.0.0.1:9'}\n"
                        "    postgres: {port: 9, database: d, user: u}\n")
    step = {"": "", "mask": "  - mask: {fields: {user_id: hash}}\n",
            "enrich": "  - enrich:\n      key: user_id\n      fields: {plan: string}\n"
                      "      source: {postgres: {table: users, key_column: id}}\n      on_miss: dead_letter\n"
                      "      engine: jvm\n"}[between]
    job = example_job_on(tmp_path, "jvm")
    job.write_text(job.read_text().replace("  - aggregate:\n", step + "  - aggregate:\n")
                   .replace("group_by: [tenant_id, page]", "group_by: [tenant_id, page"
                            + (", plan]" if between == "enrich" else "]")))
    compiled = compile_job(build_plan(parse_job(job)), load_profile("svc", profiles))
    (unstorable,) = [s for s in compiled.statements if "VIEW `hr_aggregate_unstorable`" in s]
    from headrace.schemas.kinds import holds_nul

    fields = compiled.wiring.source_decoding.fields
    flags = [holds_nul(fields, name) for name in ("tenant_id", "page")]
    if between == "mask":  # the mask step does not pass fields: every value tested itself
        assert "_nul" not in unstorable and "`tenant_id` LIKE" in unstorable and "`page` LIKE" in unstorable
    else:
        assert all(flag is not None and flag in unstorable for flag in flags), unstorable
        assert "`tenant_id` LIKE" not in unstorable and "`page` LIKE" not in unstorable
    if between == "enrich":  # its looked-up field: the source never saw it
        assert "`plan` LIKE" in unstorable
        (enriched,) = [s for s in compiled.statements if "VIEW `hr_enrich_enriched`" in s]
        assert "`_nul`" in enriched
