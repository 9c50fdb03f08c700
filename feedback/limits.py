"""Sliding-window rate limits in Redis, exact to the millisecond.

Each limited identity has a sorted set of its admitted calls scored by time (Redis server time, so
several service instances agree). A call is admitted when fewer than `max_requests` lie within the
last `window_s`; otherwise it is refused with the time until the oldest leaves the window
(RESOURCE_EXHAUSTED with retry-after). Memory is O(max_requests) per identity.

The per-API-key limit counts every call (retries too: it protects the service); the per-user limit
counts only new submissions and is checked inside the atomic admission script (`feedback.ledger`),
so a retry of an accepted submission always gets its acceptance back.
"""

from __future__ import annotations

from feedback.errors import rate_limited
from feedback.roundtrips import RoundTrips
from trimtab.config.feedback import RateLimit
from trimtab.ids import new_id

# Lua shared by the scripts that limit: redis server time in ms, and the window check. `admit`
# returns -1 when the call was admitted (and recorded), else the milliseconds until a slot frees.
LUA_HELPERS = """
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function admit(key, max_requests, window_ms, member, now)
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window_ms)
  if redis.call('ZCARD', key) >= max_requests then
    local oldest = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
    return math.max(1, tonumber(oldest[2]) + window_ms - now)
  end
  redis.call('ZADD', key, now, member)
  redis.call('PEXPIRE', key, window_ms)
  return -1
end
"""

_ADMIT_SCRIPT = (
    LUA_HELPERS
    + """
return admit(KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3], now_ms())
"""
)


class KeyRateLimiter:
    """The per-API-key limit."""

    def __init__(self, redis: RoundTrips, limit: RateLimit) -> None:
        self._limit = limit
        self._redis = redis
        self._admit = redis.client.register_script(_ADMIT_SCRIPT)

    async def check(self, key: str) -> None:
        """Admit one call on `key` (a Redis key), or raise RESOURCE_EXHAUSTED with retry-after."""
        window_ms = int(self._limit.window_s * 1000)
        wait_ms = int(await self._redis.script(self._admit, [key], [self._limit.max_requests, window_ms, new_id()]))
        if wait_ms >= 0:
            raise rate_limited("API key", wait_ms / 1000)
