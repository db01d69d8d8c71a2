"""Token buckets, per token and for the whole service, shared by every ``serve`` process.

A bucket holds up to ``burst`` tokens and refills at ``rate`` per second; a request takes one from
its token's bucket and one from the global bucket, or is refused with the seconds until it could
pass (``Retry-After``). Both buckets are checked and taken by one Lua script in Redis, atomically,
so several processes share them; Redis's own clock (``TIME``) is the clock. When Redis does not
answer, each process falls back to local buckets with the same settings (then the total a fleet
admits is at most processes × the limit) and says so in ``/healthz``.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass
from typing import Any

from headrace.schemas.profile import Profile
from headrace.schemas.serving import RateSettings

# KEYS: the token's bucket, the global bucket; ARGV: rate, burst (token), rate, burst (global)
# A bucket is a hash {tokens, at (µs)}. Returns 0 when admitted, else the µs to wait.
SCRIPT = """
local now = redis.call('TIME')
local t = tonumber(now[1]) * 1000000 + tonumber(now[2])
local function level(key, rate, burst)
  local b = redis.call('HMGET', key, 'tokens', 'at')
  local tokens, at = tonumber(b[1]), tonumber(b[2])
  if tokens == nil then tokens, at = burst, t end
  tokens = math.min(burst, tokens + (t - at) * rate / 1000000)
  return tokens
end
local rates = {tonumber(ARGV[1]), tonumber(ARGV[3])}
local bursts = {tonumber(ARGV[2]), tonumber(ARGV[4])}
local levels = {level(KEYS[1], rates[1], bursts[1]), level(KEYS[2], rates[2], bursts[2])}
local wait = 0
for i = 1, 2 do
  if levels[i] < 1 then wait = math.max(wait, math.ceil((1 - levels[i]) * 1000000 / rates[i])) end
end
if wait == 0 then
  for i = 1, 2 do levels[i] = levels[i] - 1 end
end
for i = 1, 2 do
  redis.call('HSET', KEYS[i], 'tokens', tostring(levels[i]), 'at', tostring(t))
  redis.call('PEXPIRE', KEYS[i], math.ceil(bursts[i] / rates[i] * 1000) + 1000)
end
return wait
"""


@dataclass
class Decision:
    admitted: bool
    retry_after_s: int = 0
    reason: str = ""  # "token" or "global" when refused


class LocalBuckets:
    """The same buckets in this process only (the fallback)."""

    def __init__(self, settings: RateSettings) -> None:
        self.settings = settings
        self.buckets: dict[str, tuple[float, float]] = {}
        self.lock = threading.Lock()

    def take(self, subject: str) -> Decision:
        s = self.settings
        now = time.monotonic()
        with self.lock:
            levels = []
            for key, rate, burst in ((f"t:{subject}", s.per_token, s.per_token_burst), ("g", s.total, s.total_burst)):
                tokens, at = self.buckets.get(key, (float(burst), now))
                levels.append((key, min(burst, tokens + (now - at) * rate), rate))
            short = [(k, lvl, r) for k, lvl, r in levels if lvl < 1]
            if short:
                for key, level, _ in levels:
                    self.buckets[key] = (level, now)
                wait = max((1 - lvl) / r for _, lvl, r in short)
                return Decision(False, max(1, math.ceil(wait)), "token" if short[0][0].startswith("t:") else "global")
            for key, level, _ in levels:
                self.buckets[key] = (level - 1, now)
        return Decision(True)


class RateLimiter:
    """Redis-backed buckets with the local fallback; ``degraded`` says which is in use."""

    @classmethod
    def for_profile(cls, settings: RateSettings, profile: Profile) -> RateLimiter:
        """Buckets shared through the profile's ``redis:`` (every ``serve`` of it), else per process."""
        from headrace.connectors.redis.connection import RedisConnection

        redis = profile.find(RedisConnection)
        return cls(settings, redis.client_kwargs() if redis is not None else None)

    def __init__(self, settings: RateSettings, redis_kwargs: dict[str, Any] | None) -> None:
        self.settings = settings
        self.local = LocalBuckets(settings)
        self.client: Any = None
        self.script: Any = None
        self.degraded: str | None = "no redis in the profile: limits are per process"
        if redis_kwargs is not None:
            import redis

            self.client = redis.Redis(**{**redis_kwargs, "socket_timeout": 0.5, "socket_connect_timeout": 0.5})
            self.script = self.client.register_script(SCRIPT)
            self.degraded = None
        self.retry_at = 0.0

    def take(self, subject: str) -> Decision:
        if self.client is not None and time.monotonic() >= self.retry_at:
            import redis

            s = self.settings
            try:
                wait_us = int(self.script(keys=[f"{s.prefix}token:{subject}", f"{s.prefix}global"],
                                          args=[s.per_token, s.per_token_burst, s.total, s.total_burst]))
                self.degraded = None
                if wait_us == 0:
                    return Decision(True)
                return Decision(False, max(1, math.ceil(wait_us / 1_000_000)), "rate")
            except redis.RedisError as exc:
                self.degraded = f"Redis unavailable ({type(exc).__name__}): limits are per process until it is back"
                self.retry_at = time.monotonic() + 2  # try Redis again in 2 s, not on every request
        return self.local.take(subject)
