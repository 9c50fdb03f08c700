"""Training data from JSONL files in the seed formats, validated line by line, then tokenised.

    SFT, SPIN                        {"prompt": P, "response": "..."}
    SteerLM                          {"prompt": P, "response": "...", "attributes": {"helpfulness": 4, ...}}
    DPO, IPO, ORPO, SimPO, RM        {"prompt": P, "chosen": "...", "rejected": "..."}
    KTO                              {"prompt": P, "completion": "...", "label": true | false}

P is a string (one user turn) or a chat message list [{"role": ..., "content": ...}, ...]. SteerLM's
attributes are rendered into the prompt as the system message of `trimtab.steerlm`, the format serving's
attribute targets use. A bad line is a `DataError` naming file:line and the field, never a skipped
example: silently training on less data than the user gave is worse than stopping.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from transformers import PreTrainedTokenizerBase

from learner.batching import Messages, TokenizedExample, tokenize_chat
from trimtab.jsonl import RecordError, check_fields, prompt_field, read_objects, text_field
from trimtab.steerlm import with_attributes


@dataclass(frozen=True)
class RecordFormat:
    """The fields a line carries besides "prompt"."""

    responses: tuple[str, ...]
    label: bool = False  # KTO: "label", whether the completion is desirable
    attributes: bool = False  # SteerLM: "attributes", the response's scores


DEMONSTRATION = RecordFormat(("response",))
PREFERENCE = RecordFormat(("chosen", "rejected"))
FORMATS: dict[str, RecordFormat] = {
    "sft": DEMONSTRATION,
    "spin": DEMONSTRATION,
    "steerlm": RecordFormat(("response",), attributes=True),
    "dpo": PREFERENCE,
    "ipo": PREFERENCE,
    "orpo": PREFERENCE,
    "simpo": PREFERENCE,
    "rm": PREFERENCE,
    "kto": RecordFormat(("completion",), label=True),
}


# A training file cannot be used; the message says file:line, the field and what is wrong.
DataError = RecordError


@dataclass(frozen=True)
class Record:
    """One validated line: the prompt as chat messages (SteerLM's attributes already rendered into it),
    its responses in the format's order, and for KTO whether the completion is desirable."""

    prompt: Messages
    responses: tuple[str, ...]
    desirable: bool = True
    where: str = ""  # "file:line", for errors found after parsing (e.g. too long once tokenised)
    target: float = 0.0  # a rating's reward-model target (see TrainExample)


@dataclass(frozen=True)
class TrainExample:
    """The token sequences one example trains on, in a fixed order per algorithm:
    SFT, SteerLM, SPIN and online ratings (rm_rating) (response,); pairwise and RM (chosen, rejected);
    KTO (completion, mismatched completion for the KL term). SPIN adds its rejected side (the model's own
    generation) per iteration."""

    sequences: tuple[TokenizedExample, ...]
    desirable: bool = True
    weight: float = 1.0  # scales the example's loss (online learner: abuse signals, importance weights)
    target: float = 0.0  # rm_rating: the rating scaled to [0, 1] (learner.losses.rating_loss)

    def __len__(self) -> int:
        return max(len(sequence) for sequence in self.sequences)


def load_records(path: Path, algorithm: str) -> list[Record]:
    """Every line of `path` as a Record for `algorithm`, or DataError at the first bad one."""
    if algorithm not in FORMATS:
        raise DataError(f"no data format for algorithm {algorithm!r}; known: {', '.join(FORMATS)}")
    form = FORMATS[algorithm]
    records = [_parse_line(where, data, algorithm, form) for where, data in read_objects(path)]
    if not records:
        raise DataError(f"{path}: no examples (the file is empty)")
    return records


def _parse_line(where: str, data: dict[str, Any], algorithm: str, form: RecordFormat) -> Record:
    expected = {
        "prompt",
        *form.responses,
        *(("label",) if form.label else ()),
        *(("attributes",) if form.attributes else ()),
    }
    check_fields(data, expected, where, algorithm)
    prompt: Messages = prompt_field(data, where)
    if form.attributes:
        prompt = _with_attributes(prompt, data, where)
    responses = tuple(text_field(data, name, where) for name in form.responses)
    desirable = _label(data, where) if form.label else True
    return Record(prompt, responses, desirable, where)


def _with_attributes(prompt: Messages, data: dict[str, Any], where: str) -> Messages:
    value = data.get("attributes")
    if not isinstance(value, dict) or not value or not all(type(score) is int for score in value.values()):
        raise DataError(
            f"{where}: field 'attributes': must be a non-empty object of integer scores, got {value!r}"[:200]
        )
    try:
        return with_attributes(prompt, value)
    except ValueError as exc:
        raise DataError(f"{where}: field 'attributes': {exc}") from None


def _label(data: dict[str, Any], where: str) -> bool:
    value = data.get("label")
    if not isinstance(value, bool):
        got = "missing" if "label" not in data else f"got {value!r}"
        raise DataError(f"{where}: field 'label': must be true (desirable) or false (undesirable) ({got})")
    return value


def tokenize_records(
    records: Sequence[Record], tokenizer: PreTrainedTokenizerBase, algorithm: str, max_length: int
) -> list[TrainExample]:
    """TrainExamples with prompt tokens masked (batching.tokenize_chat), or DataError for a too-long one.

    KTO's KL term needs a completion that does not belong to the prompt: example i takes record
    (i + 1) mod N's completion, fixed here once (TRL pairs within each batch instead) so that its
    reference log-prob can be computed once, before training, like every other reference log-prob.
    """
    examples = []
    for i, record in enumerate(records):
        sequences = [tokenize_chat(tokenizer, record.prompt, response) for response in record.responses]
        if algorithm == "kto":
            mismatched = records[(i + 1) % len(records)].responses[0]
            sequences.append(tokenize_chat(tokenizer, record.prompt, mismatched))
        example = TrainExample(tuple(sequences), record.desirable, target=record.target)
        if len(example) > max_length:
            raise DataError(f"{record.where}: {len(example)} tokens, over learner.train.max_length = {max_length}")
        examples.append(example)
    return examples
