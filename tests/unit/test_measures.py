"""The sketch-kept measures: parsed with their argument, their SQL for both window paths, their
plain-Python reference, and a measure written wrong refused at its line."""

from __future__ import annotations

from pathlib import Path

import pytest
from headrace.jobs.loader import parse_job
from headrace.jobs.plan import build_plan
from headrace.operators.measures import parse_measure
from headrace.schemas.errors import SpecError

ROOT = Path(__file__).resolve().parents[2]


def test_percentile_takes_its_quantile_and_reads_it_from_a_ddsketch() -> None:
    m = parse_measure("p95_ms", "percentile(latency_ms, 0.95)")
    assert (m.function, m.field, m.arg, m.sketch) == ("percentile", "latency_ms", 0.95, "dd")
    assert m.sql() == "hr_sketch_quantile(hr_sketch('dd', CAST(`latency_ms` AS DOUBLE)), CAST(0.95 AS DOUBLE))"
    assert m.partials() == [("_p_p95_ms", "hr_sketch('dd', CAST(`latency_ms` AS DOUBLE))")]
    assert m.unit_partials() == [("_p_p95_ms", "hr_sketch_of('dd', CAST(`latency_ms` AS DOUBLE))")]
    # the reference: the value at rank floor(q * (n - 1)) of the values in order
    assert m.fold([5, 1, 4, 2, 3, None]) == 4.0 and m.fold([]) is None


def test_distinct_counts() -> None:
    exact, approx = parse_measure("u", "count_distinct(user_id)"), parse_measure("a", "approx_count_distinct(user_id)")
    assert exact.sql() == "COUNT(DISTINCT `user_id`)"  # Flink's own, when no window is merged from parts
    assert exact.partials() == [("_p_u", "hr_sketch('distinct', `user_id`)")]
    assert approx.sql() == "hr_sketch_count('hll', hr_sketch('hll', `user_id`))"
    assert exact.fold(["a", "b", "a", None]) == approx.fold(["a", "b", "a"]) == 2


@pytest.mark.parametrize(("expression", "message"), [
    ("percentile(latency_ms)", "percentile() takes a field and a quantile between 0 and 1"),
    ("percentile(latency_ms, 1.5)", "between 0 and 1"),
    ("count_distinct(user_id, 2)", "count_distinct() takes one field"),
    ("percentile(page, 0.5)", "numeric"),
    ("approx_count_distinct()", "needs a field"),
])
def test_a_measure_written_wrong_is_refused_at_its_line(tmp_path: Path, expression: str, message: str) -> None:
    text = (ROOT / "jobs" / "page_activity.yaml").read_text().replace(
        "schemas/click.schema.json", str(ROOT / "schemas" / "click.schema.json")).replace(
        "max_ms: max(latency_ms)", f"max_ms: max(latency_ms)\n        bad: {expression}")
    path = tmp_path / "job.yaml"
    path.write_text(text)
    with pytest.raises(SpecError) as caught:
        build_plan(parse_job(path))
    assert str(caught.value).startswith(f"{path}:") and message in str(caught.value), str(caught.value)


def test_views_says_which_measures_are_estimates_and_how_close(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    from headrace.jobs.cli import main

    (tmp_path / "jobs").mkdir()
    (tmp_path / "jobs" / "pa.yaml").write_text(
        (ROOT / "jobs" / "page_activity.yaml").read_text()
        .replace("schemas/click.schema.json", str(ROOT / "schemas" / "click.schema.json"))
        .replace("max_ms: max(latency_ms)", "max_ms: max(latency_ms)\n        users: approx_count_distinct(user_id)\n"
                 "        p95_ms: percentile(latency_ms, 0.95)\n        exact_users: count_distinct(user_id)"))
    assert main(["views", "--project", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert "users integer ≈*" in printed and "p95_ms number ≈**" in printed
    assert "exact_users integer ≈" not in printed and "exact_users integer" in printed
    assert "≈* estimated: HyperLogLog: exact to 1,024 distinct values, then 0.81% relative standard error" in printed
    assert "≈** estimated: DDSketch: within 1% (relative) of the exact quantile" in printed


def test_percentiles_is_one_percentile_column_per_quantile() -> None:
    from headrace.operators.measures import parse_measures

    ms = parse_measures("lat", "percentiles(latency_ms, [0.5, 0.95, 0.99, 0.999])")
    assert [(m.name, m.function, m.arg) for m in ms] == [
        ("lat_p50", "percentile", 0.5), ("lat_p95", "percentile", 0.95), ("lat_p99", "percentile", 0.99),
        ("lat_p99_9", "percentile", 0.999)]
    assert [m.accuracy for m in ms] == [parse_measure("x", "percentile(latency_ms, 0.5)").accuracy] * 4


def test_first_and_last_keep_the_record_s_place_and_cast_back_to_the_field_s_type() -> None:
    from dataclasses import replace

    first = replace(parse_measure("f", "first(latency_ms)"), sql_type="BIGINT")
    assert first.sql() == ("CAST(hr_sketch_pick(hr_sketch('first', `latency_ms`, `_event_ms`, `_partition`, "
                           "`_offset`)) AS BIGINT)")
    assert first.unit_partials() == [("_p_f", "hr_sketch_of('first', `latency_ms`, `_event_ms`, `_partition`, "
                                               "`_offset`)")]
    assert first.accuracy is None and first.sketch == "first"
    last = parse_measure("l", "last(user_id)")
    # the reference takes values in event time, partition and offset order; nulls are skipped
    assert first.fold([None, 3, 1, 2]) == 3 and last.fold(["a", "b", None]) == "b" and last.fold([]) is None


@pytest.mark.parametrize(("expression", "message"), [
    ("percentiles(latency_ms)", "a list of quantiles"),
    ("percentiles(latency_ms, [0.5, 1.5])", "between 0 and 1"),
    ("percentiles(latency_ms, [])", "between 0 and 1"),
    ("percentiles(latency_ms, [0.5, 0.5])", "different quantiles"),
    ("percentiles(page, [0.5])", "numeric"),
    ("first()", "needs a field"),
    ("last(user_id, 2)", "last() takes one field"),
])
def test_new_measures_written_wrong_are_refused_at_their_line(tmp_path: Path, expression: str, message: str) -> None:
    test_a_measure_written_wrong_is_refused_at_its_line(tmp_path, expression, message)


def test_a_percentiles_column_that_clashes_with_a_measure_is_refused(tmp_path: Path) -> None:
    test_a_measure_written_wrong_is_refused_at_its_line(
        tmp_path, "percentiles(latency_ms, [0.5])\n        bad_p50: max(latency_ms)", "'bad_p50' is named twice")


def test_top_k_reads_the_k_most_frequent_values_as_json() -> None:
    from dataclasses import replace

    words = replace(parse_measure("top_pages", "top_k(page, 2)"), sql_type="STRING")
    assert words.sql() == "hr_sketch_top(hr_sketch('topk', `page`), 2, FALSE)"
    assert words.merged(words.result_type(None), 4) == ["top_pages", "STRING", "top", 4, 2, False]
    assert words.fold(["/b", "/a", "/b", "/a", "/c", None]) == [{"value": "/a", "count": 2},
                                                               {"value": "/b", "count": 2}]
    numbers = replace(parse_measure("t", "top_k(latency_ms, 1)"), sql_type="BIGINT")
    assert numbers.sql().endswith(", 1, TRUE)") and numbers.fold([7, 7, 10]) == [{"value": 7, "count": 2}]
    for bad in ("top_k(page)", "top_k(page, 0)", "top_k(page, 2.5)", "top_k(page, 5000)"):
        with pytest.raises(ValueError, match=r"top_k\(\) takes a field and how many values"):
            parse_measure("x", bad)


def test_a_measure_cut_at_a_comma_by_a_flow_mapping_says_so(tmp_path: Path) -> None:
    """``{p99_ms: percentile(latency_ms, 0.99)}``: YAML ends the value at the comma."""
    block = ("      measures:\n        events: count()\n        total_bytes: sum(bytes)\n"
             "        avg_ms: avg(latency_ms)\n        min_ms: min(latency_ms)\n        max_ms: max(latency_ms)\n")
    text = (ROOT / "jobs" / "page_activity.yaml").read_text()
    assert block in text
    path = tmp_path / "job.yaml"
    path.write_text(text.replace("schemas/click.schema.json", str(ROOT / "schemas" / "click.schema.json")).replace(
        block, "      measures: {events: count(), p99_ms: percentile(latency_ms, 0.99)}\n"))
    with pytest.raises(SpecError) as caught:
        build_plan(parse_job(path))
    assert "is cut at a comma" in str(caught.value) and "one per line" in str(caught.value), str(caught.value)
