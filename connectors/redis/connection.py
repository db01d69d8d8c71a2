"""The profile's ``redis:`` section: the Redis holding Redis views (and enrich's L2 cache and
sources, and serve's shared rate limits), and the redis-py driver, an extra."""

from __future__ import annotations

from typing import Any

from headrace.schemas.errors import ServiceError
from headrace.schemas.options import Duration, Port, Text
from headrace.schemas.profile import Section
from pydantic import SecretStr


def driver() -> Any:
    """redis-py, or one line saying how to install it."""
    try:
        import redis
    except ImportError:
        raise ServiceError("Redis needs the redis-py driver", hint="pip install 'headrace[redis]'") from None
    return redis


class RedisConnection(Section):
    """The profile's ``redis:`` section."""

    key = "redis"

    host: Text = "127.0.0.1"
    port: Port = 6379
    db: int = 0
    username: str | None = None
    password: SecretStr | None = None
    ssl: bool = False
    timeout: Duration = 5_000

    def client_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``redis.Redis`` (the password never enters a string)."""
        kwargs: dict[str, Any] = {"host": self.host, "port": self.port, "db": self.db, "ssl": self.ssl,
                                  "socket_timeout": self.timeout / 1000, "socket_connect_timeout": self.timeout / 1000}
        if self.username:
            kwargs["username"] = self.username
        if self.password is not None:
            kwargs["password"] = self.password.get_secret_value()
        return kwargs
