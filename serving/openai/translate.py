"""OpenAI bodies to the shared request path and back: a request becomes a GenerateRequest (the same
message the gRPC face validates), each candidate run a choice; a Face builds one API's bodies, whole
and as stream chunks."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from serving.generation import CandidateRun, Chunk, Job, Options
from serving.openai.schema import (
    ChatCompletionRequest,
    ChoiceLogprobs,
    CompletionRequest,
    LegacyLogprobs,
    Sampling,
    TokenLogprob,
    TopLogprob,
    Usage,
)
from trimtab.auth import Principal
from trimtab.v1 import common_pb2, inference_pb2

TokenTexts = Callable[[Sequence[int]], list[str]]
# Where the shared path names a GenerateRequest field, the OpenAI body names this one.
FIELD_NAMES = {
    "user_id": "user",
    "prompt.chat.messages": "messages",
    "prompt.text": "prompt",
    "n": "n",
    "version": "model",
    "sampling.temperature": "temperature",
    "sampling.top_p": "top_p",
    "sampling.max_tokens": "max_tokens",
    "sampling.stop": "stop",
    "sampling.seed": "seed",
}
FINISH_REASONS = {"stop": "stop", "length": "length", "blocked": "content_filter"}


def openai_field(field: str, chat: bool = True, token_field: str = "max_tokens") -> str:
    """The OpenAI body's name for a GenerateRequest field ("prompt.chat.messages[2].role" -> "messages[2].role");
    the prompt as a whole is a chat's `messages`, a completion's `prompt`; the token limit as the body named
    it (`token_field`: a chat body may say `max_completion_tokens`)."""
    if field == "prompt":
        return "messages" if chat else "prompt"
    for ours, theirs in FIELD_NAMES.items():
        if field == ours or field.startswith((f"{ours}[", f"{ours}.")):
            return (token_field if theirs == "max_tokens" else theirs) + field[len(ours) :]
    return field


def chat_request(
    body: ChatCompletionRequest, principal: Principal, model_name: str
) -> tuple[inference_pb2.GenerateRequest, Options]:
    request = _generate_request(body, principal, body.token_limit())
    for message in body.messages:
        role = "system" if message.role == "developer" else message.role
        request.prompt.chat.messages.add(role=role, content=message.text())
    if body.steer_targets is not None:
        request.steer_targets.CopyFrom(common_pb2.SteerLMAttributes(**body.steer_targets.model_dump(exclude_none=True)))
    top = (body.top_logprobs or 0) if body.logprobs else 0
    return request, _options(body, model_name, top)


def completion_request(
    body: CompletionRequest, principal: Principal, model_name: str
) -> tuple[inference_pb2.GenerateRequest, Options]:
    request = _generate_request(body, principal, body.max_tokens)
    request.prompt.text = body.text()
    return request, _options(body, model_name, body.logprobs or 0)


def _generate_request(body: Sampling, principal: Principal, max_tokens: int | None) -> inference_pb2.GenerateRequest:
    sampling = common_pb2.SamplingParams(stop=body.stops())
    if body.temperature is not None:
        sampling.temperature = body.temperature
    if body.top_p is not None:
        sampling.top_p = body.top_p
    if max_tokens is not None:
        sampling.max_tokens = max_tokens
    if body.seed is not None:
        sampling.seed = body.seed & (2**63 - 1)  # the proto's seed is below 2^63 (candidate i samples seed + i)
    return inference_pb2.GenerateRequest(
        user_id=body.user or principal.key_name, tenant=body.tenant or principal.tenant, n=body.n, sampling=sampling
    )


def _options(body: Sampling, model_name: str, top_logprobs: int) -> Options:
    return Options(top_logprobs=top_logprobs, version=None if body.model == model_name else body.model)


def usage(job: Job) -> Usage:
    prompt = len(job.valid.prompt_token_ids)
    completion = sum(len(run.token_ids) for run in job.runs)
    return Usage(prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion)


def finish_reason(run: CandidateRun) -> str | None:
    return FINISH_REASONS.get(run.finish_reason or "")


def chat_logprobs(run: CandidateRun, start: int, end: int, token_texts: TokenTexts) -> ChoiceLogprobs:
    """Tokens [start, end) of a candidate with their logprobs (and the likeliest alternatives, if asked)."""
    ids = run.token_ids[start:end]
    tops = run.top_logprobs[start:end] if run.top_logprobs else [() for _ in ids]
    texts = iter(token_texts([*ids, *(token for top in tops for token, _ in top)]))
    tokens = [next(texts) for _ in ids]
    content = []
    for text, logprob, top in zip(tokens, run.logprobs[start:end], tops, strict=True):
        alternatives = [_top(next(texts), value) for _, value in top]
        content.append(TokenLogprob(token=text, logprob=logprob, bytes=list(text.encode()), top_logprobs=alternatives))
    return ChoiceLogprobs(content=content)


def _top(text: str, logprob: float) -> TopLogprob:
    return TopLogprob(token=text, logprob=logprob, bytes=list(text.encode()))


def legacy_logprobs(run: CandidateRun, start: int, end: int, offset: int, token_texts: TokenTexts) -> LegacyLogprobs:
    """The completions API's logprobs: parallel lists, the alternatives as {token: logprob}; `offset`
    is where tokens[start]'s text begins in the choice's text."""
    content = chat_logprobs(run, start, end, token_texts)["content"]
    offsets = []
    for entry in content:
        offsets.append(offset)
        offset += len(entry["token"])
    return LegacyLogprobs(
        tokens=[entry["token"] for entry in content],
        token_logprobs=[entry["logprob"] for entry in content],
        top_logprobs=[{top["token"]: top["logprob"] for top in entry["top_logprobs"]} for entry in content],
        text_offset=offsets,
    )


@dataclass
class Sent:
    """What a stream has sent of one candidate so far."""

    chunks: int = 0
    tokens: int = 0  # tokens whose logprobs went out
    chars: int = 0  # characters of text


@dataclass(frozen=True)
class Face:
    """One API's bodies, whole and as stream chunks: chat completions (`chat`) or completions."""

    chat: bool  # also: the prompt as a whole is `messages` (chat) or `prompt` (completions)
    user: str
    logprobs: bool
    token_texts: TokenTexts
    token_field: str = "max_tokens"  # how the body named its token limit (refusals name it so)

    def whole(self, job: Job) -> dict[str, Any]:
        choices = [self._choice(run, run.answer, 0, len(run.token_ids), 0, final=True) for run in job.runs]
        return self._envelope(job, "chat.completion" if self.chat else "text_completion", choices) | {
            "usage": usage(job)
        }

    def chunk(self, job: Job, chunk: Chunk, sent: Sent) -> dict[str, Any]:
        start, end = sent.tokens, sent.tokens if chunk.tokens_end is None else chunk.tokens_end
        choice = self._choice(chunk.run, chunk.text, start, end, sent.chars, final=chunk.final)
        if self.chat:
            choice["delta"] = {"content": choice.pop("message")["content"]}
            if not sent.chunks:  # OpenAI's first delta of a choice names the role
                choice["delta"]["role"] = "assistant"
        if chunk.tokens_end is None:  # a guard holds text back: its tokens go out with the last chunk
            choice["logprobs"] = None
        sent.chunks, sent.tokens, sent.chars = sent.chunks + 1, end, sent.chars + len(chunk.text)
        return self._envelope(job, self._chunk_object, [choice])

    def usage_chunk(self, job: Job) -> dict[str, Any]:
        return self._envelope(job, self._chunk_object, []) | {"usage": usage(job)}

    @property
    def _chunk_object(self) -> str:
        return "chat.completion.chunk" if self.chat else "text_completion"

    def _choice(self, run: CandidateRun, text: str, start: int, end: int, chars: int, final: bool) -> dict[str, Any]:
        """A choice with tokens [start, end)'s logprobs; `chars`: where `text` begins in the whole answer."""
        logprobs: ChoiceLogprobs | LegacyLogprobs | None = None
        if self.logprobs:
            logprobs = (
                chat_logprobs(run, start, end, self.token_texts)
                if self.chat
                else legacy_logprobs(run, start, end, chars, self.token_texts)
            )
        said = {"message": {"role": "assistant", "content": text}} if self.chat else {"text": text}
        return {
            "index": run.index,
            **said,
            "finish_reason": finish_reason(run) if final else None,
            "logprobs": logprobs,
            "response_id": run.response_id,
        }

    def _envelope(self, job: Job, kind: str, choices: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "id": job.request_id,
            "object": kind,
            "created": job.received_at.seconds,  # one time for a completion and all its chunks
            "model": job.served.version,
            "system_fingerprint": job.served.version,
            "choices": choices,
            "user": self.user,
        }
