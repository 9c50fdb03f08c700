"""The FeedbackEvent for a submission: a self-contained training example, and the submission's fingerprint.

The event carries the whole response record (prompt, every candidate with its text, versions and
version spans, tokens and serving-time logprobs, tenant, user, timestamps) so the learner needs no
Redis. It is built in two steps: the `template` (everything known before admission) is stored in the
ledger, and `finish` adds what admission decided (the superseded vote, the abuse signals). A
recovered submission is finished from the same stored values.
"""

from __future__ import annotations

import hashlib

from google.protobuf.timestamp_pb2 import Timestamp

from feedback.abuse import UserCounts, signals
from feedback.validation import judged_response_ids
from guardrails.training import violations
from trimtab.config.feedback import FeedbackConfig
from trimtab.v1 import events_pb2, feedback_pb2


def fingerprint(request: feedback_pb2.SubmitRequest, tenant: str) -> str:
    """What "the same content" means for a feedback_id: everything the client sent but the id, and the
    tenant it acts for (so the same id from another tenant is a different submission: ALREADY_EXISTS)."""
    content = feedback_pb2.SubmitRequest()
    content.CopyFrom(request)
    content.feedback_id = ""
    digest = hashlib.sha256(tenant.encode() + b"\x00")
    digest.update(content.SerializeToString(deterministic=True))
    return digest.hexdigest()


def template(
    request: feedback_pb2.SubmitRequest, served: events_pb2.ResponseLogged, event_id: str
) -> events_pb2.FeedbackEvent:
    """The event as known before admission (no supersedes, no abuse signals). It says whether a guardrail
    stopped the judged response(s), so the learner never trains them as positive examples."""
    accepted_at = Timestamp()
    accepted_at.GetCurrentTime()
    return events_pb2.FeedbackEvent(
        event_id=event_id,
        feedback_id=request.feedback_id,
        user_id=request.user_id,
        response_id=request.response_id,
        label=request.label,
        accepted_at=accepted_at,
        served=served,
        guardrails=violations(served, judged_response_ids(request)),
    )


def finish(stored: bytes, supersedes: str, counts: UserCounts, config: FeedbackConfig) -> events_pb2.FeedbackEvent:
    """The event to write: the stored template plus what admission decided."""
    event = events_pb2.FeedbackEvent()
    event.ParseFromString(stored)
    event.supersedes = supersedes
    event.abuse.CopyFrom(signals(counts, config))
    return event
