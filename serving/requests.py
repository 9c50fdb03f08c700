"""Turning a GenerateRequest into what the engine runs, or an INVALID_ARGUMENT that names the field."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from serving.protocol import Sampling
from trimtab.config import ServingConfig
from trimtab.steerlm import ATTRIBUTES, MAX_SCORE, MIN_SCORE, with_attributes
from trimtab.v1 import common_pb2, inference_pb2

CHAT_ROLES = ("system", "user", "assistant")
MAX_USER_ID_CHARS = 256
MAX_STOP_CHARS = 64
MAX_TEMPERATURE = 2.0


class InvalidArgument(ValueError):
    """A request field is wrong; str() is '<field>: <why>'."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


@dataclass(frozen=True)
class ValidRequest:
    prompt_token_ids: list[int]
    messages: list[dict[str, str]] | None  # the rendered conversation (chat prompts), else None
    sampling: Sampling
    n: int
    steer_targets: dict[str, int]


def validate(
    request: inference_pb2.GenerateRequest,
    config: ServingConfig,
    render_chat: Callable[[Sequence[dict[str, str]]], list[int]],
    encode: Callable[[str], list[int]],
) -> ValidRequest:
    """Check every field; the prompt is tokenised here so its length is checked in tokens."""
    if not request.user_id:
        raise InvalidArgument("user_id", "required: feedback is checked against the user who was served")
    if len(request.user_id) > MAX_USER_ID_CHARS:
        raise InvalidArgument("user_id", f"longer than {MAX_USER_ID_CHARS} characters")
    targets = _steer_targets(request)
    messages: list[dict[str, str]] | None = None
    kind = request.prompt.WhichOneof("kind")
    if kind == "chat":
        messages = with_attributes(_chat_messages(request, config), targets)
        token_ids = render_chat(messages)
    elif kind == "text":
        if targets:
            raise InvalidArgument("steer_targets", "only chat prompts can carry attribute targets")
        token_ids = encode(_prompt_text(request.prompt.text, config))
    else:
        raise InvalidArgument("prompt", "required: set prompt.chat or prompt.text")
    if len(token_ids) > config.max_prompt_tokens:
        raise InvalidArgument("prompt", f"{len(token_ids)} tokens exceeds the limit of {config.max_prompt_tokens}")
    n = request.n or 1
    if n > config.max_candidates:
        raise InvalidArgument("n", f"{n} candidates exceeds the limit of {config.max_candidates}")
    return ValidRequest(token_ids, messages, _sampling(request.sampling, config), n, targets)


def _prompt_text(text: str, config: ServingConfig) -> str:
    if not text.strip():
        raise InvalidArgument("prompt.text", "empty")
    if len(text) > config.max_prompt_chars:
        raise InvalidArgument("prompt.text", f"{len(text)} characters exceeds the limit of {config.max_prompt_chars}")
    return text


def _chat_messages(request: inference_pb2.GenerateRequest, config: ServingConfig) -> list[dict[str, str]]:
    chat = request.prompt.chat.messages
    if not chat:
        raise InvalidArgument("prompt.chat.messages", "empty")
    total = sum(len(m.content) for m in chat)
    if total > config.max_prompt_chars:
        raise InvalidArgument(
            "prompt.chat.messages", f"{total} characters exceeds the limit of {config.max_prompt_chars}"
        )
    for i, message in enumerate(chat):
        if message.role not in CHAT_ROLES:
            raise InvalidArgument(f"prompt.chat.messages[{i}].role", f"{message.role!r} is not one of {CHAT_ROLES}")
    if chat[-1].role != "user" or not chat[-1].content.strip():
        raise InvalidArgument("prompt.chat.messages", "must end with a non-empty user message")
    return [{"role": m.role, "content": m.content} for m in chat]


def _sampling(params: common_pb2.SamplingParams, config: ServingConfig) -> Sampling:
    temperature = params.temperature if params.HasField("temperature") else 1.0
    if not 0.0 <= temperature <= MAX_TEMPERATURE:
        raise InvalidArgument("sampling.temperature", f"must be between 0 and {MAX_TEMPERATURE}, got {temperature:g}")
    top_p = params.top_p if params.HasField("top_p") else 1.0
    if not 0.0 < top_p <= 1.0:
        raise InvalidArgument("sampling.top_p", f"must be in (0, 1], got {top_p:g}")
    top_k = params.top_k if params.HasField("top_k") else 0
    if top_k < 0:
        raise InvalidArgument("sampling.top_k", f"must be 0 (off) or positive, got {top_k}")
    max_tokens = params.max_tokens if params.HasField("max_tokens") else config.default_max_tokens
    if not 1 <= max_tokens <= config.max_tokens_limit:
        raise InvalidArgument(
            "sampling.max_tokens", f"must be between 1 and {config.max_tokens_limit}, got {max_tokens}"
        )
    if len(params.stop) > config.max_stop_sequences:
        raise InvalidArgument(
            "sampling.stop", f"at most {config.max_stop_sequences} stop strings, got {len(params.stop)}"
        )
    for i, stop in enumerate(params.stop):
        if not stop or len(stop) > MAX_STOP_CHARS:
            raise InvalidArgument(f"sampling.stop[{i}]", f"must be 1 to {MAX_STOP_CHARS} characters")
    seed = params.seed if params.HasField("seed") else None
    if seed is not None and seed >= 2**63:
        raise InvalidArgument("sampling.seed", "must be below 2^63")
    return Sampling(temperature, top_p, top_k, max_tokens, tuple(params.stop), seed)


def _steer_targets(request: inference_pb2.GenerateRequest) -> dict[str, int]:
    targets = {
        name: getattr(request.steer_targets, name) for name in ATTRIBUTES if request.steer_targets.HasField(name)
    }
    for name, score in targets.items():
        if not MIN_SCORE <= score <= MAX_SCORE:
            raise InvalidArgument(f"steer_targets.{name}", f"must be between {MIN_SCORE} and {MAX_SCORE}, got {score}")
    return targets
