"""Each accepted feedback as OpenTelemetry `gen_ai.evaluation.result` events: a user's judgement is an
evaluation of a served response, so a trace backend shows it beside that response's generation.

The event and its attributes are those of OpenTelemetry's GenAI semantic conventions as the pinned
`opentelemetry-semantic-conventions` (0.66b2, schema 1.44.0) names them. Each event carries
`gen_ai.response.id` (the judged response: the conventions' correlation when the event cannot be
parented to the generation span, which lives in serving) and is emitted inside the `feedback.Submit`
span, which links to that generation's trace. One event per judged response and score: a pairwise
vote is two (preferred, not preferred), SteerLM attributes one per attribute.

Evaluation names (`gen_ai.evaluation.name`) and their scores:
    user.thumb        1.0 "up" | -1.0 "down"
    user.preference   1.0 "preferred" | 0.0 "not_preferred" | 0.5 "tie"   (pairwise, per response)
    user.rating       the rating (feedback.rating_min..rating_max)
    steerlm.<name>    the attribute's value (helpfulness, correctness, ...)
    user.correction   no score, label "corrected" (the corrected text is not copied into telemetry)
    user.comment      no score, label "commented" (nor is the comment)
"""

from __future__ import annotations

from dataclasses import dataclass

from opentelemetry._logs import Logger, get_logger
from opentelemetry.semconv._incubating.attributes.gen_ai_attributes import (
    GEN_AI_EVALUATION_NAME,
    GEN_AI_EVALUATION_SCORE_LABEL,
    GEN_AI_EVALUATION_SCORE_VALUE,
    GEN_AI_OPERATION_NAME,
    GEN_AI_RESPONSE_ID,
)

from feedback.validation import kind_of
from trimtab.v1 import feedback_pb2

EVENT = "gen_ai.evaluation.result"
# The operation that produced what was judged: serving answers chat and text completions alike;
# the conventions require the attribute, and "chat" is what nearly every judged answer was.
OPERATION = "chat"


@dataclass(frozen=True)
class EvaluationResult:
    name: str
    response_id: str
    score: float | None
    label: str | None

    def attributes(self, feedback_id: str) -> dict[str, str | float]:
        attributes: dict[str, str | float] = {
            GEN_AI_EVALUATION_NAME: self.name,
            GEN_AI_OPERATION_NAME: OPERATION,
            GEN_AI_RESPONSE_ID: self.response_id,
            "trimtab.feedback.id": feedback_id,
        }
        if self.score is not None:
            attributes[GEN_AI_EVALUATION_SCORE_VALUE] = self.score
        if self.label is not None:
            attributes[GEN_AI_EVALUATION_SCORE_LABEL] = self.label
        return attributes


def evaluation_results(request: feedback_pb2.SubmitRequest) -> list[EvaluationResult]:
    """What a (shape-checked) submission says about each response it judges."""
    label, response = request.label, request.response_id
    kind = kind_of(request)
    if kind == "thumb":
        up = label.thumb == feedback_pb2.THUMB_UP
        return [EvaluationResult("user.thumb", response, 1.0 if up else -1.0, "up" if up else "down")]
    if kind == "pairwise":
        pair = label.pairwise
        if pair.tie:
            judged = (pair.chosen_response_id, pair.rejected_response_id)
            return [EvaluationResult("user.preference", r, 0.5, "tie") for r in judged]
        return [
            EvaluationResult("user.preference", pair.chosen_response_id, 1.0, "preferred"),
            EvaluationResult("user.preference", pair.rejected_response_id, 0.0, "not_preferred"),
        ]
    if kind == "rating":
        return [EvaluationResult("user.rating", response, float(label.rating), None)]
    if kind == "attributes":
        return [
            EvaluationResult(f"steerlm.{field.name}", response, float(value), None)
            for field, value in label.attributes.ListFields()
        ]
    if kind == "correction":
        return [EvaluationResult("user.correction", response, None, "corrected")]
    return [EvaluationResult("user.comment", response, None, "commented")]


class EvaluationEvents:
    """Emits the events through the process's OpenTelemetry logger provider (`telemetry.events`)."""

    def __init__(self, logger: Logger | None = None) -> None:
        self._logger = logger or get_logger("trimtab.feedback")

    def accepted(self, request: feedback_pb2.SubmitRequest) -> None:
        """Call inside the Submit span: the events take its trace and span ids."""
        if not self._logger.enabled(event_name=EVENT):
            return
        for result in evaluation_results(request):
            self._logger.emit(event_name=EVENT, attributes=result.attributes(request.feedback_id))
