"""`trimtab model import`: a GGUF file or a Hugging Face directory becomes a cached, self-contained HF
directory, keyed on the source's sha256; a second import of the same source does nothing; what cannot be
imported is refused with one line naming the path and why.

The real model (SmolLM2-135M-Instruct, dequantised from its Q4_1 GGUF) is imported by `make real-model`,
which `make test` runs first: these tests read that cached directory and never dequantise again.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig, LlamaConfig, LlamaForCausalLM

from tests.learner.tiny import make_tiny_model
from trimtab.app.model_import import (
    IMPORT_FILE,
    IMPORTER_VERSION,
    ModelImportError,
    default_target,
    import_info,
    import_model,
    source_key,
)
from trimtab.errors import TrimtabError

REPO = Path(__file__).resolve().parents[2]
REAL_GGUF = REPO / ".trimtab/cache/SmolLM2-135M-Instruct.Q4_1.gguf"
REAL_MODEL = REPO / ".trimtab/models/smollm2-135m-instruct"


@pytest.fixture(scope="module")
def real_model() -> Path:
    """The directory `make real-model` imported, current with the GGUF beside it (else the test fails)."""
    info = import_info(REAL_MODEL)
    if info is None or not REAL_GGUF.is_file():
        pytest.fail(f"no imported real model at {REAL_MODEL}: run `make real-model` (make test does)")
    if (info["source_sha256"], info["importer_version"]) != (source_key(REAL_GGUF).source_sha256, IMPORTER_VERSION):
        pytest.fail(f"{REAL_MODEL} is stale (another GGUF or importer version): run `make real-model`")
    return REAL_MODEL


@pytest.fixture(scope="module")
def tiny_source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small Hugging Face directory (tests that change it work on a copy)."""
    return make_tiny_model(tmp_path_factory.mktemp("tiny") / "tiny-llama")


def _copy(source: Path, directory: Path) -> Path:
    return Path(shutil.copytree(source, directory / source.name))


def _snapshot(directory: Path) -> dict[str, tuple[int, int]]:
    """Each file's inode and mtime: unchanged only if nothing was rewritten or replaced."""
    return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in directory.iterdir()}


def _recorded_sha256(target: Path) -> str:
    info = import_info(target)
    assert info is not None, f"{target} holds no import"
    return str(info["source_sha256"])


def _greedy_answer(model_dir: Path, question: str) -> str:
    """The model's reply to one user turn, through its chat template, greedy, at most 16 tokens."""
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model: Any = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    rendered = tokenizer.apply_chat_template(
        [{"role": "user", "content": question}], add_generation_prompt=True, tokenize=False
    )
    prompt_ids = torch.tensor([tokenizer.encode(str(rendered), add_special_tokens=False)])
    with torch.no_grad():
        output = model.generate(
            prompt_ids, attention_mask=torch.ones_like(prompt_ids), max_new_tokens=16, do_sample=False
        )
    return str(tokenizer.decode(output[0, prompt_ids.shape[1] :], skip_special_tokens=True))


# --- the real model, from its GGUF --------------------------------------------------------------------


def test_real_gguf_import_answers_the_capital_of_france(real_model: Path) -> None:
    assert "Paris" in _greedy_answer(real_model, "What is the capital of France?")


def test_real_gguf_import_keeps_the_chat_template_and_an_eos(real_model: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(real_model)
    assert tokenizer.chat_template is not None and "<|im_start|>" in tokenizer.chat_template  # ChatML
    assert GenerationConfig.from_pretrained(real_model).eos_token_id == tokenizer.eos_token_id
    info = import_info(real_model)
    assert info is not None
    assert (info["kind"], info["model_type"], info["head_dim"]) == ("gguf", "llama", 64)
    assert not (real_model / "config.json").read_text().count("quantization_config")  # a plain float32 model


def test_second_import_of_the_real_gguf_is_a_no_op(real_model: Path) -> None:
    before = _snapshot(real_model)
    lines: list[str] = []
    assert import_model(REAL_GGUF, real_model, report=lines.append) == real_model
    assert len(lines) == 1 and "up to date" in lines[0]
    assert _snapshot(real_model) == before


# --- a Hugging Face directory -------------------------------------------------------------------------


def test_hf_directory_is_copied_into_a_self_contained_cache(tiny_source: Path, tmp_path: Path) -> None:
    # Like a hub snapshot: the weights are a symlink into a blob store the cache must not depend on.
    source = _copy(tiny_source, tmp_path)
    blob = tmp_path / "blobs" / "weights"
    blob.parent.mkdir()
    (source / "model.safetensors").rename(blob)
    (source / "model.safetensors").symlink_to(blob)
    target = import_model(source, tmp_path / "cache" / "tiny", report=lambda line: None)

    assert not (target / "model.safetensors").is_symlink()
    assert (target / "model.safetensors").read_bytes() == blob.read_bytes()
    shutil.rmtree(source)
    shutil.rmtree(blob.parent)
    AutoModelForCausalLM.from_pretrained(target)
    assert AutoTokenizer.from_pretrained(target).chat_template is not None
    info = import_info(target)
    assert info is not None and info["kind"] == "hf-directory"
    assert sorted(p.name for p in target.parent.iterdir()) == ["tiny"]  # no staging directory left behind


def test_second_import_of_the_same_directory_is_up_to_date(tiny_source: Path, tmp_path: Path) -> None:
    target = import_model(tiny_source, tmp_path / "tiny", report=lambda line: None)
    before = _snapshot(target)
    lines: list[str] = []
    import_model(tiny_source, target, report=lines.append)
    assert len(lines) == 1 and f"{target} up to date" in lines[0]
    assert _snapshot(target) == before


def test_changed_source_is_imported_again(tiny_source: Path, tmp_path: Path) -> None:
    source = _copy(tiny_source, tmp_path)
    target = import_model(source, tmp_path / "cache", report=lambda line: None)
    first_key = _recorded_sha256(target)

    make_tiny_model(source, seed=1)  # new weights, same names
    lines: list[str] = []
    import_model(source, target, report=lines.append)

    assert not any("up to date" in line for line in lines)
    assert _recorded_sha256(target) != first_key
    assert (target / "model.safetensors").read_bytes() == (source / "model.safetensors").read_bytes()
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging or retired copy left


def test_force_imports_an_unchanged_source_again(tiny_source: Path, tmp_path: Path) -> None:
    target = import_model(tiny_source, tmp_path / "tiny", report=lambda line: None)
    before = _snapshot(target)
    import_model(tiny_source, target, force=True, report=lambda line: None)
    assert _snapshot(target) != before


def test_another_checkouts_import_of_the_same_source_is_copied_from_the_cache(
    tiny_source: Path, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    first = import_model(tiny_source, tmp_path / "one" / "tiny", cache=cache, report=lambda line: None)
    [kept] = cache.iterdir()
    assert kept.name == f"import-{source_key(tiny_source).source_sha256[:16]}-v{IMPORTER_VERSION}"

    lines: list[str] = []
    second = import_model(tiny_source, tmp_path / "two" / "tiny", cache=cache, report=lines.append)
    assert any(f"copied from the import cache at {kept}" in line for line in lines), lines
    model_files = sorted(p.name for p in first.iterdir() if p.name != IMPORT_FILE)
    assert sorted(p.name for p in second.iterdir() if p.name != IMPORT_FILE) == model_files
    assert all((second / name).read_bytes() == (first / name).read_bytes() for name in model_files)
    info = import_info(second)
    assert info is not None and info["source"] == str(tiny_source.resolve())
    assert _recorded_sha256(second) == source_key(tiny_source).source_sha256


def test_a_cached_import_of_another_source_is_not_used(tiny_source: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    source = _copy(tiny_source, tmp_path)
    import_model(source, tmp_path / "one", cache=cache, report=lambda line: None)
    make_tiny_model(source, seed=1)  # new weights: another key, converted again and kept beside the first
    lines: list[str] = []
    target = import_model(source, tmp_path / "two", cache=cache, report=lines.append)
    assert not any("copied from the import cache" in line for line in lines)
    assert (target / "model.safetensors").read_bytes() == (source / "model.safetensors").read_bytes()
    assert len(list(cache.iterdir())) == 2


def test_head_dim_vllm_cpu_cannot_run_is_imported_with_a_warning(tiny_source: Path, tmp_path: Path) -> None:
    source = tmp_path / "head-dim-16"
    tokenizer = AutoTokenizer.from_pretrained(tiny_source)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2
    )
    LlamaForCausalLM(config).save_pretrained(source)
    tokenizer.save_pretrained(source)
    lines: list[str] = []

    import_model(source, tmp_path / "cache", report=lines.append)

    warnings = [line for line in lines if line.startswith("warning:")]
    assert len(warnings) == 1 and "head_dim 16" in warnings[0] and "vLLM's CPU attention" in warnings[0]
    assert import_info(tmp_path / "cache") is not None


def test_default_target_is_the_source_name_lowercased_without_gguf() -> None:
    assert default_target(Path("x/SmolLM2-135M-Instruct.Q4_1.gguf")) == Path(
        ".trimtab/models/smollm2-135m-instruct.q4_1"
    )
    assert default_target(Path("/models/Llama-3.2-1B/")) == Path(".trimtab/models/llama-3.2-1b")


# --- what cannot be imported --------------------------------------------------------------------------


def _bad_source(case: str, tmp_path: Path, tiny_source: Path) -> tuple[Path, Path]:
    """The source and target of each refusal in REFUSALS."""
    target = tmp_path / "out"
    if case == "missing source":
        return tmp_path / "nowhere.gguf", target
    if case == "not a gguf file":
        (tmp_path / "notes.gguf").write_text("hello")
        return tmp_path / "notes.gguf", target
    if case == "unreadable gguf":
        (tmp_path / "broken.gguf").write_bytes(b"GGUF" + bytes(64))
        return tmp_path / "broken.gguf", target
    if case == "directory without config":
        (tmp_path / "empty").mkdir()
        return tmp_path / "empty", target
    assert case == "target owned by something else"
    target.mkdir()
    (target / "README").write_text("someone else's")
    return tiny_source, target


REFUSALS = {
    "missing source": ("nowhere.gguf", "no such file or directory"),
    "not a gguf file": ("notes.gguf", "not a GGUF file"),
    "unreadable gguf": ("broken.gguf", "transformers cannot read this GGUF"),
    "directory without config": ("empty", "not a Hugging Face model directory (no config.json)"),
    "target owned by something else": ("out", "was not written by `trimtab model import`"),
}


@pytest.mark.parametrize("case", list(REFUSALS))
def test_refusal_is_a_one_line_error_naming_the_path(case: str, tmp_path: Path, tiny_source: Path) -> None:
    source, target = _bad_source(case, tmp_path, tiny_source)
    path_name, why = REFUSALS[case]
    with pytest.raises(ModelImportError) as raised:
        import_model(source, target, report=lambda line: None)
    assert isinstance(raised.value, TrimtabError)
    message = str(raised.value)
    assert "\n" not in message and path_name in message and why in message
    if case == "target owned by something else":
        assert (target / "README").read_text() == "someone else's"  # left alone


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "trimtab.app.cli", "model", "import", *args]
    env = os.environ | {"TRIMTAB_MODEL__BUILD_CACHE": str(cwd / "import-cache")}  # not the user's cache
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300, check=False)


@pytest.mark.parametrize("case", ["missing source", "not a gguf file", "target owned by something else"])
def test_cli_refusal_exits_1_with_one_line_on_stderr(case: str, tmp_path: Path, tiny_source: Path) -> None:
    source, target = _bad_source(case, tmp_path, tiny_source)
    result = _cli(str(source), "--output", str(target), cwd=tmp_path)
    path_name, why = REFUSALS[case]
    assert result.returncode == 1
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("trimtab: ") and path_name in lines[0] and why in lines[0]


def test_cli_prints_only_the_output_directory_on_stdout(tiny_source: Path, tmp_path: Path) -> None:
    result = _cli(str(tiny_source), cwd=tmp_path)  # default --output: .trimtab/models/<name>
    assert result.returncode == 0, result.stderr
    assert result.stdout == ".trimtab/models/tiny-llama\n"
    assert json.loads((tmp_path / ".trimtab/models/tiny-llama" / IMPORT_FILE).read_text())["kind"] == "hf-directory"
    assert "imported tiny-llama" in result.stderr
    assert [p.name.startswith("import-") for p in (tmp_path / "import-cache").iterdir()] == [True]  # kept
