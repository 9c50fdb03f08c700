"""Serving's side of the guardrails: input rails on a request's prompt, output rails on each candidate
(the whole text for Generate, a sliding window for GenerateStream), refusals that carry the reason.

A blocked request or response is an answer, not an RPC error: the client gets a refusal naming the
reason code, finish reason BLOCKED and the decisions; the response log keeps the same, plus the tokens
the model actually sampled.
"""

from __future__ import annotations

from dataclasses import dataclass

from guardrails.decisions import Decision, Stage, merge
from guardrails.service import LiveGuardrails
from trimtab.v1 import inference_pb2


@dataclass(frozen=True)
class PromptVerdict:
    request: inference_pb2.GenerateRequest  # the prompt as the engine should see it (PII masked)
    decisions: list[Decision]
    refusal: str | None  # the answer to give instead of generating, when a rail blocked the prompt
    modified: bool


async def check_prompt(rails: LiveGuardrails, request: inference_pb2.GenerateRequest) -> PromptVerdict:
    """Every message of the prompt goes through the input rails: the API is stateless, so earlier
    turns are whatever the client sent and are checked like the last one."""
    checked = inference_pb2.GenerateRequest()
    checked.CopyFrom(request)
    if checked.prompt.WhichOneof("kind") == "chat":
        slots = [(message, "content") for message in checked.prompt.chat.messages]
    else:
        slots = [(checked.prompt, "text")]
    decisions: list[Decision] = []
    modified = False
    for holder, field in slots:
        text = getattr(holder, field)
        result = await rails.check(Stage.INPUT, text)
        decisions.extend(result.decisions)
        if result.text != text:
            setattr(holder, field, result.text)
            modified = True
        if result.blocked:  # refused; what was masked stays masked in the response log
            return PromptVerdict(checked, merge(decisions), rails.refusal(result.reason_code), modified)
    return PromptVerdict(checked, merge(decisions), None, modified)


def last_user_text(request: inference_pb2.GenerateRequest) -> str:
    """What the output rails see as the question a response answers."""
    if request.prompt.WhichOneof("kind") == "chat":
        users = [m.content for m in request.prompt.chat.messages if m.role == "user"]
        return users[-1] if users else ""
    return request.prompt.text


@dataclass(frozen=True)
class GuardedText:
    shown: str  # the candidate's text as the client receives it
    tail: str  # streams: what is still to be sent after the released chunks
    blocked: bool
    decisions: list[Decision]


class OutputGuard:
    """Output rails on one candidate. On a stream, `push` returns only text a window has passed and
    `blocked` turns true when a window is refused: the caller stops generating."""

    def __init__(self, rails: LiveGuardrails, prompt: str, streaming: bool) -> None:
        self._rails = rails
        self._prompt = prompt
        self._stream = rails.output_stream(prompt) if streaming else None

    @property
    def blocked(self) -> bool:
        return self._stream is not None and self._stream.blocked is not None

    async def push(self, text: str) -> str:
        return await self._stream.push(text) if self._stream is not None else ""

    async def finish(self, generated: str) -> GuardedText:
        """The candidate's final text once generation ended (or was stopped by a block)."""
        if self._stream is None:
            result = await self._rails.check(Stage.OUTPUT, generated, self._prompt)
            shown = self._rails.refusal(result.reason_code) if result.blocked else result.text
            return GuardedText(shown, "", result.blocked, merge(result.decisions))
        stream = self._stream
        tail = await stream.close()
        if stream.blocked is not None:
            # What was released stays released; the refusal follows it and ends the candidate.
            tail = ("\n" if stream.released else "") + self._rails.refusal(stream.blocked.reason_code)
            return GuardedText(stream.released + tail, tail, True, merge(stream.decisions))
        return GuardedText(stream.released, tail, False, merge(stream.decisions))
