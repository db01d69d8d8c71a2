"""The profile's ``influx:`` section: the InfluxDB (or a server speaking its write API) holding
InfluxDB views, through its v2 API or 1.x's."""

from __future__ import annotations

from typing import Literal

from headrace.schemas.options import Duration
from headrace.schemas.profile import Section
from pydantic import SecretStr, model_validator


class InfluxConnection(Section):
    """The profile's ``influx:`` section."""

    key = "influx"

    url: str = "http://127.0.0.1:8086"
    mode: Literal["v2", "v1"] = "v2"
    org: str | None = None  # v2
    bucket: str | None = None  # v2
    token: SecretStr | None = None  # v2
    database: str | None = None  # v1
    username: str | None = None  # v1
    password: SecretStr | None = None  # v1
    timeout: Duration = 10_000

    @model_validator(mode="after")
    def _complete(self) -> InfluxConnection:
        if self.mode == "v2" and not self.bucket:
            raise ValueError("mode v2 needs 'bucket' (and usually 'org' and 'token')")
        if self.mode == "v1" and not self.database:
            raise ValueError("mode v1 needs 'database'")
        return self

    def auth_header(self) -> str | None:
        """The Authorization header of InfluxQL reads: a v2 token, or v1 basic credentials."""
        import base64

        if self.mode == "v2" and self.token is not None:
            return f"Token {self.token.get_secret_value()}"
        if self.username:
            secret = self.password.get_secret_value() if self.password else ""
            return "Basic " + base64.b64encode(f"{self.username}:{secret}".encode()).decode()
        return None
