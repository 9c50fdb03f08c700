"""Owner-checked Redis lock scripts: one instance at a time does a recovery (`feedback.broker_loss`,
`feedback.redis_loss`). The lock is `SET key owner NX PX ms`; only its owner may renew or release it, so an
owner whose lock expired under it cannot take another's."""

from __future__ import annotations

RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""
