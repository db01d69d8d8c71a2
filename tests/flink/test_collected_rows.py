"""The embedded run's batched reader (``runner.collected_rows``) against PyFlink's own collect iterator.

The embedded run reads its results through ``CollectedRows`` (one py4j call per batch), from
Flink's collect sink or from the ``headrace-client`` table (ClientSink.java: an INSERT, so the job
has a JSON plan to keep). Either way it must give what PyFlink's per-row iterator gives: every
row, in order, with its kind, the awkward strings intact; and a job that fails must fail the
reader with the job's own error.
"""

from __future__ import annotations

from typing import Any

import pytest
from headrace.jobs.runner import collected_rows
from headrace.operators import jvm
from py4j.protocol import Py4JJavaError

pytestmark = pytest.mark.flink

AWKWARD = ["plain", "nul \x00 in", "four-byte 😀 utf-8", "line\nbreak\ttab", 'quote " back \\ slash',
           "\u2028 separators \u2029", "", None]
HUGE = "x" * 1_000_000


def _t_env() -> Any:
    from pyflink.common import Configuration
    from pyflink.datastream import StreamExecutionEnvironment
    from pyflink.table import StreamTableEnvironment

    env = StreamExecutionEnvironment.get_execution_environment(Configuration.from_dict({"parallelism.default": "1"}))
    env.add_jars(jvm.build().resolve().as_uri())
    return StreamTableEnvironment.create(env)


def _pyflink_rows(t_env: Any, query: str) -> list[list[Any]]:
    with t_env.execute_sql(query).collect() as rows:
        return [[int(row.get_row_kind().value), *row] for row in rows]


def _rows(t_env: Any, query: str, through: str) -> Any:
    """The Java iterator of ``query``'s rows: Flink's collect sink, or a ``headrace-client`` table."""
    if through == "collect":
        return t_env.execute_sql(query)._j_table_result.collect()
    import uuid

    from pyflink.java_gateway import get_gateway

    channel = f"probe-{uuid.uuid4().hex[:8]}"
    columns = t_env.sql_query(query)._j_table.getResolvedSchema().getColumns()
    t_env.execute_sql(f"CREATE TEMPORARY TABLE `{channel}` ("
                      + ", ".join(f"`{c.getName()}` {c.getDataType().toString()}" for c in columns)
                      + f") WITH ('connector' = 'headrace-client', 'channel' = '{channel}')")
    client_sink = get_gateway().jvm.dev.headrace.connectors.ClientSink
    client_sink.open(channel)
    job = t_env.execute_sql(f"INSERT INTO `{channel}` {query}")._j_table_result.getJobClient().get()
    return client_sink.rows(channel, job)


@pytest.mark.parametrize("through", ["collect", "client"])
def test_batches_equal_pyflink_rows_kinds_and_awkward_strings(through: str) -> None:
    from pyflink.table import DataTypes

    t_env = _t_env()
    # 600 keys, each counted twice: +I, then -U and +U (1,801 rows in batches of 250); one huge string
    elements = [(i % 600, AWKWARD[i % len(AWKWARD)]) for i in range(1_200)] + [(600, HUGE)]
    t_env.create_temporary_view("probe", t_env.from_elements(elements, DataTypes.ROW(
        [DataTypes.FIELD("k", DataTypes.BIGINT()), DataTypes.FIELD("s", DataTypes.STRING())])))
    query = "SELECT k, COUNT(*) AS n, MAX(s) AS s FROM probe GROUP BY k"
    want = _pyflink_rows(t_env, query)
    got = list(collected_rows(_rows(t_env, query, through), batch=250))
    assert len(want) == 1_801
    assert {row[0] for row in want} == {0, 1, 2}  # +I, -U, +U
    assert got == want
    assert {row[3] for row in got} >= {s for s in AWKWARD if s is not None} | {HUGE}


@pytest.mark.parametrize("through", ["collect", "client"])
def test_a_failing_job_fails_the_reader_with_its_own_error(through: str) -> None:
    from pyflink.table import DataTypes

    t_env = _t_env()
    t_env.create_temporary_view("probe", t_env.from_elements([("1",), ("2",), ("not a number",)], DataTypes.ROW(
        [DataTypes.FIELD("s", DataTypes.STRING())])))
    with pytest.raises(Py4JJavaError) as failed:
        list(collected_rows(_rows(t_env, "SELECT CAST(s AS INT) FROM probe", through)))
    chain = []
    cause = failed.value.java_exception
    while cause is not None:
        chain.append(str(cause.toString()))
        cause = cause.getCause()
    assert any("not a number" in line for line in chain), chain


def test_a_batch_is_bounded_by_size_as_well_as_by_rows() -> None:
    import json

    from pyflink.java_gateway import get_gateway

    _t_env()  # the gateway, with Headrace's jar
    jvm = get_gateway().jvm
    rows = jvm.java.util.ArrayList()
    for i in range(40):  # 40 rows of 300,000 characters: 12 M in all
        row = jvm.org.apache.flink.types.Row.withPositions(2)
        row.setField(0, str(i))
        row.setField(1, "y" * 300_000)
        rows.add(row)
    reader = jvm.dev.headrace.connectors.CollectedRows(
        jvm.org.apache.flink.util.CloseableIterator.adapterForIterator(rows.iterator()))
    sizes, seen = [], []
    while (text := reader.next(1000, 5000)) is not None:
        batch = json.loads(text)
        sizes.append(len(batch))
        seen += [row[1] for row in batch]
    reader.close()
    assert seen == [str(i) for i in range(40)]
    assert max(sizes) <= 14 and len([s for s in sizes if s]) >= 3, sizes  # ~4 M characters a batch
