"""User-defined aggregates: ``udaf(mypkg.aggs.weighted_score, latency_ms, bytes)``.

The function is found by its dotted path: a Python function, or a Java class in one of the
aggregate step's ``jars:``. Either way the JVM keeps each window's records' values (one JSON
array per record, a mergeable ``rows`` state in ``Sketches.java``), so a user-defined aggregate
works wherever the built-in measures do: window TVFs in two phases, windows that take late
records, sessions and roll-ups. When a window is emitted its rows are finished into the value:

- a **Python** function is called with one pandas Series per field, the window's values, and
  returns one value; PyFlink calls it through a vectorized (pandas/Arrow) function, a batch of
  windows at a time, so no Python runs per record. Its result type is its return annotation
  (``float``, ``int``, ``str``, ``bool``; none: ``float``).
- a **Java** class extends Flink's ``AggregateFunction<T, ACC>`` (``T`` one of Long, Integer,
  Double, Float, String, Boolean) with ``createAccumulator()``, ``accumulate(ACC, ...)`` taking one
  argument per field, and ``getValue(ACC)``; ``UdafJava.java`` runs it over the window's rows.

(Flink's own pandas aggregate functions cannot share a window with built-in aggregates, and do not
run in window TVFs or session windows: planning fails. Hence the rows.)

The order of a window's rows is not defined, as in SQL: an aggregate should not depend on it.
"""

from __future__ import annotations

import importlib
import inspect
import json
import re
import sys
import zipfile
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from headrace.connectors.sqltext import literal
from headrace.operators import jvm
from headrace.operators.measures import Measure
from headrace.schemas.types import FieldType

#: the JVM function finishing a Java aggregate's rows (operators/java/.../functions/UdafJava.java)
JAVA_FUNCTION = "hr_udaf_java"
_PY_TYPES = {float: FieldType.NUMBER, int: FieldType.INTEGER, str: FieldType.STRING, bool: FieldType.BOOLEAN,
             "float": FieldType.NUMBER, "int": FieldType.INTEGER, "str": FieldType.STRING, "bool": FieldType.BOOLEAN}
_JAVA_TYPES = {"Long": FieldType.INTEGER, "Integer": FieldType.INTEGER, "Double": FieldType.NUMBER,
               "Float": FieldType.NUMBER, "String": FieldType.STRING, "Boolean": FieldType.BOOLEAN}
_SIGNATURE = re.compile(rb"Lorg/apache/flink/table/functions/AggregateFunction<Ljava/lang/(\w+);")


def python_function_name(step: str, measure: Measure) -> str:
    """The SQL name of a Python aggregate's finishing function."""
    return "hr_udaf_" + re.sub(r"[^A-Za-z0-9]", "_", f"{step}_{measure.name}").lower()


def resolve(measure: Measure, step: str, project: Path, jars: list[Path]) -> Measure:
    """``measure`` with its function found and its result type known; ValueError (one line) if not."""
    path = measure.path or ""
    entry = path.replace(".", "/") + ".class"
    for jar in jars:
        if not jar.is_file():
            raise ValueError(f"jar {jar} (in 'jars') does not exist")
        with zipfile.ZipFile(jar) as z:
            if entry in z.namelist():
                return _java(measure, jar, z.read(entry))
    function, why = load_python(path, project)
    if function is None:
        where = f"; nor is it a class in {', '.join(j.name for j in jars)}" if jars else \
            " (a Java class is found in the step's 'jars: [...]')"
        raise ValueError(f"udaf '{path}' is not a Python function: {why}{where}")
    try:
        inspect.signature(function).bind(*measure.fields)
    except TypeError:
        raise ValueError(f"{path}() cannot take {len(measure.fields)} arguments ({', '.join(measure.fields)}): "
                         f"it takes {inspect.signature(function)}") from None
    except ValueError:
        pass  # a builtin without a signature
    annotation = inspect.signature(function).return_annotation
    result = FieldType.NUMBER if annotation is inspect.Signature.empty else _PY_TYPES.get(annotation)
    if result is None:
        raise ValueError(f"{path}() returns {annotation!r}; a udaf returns float, int, str or bool")
    return replace(measure, result=result, finish_sql=python_function_name(step, measure) + "({rows})")


def _java(measure: Measure, jar: Path, code: bytes) -> Measure:
    found = _SIGNATURE.search(code)
    if found is None or found.group(1).decode() not in _JAVA_TYPES:
        raise ValueError(f"{measure.path} in {jar.name} must extend AggregateFunction<T, ACC> with T one of "
                         f"{', '.join(_JAVA_TYPES)}")
    result = _JAVA_TYPES[found.group(1).decode()]
    call = f"{JAVA_FUNCTION}({literal(measure.path or '')}, {literal(str(jar.resolve()))}, {{rows}})"
    return replace(measure, result=result, finish_sql=f"CAST({call} AS {result.flink_sql})")


def is_java(measure: Measure) -> bool:
    return measure.function == "udaf" and f"{JAVA_FUNCTION}(" in (measure.finish_sql or "")


def load_python(path: str, project: Path) -> tuple[Callable[..., Any] | None, str]:
    """The function at ``path`` (its module importable, or a file under ``project``), or why not."""
    module_name, _, attribute = path.rpartition(".")
    if not module_name:
        return None, "give its module too, e.g. 'mypkg.aggs.weighted_score'"
    if str(project) not in sys.path:
        sys.path.insert(0, str(project))
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        return None, f"module '{module_name}' cannot be imported ({exc})"
    function = getattr(module, attribute, None)
    if not callable(function):
        return None, f"module '{module_name}' has no function '{attribute}'"
    return function, ""


def rows_frame(state: bytes, fields: int) -> list[list[Any]]:
    """The columns of a window's rows (Sketches.java's ``rows``: a 4-byte length, then JSON arrays
    separated by commas)."""
    used = int.from_bytes(state[:4], "big")
    rows = json.loads(b"[" + state[4:4 + used] + b"]")
    return [list(column) for column in zip(*rows, strict=True)] if rows else [[] for _ in range(fields)]


def finishing_udf(measure: Measure, project: Path) -> Any:
    """The vectorized Python function that finishes windows' rows into the aggregate's values."""
    import pandas as pd
    from pyflink.table import DataTypes
    from pyflink.table.udf import udf

    function, why = load_python(measure.path or "", project)
    assert function is not None, why
    module = sys.modules[function.__module__]
    if Path(getattr(module, "__file__", "") or "/").resolve().is_relative_to(project.resolve()):
        import cloudpickle  # a module of the project travels with the function: workers need not import it

        cloudpickle.register_pickle_by_value(module)
    fields = len(measure.fields)
    kind = measure.result
    convert: Callable[[Any], Any] = {FieldType.INTEGER: int, FieldType.STRING: str,
                                     FieldType.BOOLEAN: bool}.get(kind, float)  # type: ignore[arg-type]
    result = {FieldType.INTEGER: DataTypes.BIGINT(), FieldType.STRING: DataTypes.STRING(),
              FieldType.BOOLEAN: DataTypes.BOOLEAN()}.get(kind, DataTypes.DOUBLE())  # type: ignore[arg-type]

    def finish(states: pd.Series) -> pd.Series:
        out: list[Any] = []
        for state in states:
            if state is None:
                out.append(None)
                continue
            try:
                value = function(*(pd.Series(column) for column in rows_frame(state, fields)))
            except Exception as exc:  # the cause first, not a worker's traceback
                raise RuntimeError(f"udaf {measure.path} failed on a window of {measure.name}: "
                                   f"{type(exc).__name__}: {exc}") from exc
            out.append(None if value is None or (isinstance(value, float) and value != value) else convert(value))
        return pd.Series(out, dtype=object)

    return udf(finish, result_type=result, func_type="pandas")


def functions(measures: tuple[Measure, ...]) -> tuple[str, ...]:
    """The JVM functions the step's aggregates need created."""
    if any(is_java(m) for m in measures):
        return (f"CREATE TEMPORARY SYSTEM FUNCTION {JAVA_FUNCTION} AS {literal(jvm.PACKAGE + '.UdafJava')} "
                "LANGUAGE JAVA",)
    return ()
