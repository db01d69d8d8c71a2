"""GraphQL over the views (Strawberry), at ``/graphql``: a schema generated from the view definitions.

For a view ``page_activity_1m`` with keys ``tenant_id, page``::

    type Query {
      page_activity_1m(where: PageActivity1mWhere, since: String, until: String, sort: String,
                       limit: Int! = 100, after: String): PageActivity1mPage!
    }
    type PageActivity1mPage { rows: [PageActivity1m!]!  next_cursor: String  note: String }
    type PageActivity1m {
      tenant_id: String!  page: String!  window_start: String!  window_end: String!
      events: Int  avg_ms: Float  …
      page_activity_1m(since: String, until: String, limit: Int! = 10): [PageActivity1m!]!
    }
    type Subscription { page_activity_1m(where: PageActivity1mWhere): PageActivity1m! }

The arguments mean what REST's parameters mean (``where`` is equality or ``in`` per key; ``after``
is a page's ``next_cursor``). A row also has a field per view whose group keys are among its own:
that view's newest rows for the row's key values (for the row's own view, the key's history).
All those nested reads of one query are loaded together, one store round trip per field and
argument set, however many parent rows there are.

Every operation is authenticated (a bearer token over HTTP; ``{"authorization": "Bearer …"}`` in
``connection_init`` over WebSocket, protocol ``graphql-transport-ws`` only) and restricted to
the token's tenant; hidden measures read as null. Queries deeper than ``graphql_max_depth`` or
that could read more than ``graphql_max_rows`` rows (the product of the ``limit``s along each
path) are refused before anything is read.
"""

import asyncio
import logging
import re
import time
from collections.abc import AsyncGenerator, Callable
from typing import Any

import strawberry
from fastapi import HTTPException
from graphql import (
    FieldNode,
    FragmentSpreadNode,
    GraphQLError,
    InlineFragmentNode,
    IntValueNode,
    OperationDefinitionNode,
    SelectionSetNode,
    ValidationRule,
)
from headrace.connectors.serving.access import Access, Forbidden
from headrace.connectors.serving.auth import TokenVerifier, Unauthorized
from headrace.connectors.serving.query import BadRequest, RelatedQuery, instant_ms, parse_query
from headrace.connectors.serving.stores import StoreUnavailable
from headrace.schemas.types import FieldType
from headrace.schemas.views import WINDOW_BOUNDS, ServedView
from starlette.requests import HTTPConnection
from strawberry.dataloader import DataLoader
from strawberry.exceptions import ConnectionRejectionError
from strawberry.extensions import (
    AddValidationRules,
    MaxTokensLimiter,
    ParserCache,
    SchemaExtension,
    ValidationCache,
)
from strawberry.fastapi import GraphQLRouter
from strawberry.scalars import JSON
from strawberry.schema.config import StrawberryConfig
from strawberry.subscriptions import GRAPHQL_TRANSPORT_WS_PROTOCOL
from strawberry.types import Info

log = logging.getLogger("headrace.serve")
SCALARS: dict[FieldType, type] = {FieldType.STRING: str, FieldType.INTEGER: int, FieldType.NUMBER: float,
                                  FieldType.BOOLEAN: bool, FieldType.BYTES: str}
TOP_LIMIT, NESTED_LIMIT = 100, 10


def graphql_name(view: ServedView) -> str:
    """A view's field name: its name, ``@`` spelled ``__`` (``events@redis`` → ``events__redis``)."""
    return view.name.replace("@", "__")


def type_name(view: ServedView) -> str:
    return "".join(part[:1].upper() + part[1:] for part in re.split(r"[_@]+", view.name) if part)


class CostLimit:
    """A validation rule: refuse an operation nested deeper than ``max_depth`` or that could read
    more than ``max_rows`` rows (each view field's ``limit`` times its parents')."""

    @staticmethod
    def rule(view_fields: set[str], max_rows: int, top_max: int, max_depth: int,
             max_fields: int = 2_000) -> type[ValidationRule]:
        class TooComplex(Exception):
            pass

        class Rule(ValidationRule):
            visited = 0  # selections walked for this operation, fragments expanded: bounded by max_fields

            def enter_operation_definition(self, node: OperationDefinitionNode, *_: Any) -> None:
                self.visited = 0
                try:
                    self.check(node)
                except TooComplex:
                    self.report_error(GraphQLError(
                        f"query too complex: more than {max_fields:,} fields and fragment spreads once its "
                        "fragments are expanded; ask for less, or split it", node))

            def check(self, node: OperationDefinitionNode) -> None:
                depth = self.depth(node.selection_set, set())
                if depth > max_depth:
                    self.report_error(GraphQLError(
                        f"query too deep: its depth {depth} exceeds maximum operation depth {max_depth}", node))
                    return
                cost = self.cost(node.selection_set, 1, top=True)
                if cost > max_rows:
                    self.report_error(GraphQLError(
                        f"query too large: it could read {cost:,} rows and the limit is {max_rows:,}; lower the "
                        "'limit' arguments or nest fewer views", node))

            def children(self, selection: SelectionSetNode | None) -> list[tuple[FieldNode | None, Any]]:
                """(field, its selection) for fields; (None, selection) for fragments, flattened."""
                out: list[tuple[FieldNode | None, Any]] = []
                self.visited += len(selection.selections) if selection else 0
                if self.visited > max_fields:
                    raise TooComplex()
                for item in selection.selections if selection else ():
                    if isinstance(item, FieldNode):
                        out.append((item, item.selection_set))
                    elif isinstance(item, InlineFragmentNode):
                        out.append((None, item.selection_set))
                    elif isinstance(item, FragmentSpreadNode):
                        fragment = self.context.get_fragment(item.name.value)
                        if fragment is not None:
                            out.append((None, fragment.selection_set))
                return out

            def depth(self, selection: SelectionSetNode | None, seen: set[int]) -> int:
                if selection is None or id(selection) in seen:  # a fragment cycle is refused elsewhere
                    return 0
                deepest = 0
                for field, inner in self.children(selection):
                    deepest = max(deepest, self.depth(inner, seen | {id(selection)}) + (field is not None))
                return deepest

            def cost(self, selection: SelectionSetNode | None, multiplier: int, top: bool) -> int:
                total = 0
                for field, inner in self.children(selection):
                    if field is None:
                        total += self.cost(inner, multiplier, top)
                    elif field.name.value in view_fields:
                        limit = top_max if top else NESTED_LIMIT
                        for argument in field.arguments or ():
                            if argument.name.value == "limit":
                                value = argument.value
                                limit = int(value.value) if isinstance(value, IntValueNode) else top_max
                        rows = multiplier * max(limit, 1)
                        total += rows + self.cost(inner, rows, top=False)
                    else:
                        total += self.cost(inner, multiplier, top=top and field.name.value != "rows")
                return total
        return Rule


def _errors(call: Callable[[], Any]) -> Any:
    """Run a read, turning its refusals into GraphQL errors that say no more than REST does."""
    try:
        return call()
    except Forbidden:
        raise GraphQLError("forbidden") from None
    except BadRequest as exc:
        raise GraphQLError(str(exc)) from None
    except StoreUnavailable as exc:  # the server's failure, not the query's: its trace id goes along
        from headrace.connectors.serving.tracing import trace_id

        raise GraphQLError(str(exc), extensions={"code": "UNAVAILABLE", "trace_id": trace_id()}) from None


def build_graphql(views: list[ServedView], stores: dict[str, Any], settings: Any, verifier: TokenVerifier,
                  limiter: Any, hub: Any, observe: Callable[[str, int, float], None]) -> GraphQLRouter:
    """The ``/graphql`` router; ``observe(view, status, seconds)`` feeds the server's metrics."""
    rows: dict[str, type] = {}
    wheres: dict[str, type] = {}
    pages: dict[str, type] = {}
    for view in views:
        annotations: dict[str, Any] = {}
        namespace: dict[str, Any] = {}
        for name, ftype in view.view.keys:
            annotations[name] = SCALARS[ftype]
        for name in WINDOW_BOUNDS:
            annotations[name] = str
        for name, ftype in view.view.measures:
            # a top_k measure: its list of {"value": v, "count": n}, most frequent first
            annotations[name] = (JSON if name in view.view.ranked else SCALARS[ftype]) | None
            namespace[name] = None
        doc = f"A row of {view.name} ({view.store}, job {view.job})"
        rows[view.name] = type(type_name(view), (), {"__annotations__": annotations, **namespace, "__doc__": doc})
        wheres[view.name] = strawberry.input(type(f"{type_name(view)}Where", (), {
            "__annotations__": {n: _optional_list(SCALARS[t]) for n, t in view.view.keys},
            **{n: None for n, _ in view.view.keys},
            "__doc__": f"Rows of {view.name} whose keys are among these values"}))
    for view in views:  # nested fields: every view whose keys are among this one's
        own = dict(view.view.keys)
        for other in views:
            theirs = dict(other.view.keys)
            if (theirs and all(own.get(k) is t for k, t in theirs.items()) and graphql_name(other) not in own
                    and graphql_name(other) not in dict(other.view.measures)):
                field = strawberry.field(resolver=_nested(other, rows[other.name], stores, settings),
                                         name=graphql_name(other),
                                         description=f"newest rows of {other.name} with this row's "
                                                     f"{', '.join(theirs)}")
                setattr(rows[view.name], f"_nested_{graphql_name(other)}", field)
    for view in views:
        strawberry.type(rows[view.name])
        pages[view.name] = strawberry.type(type(f"{type_name(view)}Page", (), {
            "__annotations__": {"rows": _list(rows[view.name]), "next_cursor": str | None,
                                "note": str | None},
            "next_cursor": None, "note": None}))

    query_fields = [strawberry.field(resolver=_top(v, rows[v.name], wheres[v.name], pages[v.name], stores, settings),
                                     name=graphql_name(v), description=f"rows of {v.name} ({v.store})")
                    for v in views]
    subscription_fields = [strawberry.subscription(resolver=_subscribe(v, rows[v.name], wheres[v.name], hub, settings),
                                                   name=graphql_name(v),
                                                   description=f"new and updated rows of {v.name} as windows close")
                           for v in views]
    from strawberry.tools import create_type

    query_type = create_type("Query", query_fields)
    subscription_type = create_type("Subscription", subscription_fields)

    class Metrics(SchemaExtension):
        def on_operation(self) -> Any:
            started = time.perf_counter()
            yield
            result = self.execution_context.result
            failed = bool(result is not None and getattr(result, "errors", None))
            observe("graphql", 400 if failed else 200, time.perf_counter() - started)

    class Schema(strawberry.Schema):
        def process_errors(self, errors: list[GraphQLError], execution_context: Any = None) -> None:
            for one in errors:  # a user's mistake or a refusal: one line, no trace
                log.info("graphql: %s", str(one.message).splitlines()[0][:300])

    limits = CostLimit.rule({graphql_name(v) for v in views}, settings.graphql_max_rows, settings.max_rows,
                            settings.graphql_max_depth, settings.graphql_max_fields)
    # parsed and validated documents are cached (the rule is one class, so the cache can hit):
    # dashboards send the same few queries again and again
    # (bodies are at most max_request_bytes, so the caches hold at most 1024 of those; the token
    # bound stops a document of many small tokens before the parser builds it)
    extensions: list[Any] = [lambda: MaxTokensLimiter(max_token_count=settings.graphql_max_fields * 4),
                             lambda: ParserCache(maxsize=1024), lambda: AddValidationRules([limits]),
                             lambda: ValidationCache(maxsize=1024), Metrics]
    schema = Schema(
        query=query_type, subscription=subscription_type, config=StrawberryConfig(auto_camel_case=False),
        extensions=extensions)

    def authorize(authorization: str | None) -> Access:
        return Access(verifier.verify(authorization), settings)

    async def context(connection: HTTPConnection) -> dict[str, Any]:
        if connection.scope["type"] == "websocket":
            return {"access": None, "loaders": {}}  # authenticated by connection_init (on_ws_connect)
        try:
            access = authorize(connection.headers.get("authorization"))
        except Unauthorized:
            observe("graphql", 401, 0.0)
            raise HTTPException(401, "unauthorized", headers={"WWW-Authenticate": "Bearer"}) from None
        if limiter is not None:
            decision = limiter.take(access.who.subject)
            if not decision.admitted:
                observe("graphql", 429, 0.0)
                raise HTTPException(429, "rate limit exceeded", headers={"Retry-After": str(decision.retry_after_s)})
        return {"access": access, "loaders": {}}

    class Router(GraphQLRouter):
        async def on_ws_connect(self, context: Any) -> Any:
            params = context.get("connection_params") or {}
            value = params.get("authorization") or params.get("Authorization") if isinstance(params, dict) else None
            try:
                context["access"] = authorize(value if isinstance(value, str) else None)
            except Unauthorized:
                observe("graphql", 401, 0.0)
                raise ConnectionRejectionError() from None
            if limiter is not None and not limiter.take(context["access"].who.subject).admitted:
                raise ConnectionRejectionError()
            return None

    return Router(schema, context_getter=context, graphql_ide=None,
                  subscription_protocols=[GRAPHQL_TRANSPORT_WS_PROTOCOL])


def _list(item: type) -> Any:
    return list[item]  # type: ignore[valid-type]


def _optional_list(item: type) -> Any:
    return list[item] | None  # type: ignore[valid-type]


def _params(where: Any, keys: list[str]) -> list[tuple[str, str]]:
    out = []
    for name in keys:
        for value in getattr(where, name, None) or []:
            out.append((name, ("true" if value else "false") if isinstance(value, bool) else str(value)))
    return out


def _top(view: ServedView, row: type, where_type: type, page_type: type, stores: dict[str, Any],
         settings: Any) -> Callable[..., Any]:
    keys = [n for n, _ in view.view.keys]

    async def resolve(info: Info, where: Any = None, since: str | None = None, until: str | None = None,
                      sort: str | None = None, limit: int = TOP_LIMIT, after: str | None = None) -> Any:
        access: Access = info.context["access"]

        def read() -> Any:
            params = _params(where, keys)
            params += [(n, v) for n, v in (("since", since), ("until", until), ("sort", sort),
                                           ("cursor", after)) if v is not None]
            params.append(("limit", str(limit)))
            query = parse_query(view, access.scope(view, params), max_rows=settings.max_rows, hidden=access.hidden)
            store = stores.get(view.store)
            if store is None:
                raise BadRequest(f"views in {view.store} are not served")
            return store.read(query)

        body = await asyncio.to_thread(_errors, read)
        return page_type(rows=[row(**r) for r in body["rows"]], next_cursor=body.get("next_cursor"),
                         note=body.get("note"))

    resolve.__name__ = graphql_name(view)  # create_type names fields by their resolver
    resolve.__annotations__ = {"info": Info, "where": where_type | None, "since": str | None, "until": str | None,
                               "sort": str | None, "limit": int, "after": str | None, "return": page_type}
    return resolve


def _nested(view: ServedView, row: type, stores: dict[str, Any], settings: Any) -> Callable[..., Any]:
    keys = tuple(n for n, _ in view.view.keys)

    async def resolve(root: Any, info: Info, since: str | None = None, until: str | None = None,
                      limit: int = NESTED_LIMIT) -> Any:
        access: Access = info.context["access"]
        if not 1 <= limit <= settings.max_rows:
            raise GraphQLError(f"argument 'limit' of {graphql_name(view)}: between 1 and {settings.max_rows}")
        _errors(lambda: access.tenant(view))
        bounds = tuple(_errors(lambda v=v, n=n: instant_ms(v, n)) if v is not None else None  # type: ignore[misc]
                       for n, v in (("since", since), ("until", until)))
        loaders: dict[Any, DataLoader[Any, Any]] = info.context["loaders"]
        signature = (view.name, bounds, limit)
        loader = loaders.get(signature)
        if loader is None:
            hidden = access.hidden

            async def load(wanted: list[tuple[Any, ...]]) -> list[Any]:
                query = RelatedQuery(view=view, key_names=keys, keys=tuple(dict.fromkeys(wanted)),
                                     since_ms=bounds[0], until_ms=bounds[1], limit=limit)
                store = stores[view.store]
                found = await asyncio.to_thread(_errors, lambda: store.read_related(query))
                return [[row(**{k: v for k, v in r.items() if k not in hidden})
                         for r in found.get(key, [])] for key in wanted]
            loader = loaders[signature] = DataLoader(load_fn=load)
        return await loader.load(tuple(getattr(root, k) for k in keys))

    resolve.__name__ = f"nested_{graphql_name(view)}"
    resolve.__annotations__ = {"info": Info, "since": str | None, "until": str | None, "limit": int,
                               "return": _list(row)}
    return resolve


def _subscribe(view: ServedView, row: type, where_type: type, hub: Any, settings: Any) -> Callable[..., Any]:
    keys = [n for n, _ in view.view.keys]

    async def resolve(info: Info, where: Any = None) -> AsyncGenerator[Any, None]:
        access: Access = info.context["access"]
        filters: dict[str, list[Any]] = {k: list(getattr(where, k)) for k in keys
                                          if where is not None and getattr(where, k, None) is not None}
        accept = _errors(lambda: access.rows_filter(view, filters))
        subscription = await hub.subscribe(view, accept)
        try:
            async for batch in subscription.batches():
                for changed in batch:
                    yield row(**changed)
        finally:
            hub.unsubscribe(subscription)

    resolve.__name__ = graphql_name(view)
    resolve.__annotations__ = {"info": Info, "where": where_type | None,
                               "return": AsyncGenerator[row, None]}  # type: ignore[valid-type]
    return resolve
