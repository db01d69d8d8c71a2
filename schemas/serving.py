"""The profile's ``serve:`` section: where ``headrace serve`` listens, who may read what, how fast.

The stores' own reading settings (a PostgreSQL read replica, say) live in their sections."""

from __future__ import annotations

from headrace.schemas.options import Duration, Identifier, Port, SpecModel, Text
from pydantic import Field, SecretStr, field_validator


class AuthSettings(SpecModel):
    """JWT bearer tokens: HS256 with a shared secret, or RS256 with public keys from a JWKS file."""

    #: at least 16 characters (e.g. 'openssl rand -hex 32'): a short one can be guessed offline from any token
    hs256_secret: SecretStr | None = None
    jwks_file: str | None = None
    issuer: str | None = None
    audience: str | None = None
    #: the claim naming the tenant whose rows a token may read, and the one listing its roles
    tenant_claim: str = "tenant"
    roles_claim: str = "roles"
    #: a token with this role reads every tenant's rows (and views without a tenant column)
    all_tenants_role: str = "all_tenants"
    leeway: Duration = 5_000
    max_token_bytes: int = Field(default=8192, ge=256)

    @field_validator("hs256_secret")
    @classmethod
    def _long_enough(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < 16:
            raise ValueError("an HS256 secret has at least 16 characters (e.g. 'openssl rand -hex 32'): "
                             "a short one can be guessed offline from any token")
        return value


class RateSettings(SpecModel):
    """Token buckets: per token (its subject) and for the whole service, shared by every ``serve``
    process through Redis (the profile's ``redis:``), with a local bucket when Redis is away."""

    per_token: float = Field(default=50.0, gt=0)  # requests per second
    per_token_burst: int = Field(default=100, ge=1)
    total: float = Field(default=1000.0, gt=0)
    total_burst: int = Field(default=2000, ge=1)
    prefix: str = "headrace:rate:"


class ServeSettings(SpecModel):
    host: Text = "127.0.0.1"
    port: Port = 8700
    auth: AuthSettings = AuthSettings()
    rate: RateSettings | None = None
    #: the key column holding the tenant: a view with it is filtered to the token's tenant
    tenant_column: Identifier = "tenant_id"
    #: role → measures that role does not see (a token with several roles sees what none hides)
    hide: dict[str, list[Identifier]] = Field(default_factory=dict)
    #: how long one read may take before it is refused with 503
    timeout: Duration = 5_000
    max_rows: int = Field(default=1000, ge=1)
    #: GraphQL: the deepest nesting and the most rows one query may ask for (limits multiplied)
    graphql_max_depth: int = Field(default=6, ge=2)
    graphql_max_rows: int = Field(default=10_000, ge=1)
    #: GraphQL: the most fields and fragment spreads one query may hold once its fragments are
    #: expanded (a "fragment bomb" of 23 fragments, each spreading the next twice, expands to 2^23),
    #: and the largest request body (bytes) any endpoint reads: bigger is refused with 400 unread
    graphql_max_fields: int = Field(default=2_000, ge=10)
    max_request_bytes: int = Field(default=65_536, ge=1024)
    #: gRPC (schemas/views.proto) listens here; 0 turns it off (default: port + 1)
    grpc_port: int | None = Field(default=None, ge=0, le=65535)
    #: OpenTelemetry: where request traces go, over OTLP/HTTP (a collector, e.g. http://otel:4318);
    #: default: $OTEL_EXPORTER_OTLP_ENDPOINT, else nowhere (trace ids still in logs and 5xx bodies)
    otlp_endpoint: str | None = Field(default=None, pattern=r"^https?://")
    #: how often subscriptions look for changes when no notice wakes them
    changes_interval: Duration = 1_000
