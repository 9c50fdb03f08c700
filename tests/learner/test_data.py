"""Training data: the seed JSONL formats, errors that name file:line and the field, prompt masking."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from learner.data import DataError, load_records, tokenize_records
from trimtab.simulation.default_model.tokenizer import train_tokenizer
from trimtab.simulation.world import default_world


def write(tmp_path: Path, *lines: object) -> Path:
    path = tmp_path / "data.jsonl"
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines))
    return path


def test_each_seed_format_loads_and_a_string_prompt_is_one_user_turn(tmp_path: Path) -> None:
    chat = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    pairs = load_records(write(tmp_path, {"prompt": "Hi", "chosen": "Hello!", "rejected": "Go away."}), "dpo")
    assert pairs[0].prompt == [{"role": "user", "content": "Hi"}]
    assert pairs[0].responses == ("Hello!", "Go away.")
    kto = load_records(write(tmp_path, {"prompt": chat, "completion": "Hello!", "label": False}), "kto")
    assert kto[0].prompt == chat and kto[0].responses == ("Hello!",) and kto[0].desirable is False
    sft = load_records(write(tmp_path, {"prompt": "Hi", "response": "Hello!"}, ""), "sft")
    assert len(sft) == 1  # blank lines are not examples


@pytest.mark.parametrize(
    ("algorithm", "bad_line", "expected"),
    [
        ("dpo", {"prompt": "Hi", "chosen": "Hello!"}, "data.jsonl:2: field 'rejected': must be a non-empty string"),
        ("dpo", {"prompt": "Hi", "chosen": "a", "rejected": 3}, "data.jsonl:2: field 'rejected'"),
        ("kto", {"prompt": "Hi", "completion": "a", "label": "yes"}, "data.jsonl:2: field 'label': must be true"),
        ("kto", {"prompt": "Hi", "completion": "a"}, "data.jsonl:2: field 'label'"),
        ("sft", {"prompt": "", "response": "a"}, "data.jsonl:2: field 'prompt'"),
        ("sft", {"prompt": [{"role": "user"}], "response": "a"}, "data.jsonl:2: field 'prompt[0]'"),
        ("sft", {"prompt": "Hi", "response": "a", "score": 1}, "data.jsonl:2: field 'score': unknown for sft"),
        ("sft", "{not json", "data.jsonl:2: not valid JSON"),
        ("sft", "[1, 2]", "data.jsonl:2: expected a JSON object"),
    ],
)
def test_a_bad_line_is_an_error_naming_file_line_and_field(
    tmp_path: Path, algorithm: str, bad_line: object, expected: str
) -> None:
    good = {"sft": {"prompt": "Hi", "response": "a"}, "kto": {"prompt": "Hi", "completion": "a", "label": True}}
    first = good.get(algorithm, {"prompt": "Hi", "chosen": "a", "rejected": "b"})
    with pytest.raises(DataError) as error:
        load_records(write(tmp_path, first, bad_line), algorithm)
    assert expected in str(error.value)
    assert str(tmp_path / "data.jsonl") in str(error.value)


def test_an_empty_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no examples"):
        load_records(write(tmp_path, ""), "dpo")


@pytest.fixture(scope="module")
def tokenizer():  # type: ignore[no-untyped-def]
    return train_tokenizer(default_world().corpus_text(n_examples=300, seed=1), vocab_size=512)


def test_pairs_share_the_masked_prompt_and_count_only_response_tokens(tmp_path: Path, tokenizer) -> None:  # type: ignore[no-untyped-def]
    records = load_records(write(tmp_path, {"prompt": "What is 2 plus 2?", "chosen": "4", "rejected": "5"}), "dpo")
    (example,) = tokenize_records(records, tokenizer, "dpo", max_length=64)
    chosen, rejected = example.sequences
    prompt_length = chosen.loss_mask.index(1)
    assert chosen.input_ids[:prompt_length] == rejected.input_ids[:prompt_length]
    assert sum(chosen.loss_mask) == len(tokenizer("4", add_special_tokens=False)["input_ids"]) + 1  # + end-of-turn


def test_kto_examples_carry_the_next_records_completion_for_the_kl_term(tmp_path: Path, tokenizer) -> None:  # type: ignore[no-untyped-def]
    rows = [{"prompt": f"Q{i}", "completion": f"answer {i}", "label": i % 2 == 0} for i in range(3)]
    examples = tokenize_records(load_records(write(tmp_path, *rows), "kto"), tokenizer, "kto", max_length=64)
    completion_ids = tokenizer("answer 1", add_special_tokens=False)["input_ids"]
    mismatched = examples[0].sequences[1]
    assert mismatched.input_ids[-len(completion_ids) - 1 : -1] == completion_ids
    assert examples[2].sequences[1].input_ids[-2] == tokenizer("answer 0", add_special_tokens=False)["input_ids"][-1]
    assert [e.desirable for e in examples] == [True, False, True]


def test_an_example_over_max_length_is_an_error_naming_its_line(tmp_path: Path, tokenizer) -> None:  # type: ignore[no-untyped-def]
    path = write(tmp_path, {"prompt": "Hi", "response": "ok"}, {"prompt": "Hi", "response": "very long " * 20})
    with pytest.raises(DataError, match=r"data.jsonl:2: \d+ tokens, over learner.train.max_length = 32"):
        tokenize_records(load_records(path, "sft"), tokenizer, "sft", max_length=32)
