"""The rails' policy: the `custom_data` section of the NeMo Guardrails config.yml, checked strictly.

NeMo merges every top-level key it does not know into `custom_data`, so a misspelt key anywhere in
config.yml lands here too and is refused as an unknown key, naming the file.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from trimtab.config.base import Section
from trimtab.config.loader import ConfigError

PiiEntity = Literal["email", "phone", "card", "api_key"]
InputRail = Literal["pii", "jailbreak", "topics"]
OutputRail = Literal["secret", "blocklist", "toxicity", "pii"]
TOPIC_NAME = re.compile(r"[a-z][a-z0-9_]*")


class GuardrailsConfigError(ConfigError):
    """The rails configuration cannot be used; the message names the file and the problem."""


class JailbreakPolicy(Section):
    attacks_file: str = Field(default="attacks.txt", description="Known attack prompts, one a line.")
    threshold: float = Field(
        default=0.65, ge=-1, le=1, description="Block at this cosine similarity to the nearest known attack."
    )


class PiiPolicy(Section):
    input: Literal["mask", "block"] = Field(default="mask", description="PII in a prompt: mask it or refuse.")
    output: Literal["mask", "block"] = Field(default="mask", description="PII in a response: mask it or refuse.")
    entities: tuple[PiiEntity, ...] = Field(
        default=("email", "phone", "card", "api_key"), description="Which kinds of PII are looked for."
    )
    card_luhn: bool = Field(
        default=False, description="Count a digit run as a card number only if its Luhn checksum holds."
    )


class TopicPolicy(Section):
    name: str = Field(description="Lower-case name; the reason code is topic.<name>.")
    keywords: tuple[str, ...] = Field(default=(), description="Words or phrases that name the topic outright.")
    examples: tuple[str, ...] = Field(default=(), description="Prompts on the topic, matched by similarity.")

    @field_validator("name")
    @classmethod
    def _name(cls, name: str) -> str:
        if not TOPIC_NAME.fullmatch(name):
            raise ValueError(f"must be lower-case letters, digits and _, got {name!r}")
        return name

    @model_validator(mode="after")
    def _something_to_match(self) -> TopicPolicy:
        if not self.keywords and not self.examples:
            raise ValueError(f"topic {self.name!r} needs keywords or examples")
        return self


class TopicsPolicy(Section):
    threshold: float = Field(default=0.6, ge=-1, le=1, description="Similarity to a topic example that blocks.")
    blocked: tuple[TopicPolicy, ...] = Field(default=(), description="Topics whose prompts are refused.")


class TermsPolicy(Section):
    action: Literal["mask", "block"] = Field(default="block", description="A blocklisted term: mask it or refuse.")
    terms: tuple[str, ...] = Field(default=(), description="Blocklisted words or phrases (whole words, any case).")
    suite_terms: bool = Field(
        default=True, description="Add the evaluation suite's blocklisted words (suite.protected_terms)."
    )


class SecretPolicy(Section):
    action: Literal["mask", "block"] = Field(default="block", description="A leaked secret: mask it or refuse.")
    secrets: tuple[str, ...] = Field(default=(), description="Strings that must never appear in a response.")
    suite_secrets: bool = Field(
        default=True,
        description="Add the evaluation suite's secrets (suite.protected_terms; a secret's 4+ digit runs also alone).",
    )


class ToxicityPolicy(Section):
    threshold: float = Field(default=0.8, gt=0, lt=1, description="Block a sentence scoring at least this.")
    temperature: float = Field(
        default=0.05, gt=0, description="Softness of the score: sigmoid((toxic - benign similarity) / temperature)."
    )
    toxic_file: str = Field(default="toxic.txt", description="Toxic example sentences, one a line.")
    benign_file: str = Field(default="benign.txt", description="Harmless example sentences, one a line.")


class RailPolicy(Section):
    """Everything the rails decide with. Which rails run, and in which order: `input_rails` and
    `output_rails`, where config.yml's rails.*.flows run the `trimtab input rails` / `trimtab output
    rails` flows (one Colang flow per stage: each flow costs NeMo's runtime several milliseconds of CPU
    a check), or the per-rail flows of rails.co listed there one by one."""

    input_rails: tuple[InputRail, ...] = Field(
        default=("pii", "jailbreak", "topics"),
        description="The input rails the `trimtab input rails` flow runs, in order: a block stops the rest,"
        " a mask hands the masked text on.",
    )
    output_rails: tuple[OutputRail, ...] = Field(
        default=("secret", "blocklist", "toxicity", "pii"),
        description="The output rails the `trimtab output rails` flow runs, in order (as input_rails).",
    )
    refusal: str = Field(
        default="I can't help with that request. (guardrail: {reason})",
        description="The answer a blocked request or response gets; {reason} is the reason code.",
    )
    jailbreak: JailbreakPolicy = Field(default_factory=JailbreakPolicy, description="Prompt-injection rail.")
    pii: PiiPolicy = Field(default_factory=PiiPolicy, description="PII rail, on prompts and responses.")
    topics: TopicsPolicy = Field(default_factory=TopicsPolicy, description="Blocked topics rail.")
    blocklist: TermsPolicy = Field(default_factory=TermsPolicy, description="Blocklisted terms in responses.")
    secret: SecretPolicy = Field(default_factory=SecretPolicy, description="Secret leakage in responses.")
    toxicity: ToxicityPolicy = Field(default_factory=ToxicityPolicy, description="Toxicity score of responses.")

    @field_validator("input_rails", "output_rails")
    @classmethod
    def _each_once(cls, rails: tuple[str, ...]) -> tuple[str, ...]:
        if len(set(rails)) != len(rails):
            raise ValueError(f"names a rail twice: {list(rails)}")
        return rails

    @field_validator("refusal")
    @classmethod
    def _refusal_formats(cls, refusal: str) -> str:
        try:
            refusal.format(reason="x")
        except (KeyError, IndexError, ValueError) as exc:
            raise ValueError(f"must be a format string whose only field is {{reason}} ({exc!r})") from None
        return refusal


def load_policy(config_file: Path, custom_data: dict[str, Any]) -> RailPolicy:
    try:
        return RailPolicy.model_validate(custom_data)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            where = ".".join(str(part) for part in error["loc"])
            reason = "unknown key" if error["type"] == "extra_forbidden" else error["msg"]
            problems.append(f"{config_file}: custom_data.{where}: {reason}")
        raise GuardrailsConfigError("\n".join(problems)) from None


def read_examples(config_dir: Path, name: str) -> list[str]:
    """The lines of an example file (blank lines and # comments skipped); at least one is required."""
    path = config_dir / name
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise GuardrailsConfigError(f"{path}: cannot read example file: {exc.strerror}") from None
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    if not lines:
        raise GuardrailsConfigError(f"{path}: no examples (one a line; # starts a comment)")
    return lines
