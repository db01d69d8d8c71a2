"""The profile's ``postgres:`` section: the database holding PostgreSQL views (and the schema
registry's store, and enrich sources), and an optional read replica for ``headrace serve``."""

from __future__ import annotations

from typing import Any

from headrace.schemas.profile import Section
from pydantic import SecretStr


class PostgresConnection(Section):
    key = "postgres"

    host: str = "127.0.0.1"
    port: int = 5432
    database: str
    user: str
    password: SecretStr | None = None
    #: a read replica that ``headrace serve`` reads views from (the primary otherwise)
    replica_host: str | None = None
    replica_port: int | None = None

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
