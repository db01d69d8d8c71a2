"""The profile's ``postgres:`` section: the database holding PostgreSQL views (and the schema
registry's store, and enrich sources), and an optional read replica for ``headrace serve``."""

from __future__ import annotations

from typing import Any

from headrace.schemas.options import Port, Text
from headrace.schemas.profile import Section
from pydantic import SecretStr, field_validator


class PostgresConnection(Section):
    key = "postgres"

    host: Text = "127.0.0.1"
    port: Port = 5432
    database: Text
    user: Text
    password: SecretStr | None = None
    #: a read replica that ``headrace serve`` reads views from (the primary otherwise)
    replica_host: Text | None = None
    replica_port: Port | None = None

    @field_validator("password")
    @classmethod
    def _no_nul(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and "\x00" in value.get_secret_value():
            raise ValueError("a password cannot hold a NUL character (libpq ends it there)")
        return value

    @property
    def jdbc_url(self) -> str:
        return f"jdbc:postgresql://{self.host}:{self.port}/{self.database}"

    @property
    def where(self) -> str:
        return f"{self.host}:{self.port}"

    def conninfo(self, connect_timeout: int = 5) -> dict[str, Any]:
        """Keyword arguments for ``psycopg.connect`` (the password never enters a string)."""
        info: dict[str, Any] = {"host": self.host, "port": self.port, "dbname": self.database,
                                "user": self.user, "connect_timeout": connect_timeout}
        if self.password is not None:
            info["password"] = self.password.get_secret_value()
        return info

    def reader_conninfo(self) -> dict[str, Any]:
        """Where serving reads: the replica when one is named."""
        info = self.conninfo()
        if self.replica_host:
            info.update(host=self.replica_host, port=self.replica_port or self.port)
        return info
