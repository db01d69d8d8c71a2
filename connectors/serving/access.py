"""Who may read what: one set of rules for every protocol (REST, GraphQL, gRPC, subscriptions).

A token with a tenant reads only that tenant's rows: the tenant column's filter is replaced by the
token's tenant, and a request naming another tenant is refused (:class:`Forbidden`, 403), never
answered. A view without the tenant column is readable only with the all-tenants role. Roles can
hide measures (the profile's ``serve.hide``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from headrace.connectors.serving.auth import Principal
from headrace.schemas.serving import ServeSettings
from headrace.schemas.views import ServedView


class Forbidden(Exception):
    """A valid token asking for rows it may not read: 403, with nothing of the rows."""


@dataclass(frozen=True)
class Access:
    """The read rights of one principal under the serve settings."""

    who: Principal
    settings: ServeSettings

    @property
    def all_tenants(self) -> bool:
        return self.who.all_tenants(self.settings.auth)

    @property
    def hidden(self) -> frozenset[str]:
        """The measures none of the token's roles may see."""
        return frozenset(m for role in self.who.roles for m in self.settings.hide.get(role, ()))

    def may_read(self, view: ServedView) -> bool:
        return self.all_tenants or (self.who.tenant is not None
                                    and self.settings.tenant_column in dict(view.view.keys))

    def tenant(self, view: ServedView) -> str | None:
        """The tenant every read of ``view`` is restricted to (None: all tenants)."""
        if self.all_tenants:
            return None
        if not self.may_read(view):
            raise Forbidden(f"{self.who.subject} may not read {view.name}")
        return self.who.tenant

    def scope(self, view: ServedView, params: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
        """Request parameters, restricted to the token's tenant."""
        tenant = self.tenant(view)
        if tenant is None:
            return list(params)
        column = self.settings.tenant_column
        if any(v != tenant for k, v in params if k == column):
            raise Forbidden(f"{self.who.subject} asked for another tenant")
        return [(k, v) for k, v in params if k != column] + [(column, tenant)]

    def rows_filter(self, view: ServedView, filters: dict[str, list[Any]]
                    ) -> Callable[[list[dict[str, Any]]], list[dict[str, Any]]]:
        """What a subscriber sees of a batch of changed rows: its filters, its tenant only, no hidden
        measure."""
        tenant = self.tenant(view)
        if tenant is not None:
            column = self.settings.tenant_column
            if any(v != tenant for v in filters.get(column, [])):
                raise Forbidden(f"{self.who.subject} asked for another tenant")
            filters = {**filters, column: [tenant]}
        hidden = self.hidden
        wanted = [(k, set(values)) for k, values in filters.items()]

        def accept(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
            return [{k: v for k, v in row.items() if k not in hidden} for row in rows
                    if all(row.get(k) in values for k, values in wanted)]
        return accept
