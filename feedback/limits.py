"""Sliding-window rate limits in Redis, exact to the millisecond.

Each limited identity has a sorted set of its admitted calls scored by time (Redis server time, so
several service instances agree). A call is admitted when fewer than `max_requests` lie within the
last `window_s`; otherwise it is refused with the time until the oldest leaves the window
(RESOURCE_EXHAUSTED with retry-after). Memory is O(max_requests) per identity.

The per-API-key limit counts every call (retries too: it protects the service) and is checked first
in the ledger's `look` script; the per-user limit counts only new submissions and is checked inside
the atomic admission script (`feedback.ledger`), so a retry of an accepted submission always gets its
acceptance back.
"""

from __future__ import annotations

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
