"""JWT bearer tokens: who is asking, for which tenant, with which roles.

Every way a token can be wrong (absent, malformed, oversized, expired, not yet valid, ``alg:
none``, an algorithm this server does not accept, a wrong signature, issuer or audience) is one
:class:`Unauthorized` whose message is only for the log: clients get 401 and nothing more.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from headrace.schemas.serving import AuthSettings


class Unauthorized(Exception):
    """A request without a valid token (the reason stays in the log)."""


@dataclass(frozen=True)
class Principal:
    subject: str
    tenant: str | None
    roles: frozenset[str]

    def all_tenants(self, settings: AuthSettings) -> bool:
        return settings.all_tenants_role in self.roles


class TokenVerifier:
    def __init__(self, settings: AuthSettings, base: Path = Path(".")) -> None:
        import jwt

        self.settings = settings
        self.keys: dict[str, Any] = {}
        self.algorithms: list[str] = []
        if settings.hs256_secret is not None:
            self.algorithms.append("HS256")
        if settings.jwks_file:
            path = Path(settings.jwks_file)
            document = json.loads((path if path.is_absolute() else base / path).read_text())
            for key in jwt.PyJWKSet.from_dict(document).keys:
                self.keys[key.key_id or ""] = key.key
            self.algorithms.append("RS256")
        if not self.algorithms:
            raise ValueError("serve.auth needs hs256_secret or jwks_file: every read is authenticated")
        #: tokens verified before, with their expiry: a dashboard sends the same token many times a
        #: second, and checking its signature again would be most of a read's CPU. Bounded; expiry
        #: is checked again on every use.
        self.verified: dict[str, tuple[Principal, float]] = {}

    def verify(self, authorization: str | None) -> Principal:
        if not authorization or not authorization.startswith("Bearer "):
            raise Unauthorized("no bearer token")
        token = authorization[len("Bearer "):].strip()
        known = self.verified.get(token)
        if known is not None and time.time() < known[1] + self.settings.leeway / 1000:
            return known[0]
        principal, expires = self._verify(token)
        if len(self.verified) >= 10_000:
            self.verified.clear()
        self.verified[token] = (principal, expires)
        return principal

    def _verify(self, token: str) -> tuple[Principal, float]:
        import jwt
        if len(token) > self.settings.max_token_bytes:
            raise Unauthorized(f"token of {len(token)} bytes")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError as exc:
            raise Unauthorized(f"malformed: {exc}") from None
        algorithm = header.get("alg")
        if algorithm not in self.algorithms:  # "none" included
            raise Unauthorized(f"algorithm {algorithm!r} not accepted")
        if algorithm == "HS256":
            assert self.settings.hs256_secret is not None
            key: Any = self.settings.hs256_secret.get_secret_value()
        else:
            key = self.keys.get(header.get("kid") or "")
            if key is None and len(self.keys) == 1 and not header.get("kid"):
                key = next(iter(self.keys.values()))
            if key is None:
                raise Unauthorized("unknown key id")
        options: Any = {"require": ["exp", "sub"], "verify_aud": self.settings.audience is not None}
        try:
            claims = jwt.decode(token, key, algorithms=[algorithm], leeway=self.settings.leeway / 1000,
                                issuer=self.settings.issuer, audience=self.settings.audience, options=options)
        except jwt.InvalidTokenError as exc:
            raise Unauthorized(f"{type(exc).__name__}: {exc}") from None
        tenant = claims.get(self.settings.tenant_claim)
        roles = claims.get(self.settings.roles_claim) or []
        if tenant is not None and not isinstance(tenant, str):
            raise Unauthorized("tenant claim is not a string")
        if isinstance(roles, str):
            roles = [roles]
        if not isinstance(roles, list) or not all(isinstance(r, str) for r in roles):
            raise Unauthorized("roles claim is not a list of strings")
        return Principal(subject=str(claims["sub"]), tenant=tenant, roles=frozenset(roles)), float(claims["exp"])
