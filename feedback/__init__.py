"""Feedback ingestion: FeedbackService over gRPC and HTTP/JSON, validated, exactly once, limited against abuse.

`python -m feedback` (or `feedback.server.run(config)`) serves `trimtab.v1.FeedbackService/Submit`
over grpc.aio and the same call as `POST /v1/feedback` with the proto's JSON mapping (aiohttp).
Accepted feedback becomes one `FeedbackEvent` on `kafka.topics.feedback`, keyed by the judged
request's id and carrying the whole response record, so the learner needs nothing else.

Exactly once
------------
"Accepted" means the broker acked the event (acks=all, idempotent producer). A client retries with
the same `feedback_id` until it gets an answer; whatever happened before, the topic must end up with
exactly one event for that id. The idempotent producer only dedupes retries inside one producer
session, and Tansu's transactions do not work (design.md), so the guarantee is built from a Redis
ledger (`feedback.ledger`) plus a look at the topic:

1. Admit: one atomic Lua script creates the feedback_id's entry as *pending* with the event's id and
   bytes, its partition (chosen before sending: murmur2 of the request id, as Kafka's default
   partitioner), a *floor* offset (the partition's highest acked offset + 1 known so far, so the
   event can only land at or after it) and a *lease* (`lease_s`, Redis server time). A second call
   with the same id finds the entry instead and never produces.
2. Produce, wait for the ack (at most `produce_timeout_s`, which is also the producer's delivery
   timeout: a record not acked by then is never written later). The record is handed to the
   producer only while at least 2 x `produce_timeout_s` + 1 s of the lease is left (else the call
   gives up before sending: UNAVAILABLE, and the lease is released).
3. Accept: mark the entry accepted with its offset; raise the partition's floor. Reply.

A crash (or a broker timeout) between 1 and 3 leaves the entry pending. A retry that finds it pending
waits while its lease is live (`in_progress_wait_s`, then UNAVAILABLE with retry-after). Once the
lease has expired (so no write of the event can still be in flight: see step 2), the retry takes the entry
over with a compare-and-set on the lease and reads the partition from the floor to the end
(`feedback.recovery`): if the event is there, the acceptance is recorded and returned
(`replayed = true`); if not, the same event (same event_id) is written now. The crash window between
the broker's ack and step 3 is exactly the case the scan resolves. The end of the partition is the
Fetch high watermark, never ListOffsets/`end_offsets`/`seek_to_end`, which Tansu gets wrong.

Assumptions, stated: the broker does not apply a produce request more than one lease after it was
sent. What happens when a store loses what it held is found and repaired where it can be: a broker
that loses the log has the ledger's events written again (`feedback.broker_loss`); a Redis that comes
back empty has the ledger rebuilt from the topic (`feedback.redis_loss`).

Other rules: a second vote by the same user on the same target is a new event whose `supersedes`
names the earlier one, latest wins (`feedback.votes`); feedback on a response served moments ago whose
record has not landed yet waits for it, or is UNAVAILABLE, never NOT_FOUND (`feedback.records`); rate
limits, the training cap and the agreement score are in `feedback.limits` and `feedback.abuse`.
"""
