"""What the sinks that write from Python share: a blackhole table fed by a vectorized function
that receives each batch of view rows and writes it (one round trip per batch).

Rows reach the function as the view's columns, window bounds as UTC text
(``2026-01-01 00:01:00.000``, any year). Flink completes a batch before each checkpoint, so a
sink whose writes are idempotent (keyed by view keys and window) is effectively exactly-once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from headrace.connectors.sqltext import ident, with_options
from headrace.schemas.errors import ServiceError
from headrace.schemas.kinds import SinkNode
from headrace.schemas.profile import Profile, Section
from headrace.schemas.views import RECORDS_COLUMN, WINDOW_BOUNDS, ViewDef


def window_ms(text: str) -> int:
    """``2026-01-01 00:01:00.000`` (UTC) → epoch milliseconds, for any year Flink can hold.

    >>> window_ms("1970-01-01 00:01:00.250"), window_ms("0001-01-01 00:00:00.000")
    (60250, -62135596800000)
    """
    from datetime import UTC, datetime

    moment = datetime.strptime(text, "%Y-%m-%d %H:%M:%S.%f").replace(tzinfo=UTC)
    delta = moment - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000


def row_names(view: ViewDef) -> list[str]:
    """The columns each row has, in the order the function receives them."""
    return [n for n, _ in view.keys] + list(WINDOW_BOUNDS) + [n for n, _ in view.measures] + [RECORDS_COLUMN]


def batch_udf(names: list[str], open_client: Callable[[], Any], write: Callable[[Any, list[dict[str, Any]]], None],
              close_client: Callable[[Any], None]) -> Any:
    """A vectorized scalar function: ``write(client, rows)`` per batch; returns 1 per row written,
    and counts them in the Flink counter ``rows_written`` (group ``headrace``) once written."""
    from pyflink.table import DataTypes
    from pyflink.table.udf import ScalarFunction, udf

    class WriteRows(ScalarFunction):
        def open(self, function_context: Any) -> None:
            self.client = open_client()
            self.written = function_context.get_metric_group().add_group("headrace").counter("rows_written")

        def eval(self, *columns: Any) -> Any:
            import pandas as pd

            rows = [dict(zip(names, values, strict=True)) for values in zip(*columns, strict=True)]
            write(self.client, rows)
            self.written.inc(len(rows))
            return pd.Series([1] * len(rows), dtype="int64")

        def close(self) -> None:
            if getattr(self, "client", None) is not None:
                close_client(self.client)

    return udf(WriteRows(), result_type=DataTypes.BIGINT(), func_type="pandas")


@dataclass(kw_only=True)
class PythonWriterNode(SinkNode):
    """A sink node writing through :func:`batch_udf`; ``connection`` is its store's profile section
    and ``store`` how messages name it."""

    connection: ClassVar[type[Section]]
    store: ClassVar[str]

    @property
    def function(self) -> str:
        return f"{self.flink_table}_write"

    def table_ddl(self, profile: Profile) -> str:
        profile.section(self.connection)  # a one-line error when the profile lacks the section
        return (f"CREATE TEMPORARY TABLE {ident(self.flink_table)} (`written` BIGINT) "
                f"{with_options({'connector': 'blackhole'})}")

    def insert_sql(self, input_view: str) -> str:
        cols = [ident(n) for n, _ in self.view.keys]
        cols += [f"DATE_FORMAT({ident(b)}, 'yyyy-MM-dd HH:mm:ss.SSS')" for b in WINDOW_BOUNDS]
        cols += [ident(n) for n, _ in self.view.measures] + [ident(RECORDS_COLUMN)]
        return (f"INSERT INTO {ident(self.flink_table)} SELECT {self.function}({', '.join(cols)}) "
                f"FROM {input_view}")

    def prepare(self, profile: Profile) -> None:
        problem = self.reachable(profile)
        if problem is not None:
            raise ServiceError(f"cannot reach {problem.removesuffix(' not answering')}",
                               hint=f"start {self.store} or fix '{self.connection.key}' in the profile")
