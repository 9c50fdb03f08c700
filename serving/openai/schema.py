"""The OpenAI API's bodies as trimtab accepts and answers them.

Requests are pydantic models that refuse unknown fields, so a typo is a 400 naming it rather than a
setting silently ignored. Fields of OpenAI's API that trimtab does not implement (tools, penalties,
response formats) are accepted only at their neutral values (null, 0, false, "auto"...): clients that
send the defaults keep working, and one that asks for the feature is told it is not supported.

Responses are TypedDicts: built as plain dicts on the hot path, typed for the checker, and their JSON
schemas (pydantic's TypeAdapter) go into the OpenAPI document. trimtab's extensions: `response_id` on
each choice (what feedback names), `user` (who feedback must come from) and `model` / `system_fingerprint`
carrying the version that answered.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidatorFunctionWrapHandler,
    WrapValidator,
    model_validator,
)
from pydantic_core import PydanticCustomError
from typing_extensions import NotRequired, TypedDict  # noqa: UP035 (pydantic reads TypedDicts from here on 3.11)

MAX_TOP_LOGPROBS = 20  # OpenAI's own limit
UNSUPPORTED = (
    "audio",
    "frequency_penalty",
    "function_call",
    "functions",
    "logit_bias",
    "metadata",
    "modalities",
    "prediction",
    "presence_penalty",
    "reasoning_effort",
    "response_format",
    "service_tier",
    "store",
    "tool_choice",
    "tools",
    "web_search_options",
)
IGNORED = ("parallel_tool_calls",)  # meaningless without tools, whatever its value


def _neutral(value: Any) -> bool:
    """The value a client sends for a feature it does not use."""
    if value is None or value is False:
        return True
    if isinstance(value, bool):
        return False
    if isinstance(value, int | float):
        return value == 0
    if isinstance(value, str):
        return value in ("", "auto", "none", "text")
    return value in ([], {}, {"type": "text"})


# The protobuf fields these values go into: a larger number is a 400 here, not an error in the translation.
UINT32_MAX = 2**32 - 1
Int32 = Annotated[int, Field(ge=-(2**31), le=2**31 - 1)]


def one_of(expected: str) -> WrapValidator:
    """A union field's refusal as the client would read it: the field and what it takes (pydantic's own
    names each member's type after the field, `content.str`, which the body never spells)."""

    def validate(value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        try:
            return handler(value)
        except ValidationError:
            raise PydanticCustomError("one_of", "must be {expected}", {"expected": expected}) from None

    return WrapValidator(validate)


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _null_is_unset(cls, data: Any) -> Any:
        """OpenAI's API and its SDK send `null` for a field left at its default (`n=None`): the same as not
        sending it."""
        if isinstance(data, dict):
            return {key: value for key, value in data.items() if value is not None}
        return data


class StreamOptions(Strict):
    include_usage: bool = Field(default=False, description="Send a last chunk with the request's token usage.")


class TextPart(Strict):
    type: Literal["text"]
    text: str


class Message(Strict):
    role: Literal["system", "developer", "user", "assistant"] = Field(
        description="`developer` is treated as `system`; tool messages are not supported."
    )
    content: Annotated[
        str | list[TextPart],
        one_of("a string or a list of text parts ({'type': 'text', 'text': ...}; images and audio are not supported)"),
    ]
    name: str | None = Field(default=None, description="Accepted and ignored.")

    def text(self) -> str:
        return self.content if isinstance(self.content, str) else "".join(part.text for part in self.content)


class Sampling(Strict):
    """The fields chat completions and completions share."""

    model: str = Field(description="The served model name (routed as usual: current or canary) or a version id.")
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int = Field(
        default=1, ge=1, le=UINT32_MAX, description="Candidates to generate (at most serving.max_candidates)."
    )
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    max_tokens: int | None = Field(
        default=None, ge=1, le=UINT32_MAX, description="Default: serving.default_max_tokens."
    )
    stop: Annotated[str | list[str] | None, one_of("a string or a list of strings")] = None
    seed: int | None = Field(
        default=None,
        ge=-(2**63),
        lt=2**63,
        description="Any int64, as OpenAI's; a negative seed samples as its two's-complement bits without the sign.",
    )
    user: str | None = Field(
        default=None, min_length=1, description="Who is served (canary split, feedback). Default: the API key's name."
    )
    tenant: str | None = Field(
        default=None,
        min_length=1,
        description="trimtab: the tenant served (guardrails per tenant); default the API key's, which only it may be.",
    )

    @model_validator(mode="before")
    @classmethod
    def _unsupported(cls, data: Any) -> Any:
        """OpenAI fields trimtab does not implement: dropped at their neutral values, refused otherwise."""
        if not isinstance(data, dict):
            return data
        for name in UNSUPPORTED:
            if name in data and not _neutral(data[name]):
                raise ValueError(f"{name}: not supported by trimtab (only its default is accepted)")
        return {key: value for key, value in data.items() if key not in UNSUPPORTED + IGNORED}

    @model_validator(mode="after")
    def _stream_options_need_stream(self) -> Sampling:
        if self.stream_options is not None and not self.stream:
            raise ValueError("stream_options: only with stream true")
        return self

    def stops(self) -> list[str]:
        return [self.stop] if isinstance(self.stop, str) else list(self.stop or [])


class SteerTargets(Strict):
    """SteerLM attribute targets, 0-4 each (trimtab's extension, as GenerateRequest.steer_targets)."""

    helpfulness: Int32 | None = None
    correctness: Int32 | None = None
    coherence: Int32 | None = None
    complexity: Int32 | None = None
    verbosity: Int32 | None = None
    toxicity: Int32 | None = None


class ChatCompletionRequest(Sampling):
    """POST /v1/chat/completions."""

    messages: list[Message] = Field(min_length=1)
    steer_targets: SteerTargets | None = Field(
        default=None,
        description="trimtab: SteerLM attribute targets, rendered as a system message the model was trained on.",
    )
    max_completion_tokens: int | None = Field(
        default=None, ge=1, le=UINT32_MAX, description="The newer name of max_tokens."
    )
    logprobs: bool = False
    top_logprobs: int | None = Field(default=None, ge=0, le=MAX_TOP_LOGPROBS)

    @model_validator(mode="after")
    def _consistent(self) -> ChatCompletionRequest:
        if self.max_tokens is not None and self.max_completion_tokens not in (None, self.max_tokens):
            raise ValueError("max_completion_tokens: differs from max_tokens (send one of them)")
        if self.top_logprobs is not None and not self.logprobs:
            raise ValueError("top_logprobs: only with logprobs true")
        return self

    def token_limit(self) -> int | None:
        return self.max_tokens if self.max_tokens is not None else self.max_completion_tokens

    def token_field(self) -> str:
        """The name the body gave its token limit."""
        return "max_completion_tokens" if self.max_tokens is None and self.max_completion_tokens else "max_tokens"


class CompletionRequest(Sampling):
    """POST /v1/completions (one prompt per request)."""

    prompt: Annotated[
        str | Annotated[list[str], Field(min_length=1, max_length=1)],
        one_of("a string or a list of one string (token-id prompts are not supported)"),
    ]
    logprobs: int | None = Field(default=None, ge=0, le=MAX_TOP_LOGPROBS, description="Top tokens per position.")
    echo: Literal[False] = False
    suffix: None = None
    best_of: int | None = Field(default=None, ge=1, description="Only equal to n (no server-side ranking).")

    @model_validator(mode="after")
    def _best_of(self) -> CompletionRequest:
        if self.best_of not in (None, self.n):
            raise ValueError("best_of: only equal to n is supported (trimtab returns every candidate)")
        return self

    def text(self) -> str:
        return self.prompt if isinstance(self.prompt, str) else self.prompt[0]


# Responses.


class TopLogprob(TypedDict):
    token: str
    logprob: float
    bytes: list[int]


class TokenLogprob(TopLogprob):
    top_logprobs: list[TopLogprob]


class ChoiceLogprobs(TypedDict):
    content: list[TokenLogprob]


class AssistantMessage(TypedDict):
    role: Literal["assistant"]
    content: str


class ChatChoice(TypedDict):
    index: int
    message: AssistantMessage
    finish_reason: str | None
    logprobs: ChoiceLogprobs | None
    response_id: str  # trimtab: what feedback names


class Usage(TypedDict):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class ChatCompletion(TypedDict):
    id: str  # trimtab's request id
    object: Literal["chat.completion"]
    created: int
    model: str  # the version that answered
    system_fingerprint: str
    choices: list[ChatChoice]
    usage: Usage
    user: str  # trimtab: the user feedback must come from


class ChunkDelta(TypedDict):
    role: NotRequired[Literal["assistant"]]
    content: NotRequired[str]


class ChunkChoice(TypedDict):
    index: int
    delta: ChunkDelta
    finish_reason: str | None
    logprobs: ChoiceLogprobs | None
    response_id: str


class ChatCompletionChunk(TypedDict):
    id: str
    object: Literal["chat.completion.chunk"]
    created: int
    model: str
    system_fingerprint: str
    choices: list[ChunkChoice]
    usage: NotRequired[Usage | None]
    user: str


class LegacyLogprobs(TypedDict):
    tokens: list[str]
    token_logprobs: list[float]
    top_logprobs: list[dict[str, float]]
    text_offset: list[int]


class CompletionChoice(TypedDict):
    index: int
    text: str
    finish_reason: str | None
    logprobs: LegacyLogprobs | None
    response_id: str


class Completion(TypedDict):
    id: str
    object: Literal["text_completion"]
    created: int
    model: str
    system_fingerprint: str
    choices: list[CompletionChoice]
    usage: NotRequired[Usage | None]
    user: str


class Model(TypedDict):
    id: str
    object: Literal["model"]
    created: int
    owned_by: str
    role: str  # trimtab: "router" (the served name), "current" or "canary"


class ModelList(TypedDict):
    object: Literal["list"]
    data: list[Model]


class ErrorDetail(TypedDict):
    message: str
    type: str
    param: str | None
    code: str | None


class Error(TypedDict):
    error: ErrorDetail
