"""The exactly-once ledger: one Redis hash per feedback_id, moving pending -> accepted.

Every call starts with one script (`look`): the per-API-key rate limit, then this feedback_id's entry,
then, for a feedback_id not seen before, the records of the responses it judges. One round trip
decides whether the call is limited, a retry, or new (with what validation needs).

A submission is *admitted* by one atomic Lua script (`reserve`): if the feedback_id is new and the
user is within their rate limit, it records the event to be written (its id, bytes without the
per-user signals, partition, and a `floor` offset below which it cannot land), a lease, and the
second-vote link, training-cap count and agreement tallies. Only then is the event produced. After
the broker's ack, `accept` marks the entry accepted with its offset, raises the partition's floor and
adds the feedback_id to the partition's index of accepted entries by offset (what `feedback.broker_loss`
writes again if the broker loses the log).

Whoever finds an entry pending with its lease expired (the owner died, or gave up on the broker)
takes it over (`take_over`, a compare-and-set on the lease) and must find out from the topic whether
the event was written before writing it (`feedback.recovery`). All times are Redis server time.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import cast

from feedback.abuse import UserCounts
from feedback.keys import PartitionKeys
from feedback.limits import LUA_HELPERS
from feedback.roundtrips import RoundTrips
from trimtab.config.feedback import RateLimit
from trimtab.ids import new_id

PENDING = "pending"
ACCEPTED = "accepted"

# Both scripts that decide a call first check the ledger's epoch (`feedback.redis_loss`): a call never reads or
# admits into a ledger this instance has not checked since Redis lost it.
_EPOCH_CHECK = """
if redis.call('GET', KEYS[{key}]) ~= ARGV[{arg}] then return {{'lost'}} end
"""

# KEYS: key_rate, submission, epoch, the judged responses' record keys. ARGV: max_requests, window_ms, member,
# epoch.
_LOOK = (
    LUA_HELPERS
    + _EPOCH_CHECK.format(key=3, arg=4)
    + """
local now = now_ms()
local wait = admit(KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3], now)
if wait >= 0 then return {'limited', wait} end
local existing = redis.call('HGETALL', KEYS[2])
if #existing > 0 then return {'exists', now, existing} end
return {'new', redis.call('MGET', unpack(KEYS, 4))}
"""
)

# KEYS: submission, user_rate, vote, training, population, agreement, floor, epoch
# ARGV: see Ledger.reserve.
_RESERVE = (
    LUA_HELPERS
    + _EPOCH_CHECK.format(key=8, arg=19)
    + """
local now = now_ms()
local existing = redis.call('HGETALL', KEYS[1])
if #existing > 0 then return {'exists', now, existing} end

local wait = admit(KEYS[2], tonumber(ARGV[7]), tonumber(ARGV[8]), ARGV[9], now)
if wait >= 0 then return {'limited', wait} end

local fid = ARGV[1]
local supersedes = ''
if ARGV[10] == '1' then
  supersedes = redis.call('GET', KEYS[3]) or ''
  redis.call('SET', KEYS[3], fid, 'EX', ARGV[6])
end

local trainable = 0
if ARGV[11] == '1' then
  local window = tonumber(ARGV[12])
  redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', now - window)
  redis.call('ZADD', KEYS[4], now, fid)
  redis.call('PEXPIRE', KEYS[4], window)
  trainable = redis.call('ZCARD', KEYS[4])
end

local polarity = tonumber(ARGV[13])
if polarity ~= 0 then
  local user, mine, theirs = ARGV[14], (polarity > 0) and '+' or '-', (polarity > 0) and '-' or '+'
  local before = redis.call('HGET', KEYS[5], user)
  if not before then
    local same = tonumber(redis.call('HGET', KEYS[5], mine) or '0')
    local other = tonumber(redis.call('HGET', KEYS[5], theirs) or '0')
    if same + other >= tonumber(ARGV[15]) and same ~= other then
      redis.call('HINCRBY', KEYS[6], 'n', 1)
      if same > other then redis.call('HINCRBY', KEYS[6], 'k', 1) end
    end
  else
    -- A changed vote moves the user's place in the tally; their score counted the first vote only.
    redis.call('HINCRBY', KEYS[5], before, -1)
  end
  redis.call('HSET', KEYS[5], user, mine)
  redis.call('HINCRBY', KEYS[5], mine, 1)
  redis.call('EXPIRE', KEYS[5], ARGV[16])
  redis.call('EXPIRE', KEYS[6], ARGV[16])
end
local stats = redis.call('HMGET', KEYS[6], 'n', 'k')

local floor, lease_until = redis.call('GET', KEYS[7]) or '0', now + tonumber(ARGV[17])
local comparable, agreements = stats[1] or '0', stats[2] or '0'
redis.call('HSET', KEYS[1], 'state', 'pending', 'feedback_id', fid, 'fingerprint', ARGV[2], 'event_id', ARGV[3],
  'template', ARGV[4], 'partition', ARGV[5], 'floor', floor, 'lease_until', lease_until, 'owner', ARGV[18],
  'supersedes', supersedes, 'trainable', trainable, 'comparable', comparable, 'agreements', agreements)
redis.call('EXPIRE', KEYS[1], ARGV[6])
-- The caller knows the rest of the entry: return only what admission decided.
return {'reserved', now, floor, lease_until, supersedes, trainable, comparable, agreements}
"""
)

# KEYS: submission. ARGV: lease_ms, new owner. Takes over a pending entry whose lease has expired.
_TAKE_OVER = (
    LUA_HELPERS
    + """
local now = now_ms()
local entry = redis.call('HMGET', KEYS[1], 'state', 'lease_until')
if entry[1] == 'pending' and tonumber(entry[2]) <= now then
  redis.call('HSET', KEYS[1], 'lease_until', now + tonumber(ARGV[1]), 'owner', ARGV[2])
  return {1, now, redis.call('HGETALL', KEYS[1])}
end
return {0, now, redis.call('HGETALL', KEYS[1])}
"""
)

# KEYS: submission. ARGV: owner. The owner knows its event was never handed to the broker.
_RELEASE = """
if redis.call('HGET', KEYS[1], 'state') == 'pending' and redis.call('HGET', KEYS[1], 'owner') == ARGV[1] then
  redis.call('HSET', KEYS[1], 'lease_until', 0)
end
return 1
"""

# KEYS: submission, floor, accepted index. ARGV: offset, index TTL, moved ('1': re-produced after a broker loss).
_ACCEPT = """
local fid = redis.call('HGET', KEYS[1], 'feedback_id')
if fid and (redis.call('HGET', KEYS[1], 'state') == 'pending' or ARGV[3] == '1') then
  redis.call('HSET', KEYS[1], 'state', 'accepted', 'offset', ARGV[1])
  redis.call('ZADD', KEYS[3], ARGV[1], fid)
  redis.call('EXPIRE', KEYS[3], ARGV[2])
end
local next_offset = tonumber(ARGV[1]) + 1
if tonumber(redis.call('GET', KEYS[2]) or '0') < next_offset then redis.call('SET', KEYS[2], next_offset) end
return 1
"""


# KEYS: submission, accepted index, floor. ARGV: the entry's fields (name, value, ...), TTL, offset, floor.
# An entry rebuilt from the topic after Redis lost the ledger (`feedback.redis_loss`); one that exists stays.
_RESTORE = """
if tonumber(redis.call('GET', KEYS[3]) or '0') < tonumber(ARGV[#ARGV]) then redis.call('SET', KEYS[3], ARGV[#ARGV]) end
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV, 1, #ARGV - 3))
redis.call('EXPIRE', KEYS[1], ARGV[#ARGV - 2])
redis.call('ZADD', KEYS[2], ARGV[#ARGV - 1], redis.call('HGET', KEYS[1], 'feedback_id'))
redis.call('EXPIRE', KEYS[2], ARGV[#ARGV - 2])
return 1
"""

# What a rebuilt entry holds instead of the request's fingerprint, which is not on the topic: any retry of its
# feedback_id is answered as the original acceptance.
REBUILT = "rebuilt"


@dataclass(frozen=True)
class Entry:
    """One feedback_id's ledger entry as Redis held it at `now_ms` (Redis time)."""

    state: str
    feedback_id: str
    fingerprint: str
    event_id: str
    template: bytes  # the FeedbackEvent without supersedes and abuse signals
    partition: int
    floor: int
    lease_until_ms: int
    owner: str
    supersedes: str
    counts: UserCounts
    offset: int | None
    now_ms: int

    @property
    def lease_left_s(self) -> float:
        return max(0.0, (self.lease_until_ms - self.now_ms) / 1000)


@dataclass(frozen=True)
class Admission:
    """Everything `reserve` needs to admit one new submission."""

    feedback_id: str
    fingerprint: str
    event_id: str
    template: bytes
    partition: int
    floor_key: str
    user_rate_key: str
    user_rate: RateLimit
    vote_key: str | None  # None: the kind never supersedes (comments)
    training_key: str | None  # None: not trainable (comments)
    training_window_s: float
    population_key: str | None  # None: not comparable with the population
    polarity: int  # +1 / -1 on the population target, 0 if not comparable
    user_field: str  # the user's field in the population hash
    agreement_key: str
    min_population_votes: int
    agreement_ttl_s: int


@dataclass(frozen=True)
class Reserved:
    entry: Entry


@dataclass(frozen=True)
class Existing:
    entry: Entry


@dataclass(frozen=True)
class Limited:
    retry_after_s: float


@dataclass(frozen=True)
class Lost:
    """The ledger's epoch is not the one this instance knows: Redis lost the ledger (`feedback.redis_loss`)."""


@dataclass(frozen=True)
class New:
    """A feedback_id not seen before, and the stored record (bytes) of each judged response, None if absent."""

    records: list[bytes | None]


class Ledger:
    """The scripts above, run through one service's shared round trips."""

    def __init__(self, redis: RoundTrips, lease_s: float, ttl_s: int, epoch_key: str) -> None:
        self._lease_ms = int(lease_s * 1000)
        self._ttl_s = ttl_s
        self._redis = redis
        self.epoch_key = epoch_key
        self.epoch = ""  # the epoch this instance knows (`feedback.redis_loss.RedisLossGuard` sets it)
        self._look = redis.client.register_script(_LOOK)
        self._reserve = redis.client.register_script(_RESERVE)
        self._take_over = redis.client.register_script(_TAKE_OVER)
        self._release = redis.client.register_script(_RELEASE)
        self._accept = redis.client.register_script(_ACCEPT)
        self._restore = redis.client.register_script(_RESTORE)

    async def get(self, key: str) -> Entry | None:
        fields = await self._redis.execute("HGETALL", key)  # bytes: the client does not decode responses
        if not fields:  # the common case, a new feedback_id: no second round trip for the time
            return None
        seconds, micros = await self._redis.execute("TIME")
        flat = [item for pair in fields.items() for item in pair]
        return _entry(cast(list[bytes], flat), seconds * 1000 + micros // 1000)

    async def look(
        self, key: str, key_rate_key: str, key_rate: RateLimit, record_keys: list[str]
    ) -> Limited | Existing | New | Lost:
        """Admit one call under the API key's limit, then: its entry if the feedback_id is known, else the
        judged records (`record_keys`, at least one)."""
        keys = [key_rate_key, key, self.epoch_key, *record_keys]
        args = [key_rate.max_requests, int(key_rate.window_s * 1000), new_id(), self.epoch]
        result = await self._redis.script(self._look, keys, args)
        outcome = result[0].decode()
        if outcome == "lost":
            return Lost()
        if outcome == "limited":
            return Limited(int(result[1]) / 1000)
        if outcome == "exists":
            entry = _entry(result[2], int(result[1]))
            assert entry is not None, "the look script returns the existing entry"
            return Existing(entry)
        return New(list(result[1]))  # Lua turns a missing key's nil into false, redis-py into None

    async def reserve(self, key: str, a: Admission) -> Reserved | Existing | Limited | Lost:
        placeholder = key  # unused key slots still need a name; the flags below keep them untouched
        keys = [key, a.user_rate_key, a.vote_key or placeholder, a.training_key or placeholder]
        keys += [a.population_key or placeholder, a.agreement_key, a.floor_key, self.epoch_key]
        args: list[str | bytes | int] = [a.feedback_id, a.fingerprint, a.event_id, a.template, a.partition]
        args += [self._ttl_s]
        args += [a.user_rate.max_requests, int(a.user_rate.window_s * 1000), new_id()]
        args += [int(a.vote_key is not None), int(a.training_key is not None), int(a.training_window_s * 1000)]
        args += [a.polarity if a.population_key else 0, a.user_field, a.min_population_votes, a.agreement_ttl_s]
        owner = new_id("own_")
        args += [self._lease_ms, owner, self.epoch]
        result = await self._redis.script(self._reserve, keys, args)
        outcome = result[0].decode()
        if outcome == "lost":
            return Lost()
        if outcome == "limited":
            return Limited(int(result[1]) / 1000)
        if outcome == "exists":
            entry = _entry(result[2], int(result[1]))
            assert entry is not None, "the reserve script returns the existing entry"
            return Existing(entry)
        now, floor, lease_until, supersedes, trainable, comparable, agreements = result[1:]
        return Reserved(
            Entry(
                state=PENDING,
                feedback_id=a.feedback_id,
                fingerprint=a.fingerprint,
                event_id=a.event_id,
                template=a.template,
                partition=a.partition,
                floor=int(floor),
                lease_until_ms=int(lease_until),
                owner=owner,
                supersedes=supersedes.decode(),
                counts=UserCounts(int(trainable), int(comparable), int(agreements)),
                offset=None,
                now_ms=int(now),
            )
        )

    async def take_over(self, key: str) -> tuple[bool, Entry | None]:
        """(True, entry) if this caller now owns the expired pending entry; else (False, current entry)."""
        won, now, fields = await self._redis.script(self._take_over, [key], [self._lease_ms, new_id("own_")])
        return bool(won), _entry(fields, int(now))

    async def release(self, key: str, owner: str) -> None:
        """End the owner's lease now: its event was never handed to the broker, so a retry may write it."""
        await self._redis.script(self._release, [key], [owner])

    async def accept(self, key: str, partition: PartitionKeys, offset: int, moved: bool = False) -> None:
        """Record the entry accepted at `offset` (`moved`: written again there after a broker loss)."""
        keys = [key, partition.floor, partition.accepted]
        await self._redis.script(self._accept, keys, [offset, self._ttl_s, int(moved)])

    async def accepted_on(self, partition: PartitionKeys) -> list[tuple[str, int]]:
        """(feedback_id, offset) of every entry accepted on the partition, in offset order."""
        members = await self._redis.execute("ZRANGE", partition.accepted, 0, -1, "WITHSCORES")
        return [(member.decode(), int(score)) for member, score in members]

    async def entries(self, keys: list[str]) -> list[Entry | None]:
        """Many entries, read together (their Redis steps share round trips)."""
        return list(await asyncio.gather(*(self.get(key) for key in keys)))

    async def forget(self, partition: PartitionKeys, feedback_ids: list[str]) -> None:
        """Drop index members whose entries expired (nothing is left to write again)."""
        if feedback_ids:
            await self._redis.execute("ZREM", partition.accepted, *feedback_ids)

    async def restore(self, key: str, partition: PartitionKeys, entry: Entry, ttl_s: int, floor: int) -> bool:
        """Write `entry` (accepted at `entry.offset`) unless the feedback_id has one, index it, raise the floor
        to `floor`: one event of the topic after Redis lost the ledger. Whether it was written."""
        fields: list[str | bytes | int] = ["state", ACCEPTED, "feedback_id", entry.feedback_id]
        fields += ["fingerprint", entry.fingerprint, "event_id", entry.event_id, "template", entry.template]
        fields += ["partition", entry.partition, "floor", entry.floor, "lease_until", 0, "owner", ""]
        fields += ["supersedes", entry.supersedes, "trainable", entry.counts.trainable_in_window]
        fields += ["comparable", entry.counts.comparable, "agreements", entry.counts.agreements]
        fields += ["offset", entry.offset or 0]
        keys = [key, partition.accepted, partition.floor]
        return bool(await self._redis.script(self._restore, keys, [*fields, ttl_s, entry.offset or 0, floor]))

    async def reset_floor(self, partition: PartitionKeys, offset: int) -> None:
        """Set the floor to the partition's end after a broker loss (it only rises otherwise)."""
        await self._redis.execute("SET", partition.floor, offset)


def _entry(flat: list[bytes], now_ms: int) -> Entry | None:
    if not flat:
        return None
    fields = dict(zip(flat[::2], flat[1::2], strict=True))

    def text(name: str) -> str:
        return fields.get(name.encode(), b"").decode()

    def number(name: str) -> int:
        return int(fields.get(name.encode(), b"0"))

    return Entry(
        state=text("state"),
        feedback_id=text("feedback_id"),
        fingerprint=text("fingerprint"),
        event_id=text("event_id"),
        template=fields.get(b"template", b""),
        partition=number("partition"),
        floor=number("floor"),
        lease_until_ms=number("lease_until"),
        owner=text("owner"),
        supersedes=text("supersedes"),
        counts=UserCounts(number("trainable"), number("comparable"), number("agreements")),
        offset=number("offset") if b"offset" in fields else None,
        now_ms=now_ms,
    )
