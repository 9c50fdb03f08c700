"""`trimtab model import`: a model of your own, as a cached Hugging Face directory trimtab serves and trains.

The source is a GGUF file (dequantised to float32 by transformers with the `gguf` package) or a Hugging
Face model directory (validated, then copied so the cache holds every byte it needs). Like the default
model's build, an import is keyed: `trimtab_import.json` records the source's sha256 and the importer's
version, a second import of the same source is a no-op, and a new one replaces the old directory
atomically (written beside it, fsynced, renamed). With a cache (model.build_cache, outside the checkout, as
the default model's builds are), another checkout's import of the same source copies the kept one instead
of converting again.

torch and transformers are imported only where a model is converted or validated, so a mistyped path
fails, and an up-to-date import returns, in about a second.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from trimtab.config.model import VLLM_CPU_HEAD_SIZES
from trimtab.durable import keep_copy, replaced_atomically
from trimtab.errors import TrimtabError

IMPORT_FILE = "trimtab_import.json"
# Bump when what an import writes changes: every cached import is then redone on its next import.
IMPORTER_VERSION = 1
# Where `trimtab model import` puts a model when no --output is given (beside the default model).
MODELS_DIR = Path(".trimtab/models")
_GGUF_MAGIC = b"GGUF"
_WEIGHT_PATTERNS = ("*.safetensors", "pytorch_model*.bin")
# trimtab's own markers: not part of a model, so neither hashed nor copied.
_MARKERS = frozenset({IMPORT_FILE, "trimtab_build.json"})

Report = Callable[[str], None]
SourceKind = Literal["gguf", "hf-directory"]


class ModelImportError(TrimtabError):
    """The model could not be imported; the message names the path and why."""


@dataclass(frozen=True)
class ImportKey:
    """What an import is cached under: a change in either redoes it."""

    source_sha256: str
    importer_version: int = IMPORTER_VERSION


def default_target(source: Path) -> Path:
    """Where an import of `source` goes without --output: MODELS_DIR/<name without extension, lowercased>."""
    name = source.resolve().name.lower()
    return MODELS_DIR / name.removesuffix(".gguf")


def import_info(target: Path) -> dict[str, Any] | None:
    """What the import recorded about the model at `target`, or None if `trimtab model import` did not write it."""
    try:
        return dict(json.loads((target / IMPORT_FILE).read_text()))
    except (OSError, ValueError):
        return None


def source_key(source: Path) -> ImportKey:
    """The cache key of `source`: sha256 of a file's bytes, or of a directory's files' names and bytes."""
    digest = hashlib.sha256()
    if source.is_file():
        _hash_file(source, digest)
    else:
        for path in _model_files(source):
            digest.update(path.relative_to(source).as_posix().encode() + b"\0")
            _hash_file(path, digest)
    return ImportKey(digest.hexdigest())


def import_model(
    source: Path, target: Path, *, cache: Path | None = None, force: bool = False, report: Report = print
) -> Path:
    """Import `source` (a .gguf file or a Hugging Face directory) into `target` unless it is already there;
    from (and into) `cache` when one is given and `force` is not."""
    kind = _source_kind(source)
    key = source_key(source)
    info = import_info(target)
    if info is not None and _matches(info, key) and not force:
        report(f"{target} up to date (imported from {source}, sha256 {key.source_sha256[:16]})")
        return target
    if target.exists() and info is None:
        raise ModelImportError(
            f"{target} exists and was not written by `trimtab model import`; move it or choose another --output"
        )
    kept = cache / f"import-{key.source_sha256[:16]}-v{key.importer_version}" if cache is not None else None
    started = time.monotonic()
    with replaced_atomically(target, "importing") as staging:
        if kept is not None and not force and _matches(import_info(kept) or {}, key):
            shutil.copytree(kept, staging, dirs_exist_ok=True)
            record = import_info(staging) or {}
            (staging / IMPORT_FILE).write_text(json.dumps(record | {"source": str(source.resolve())}, indent=2) + "\n")
            report(f"{source.name} copied from the import cache at {kept}")
        else:
            write = _import_gguf if kind == "gguf" else _copy_hf_directory
            details = write(source, staging, report)
            _warn_if_vllm_cpu_cannot_run(details["head_dim"], source, report)
            seconds = round(time.monotonic() - started)
            record = {"source": str(source.resolve()), "kind": kind, **asdict(key), **details, "seconds": seconds}
            (staging / IMPORT_FILE).write_text(json.dumps(record, indent=2) + "\n")
            if kept is not None:
                _keep(staging, kept, report)
    report(f"imported {source.name} into {target}: {_megabytes(target)}, {time.monotonic() - started:.0f}s")
    return target


def _keep(imported: Path, kept: Path, report: Report) -> None:
    """A copy for other checkouts; a cache that cannot be written costs the next one a conversion, no more."""
    try:
        keep_copy(imported, kept)
    except OSError as exc:
        report(f"the import cache at {kept} could not be written ({exc}); the next checkout converts again")


def _source_kind(source: Path) -> SourceKind:
    if not source.exists():
        raise ModelImportError(f"{source}: no such file or directory")
    if source.is_file():
        with source.open("rb") as handle:
            if handle.read(len(_GGUF_MAGIC)) != _GGUF_MAGIC:
                raise ModelImportError(f"{source}: not a GGUF file (it does not start with the GGUF magic bytes)")
        return "gguf"
    if not (source / "config.json").is_file():
        raise ModelImportError(f"{source}: not a Hugging Face model directory (no config.json)")
    if not any(any(source.glob(pattern)) for pattern in _WEIGHT_PATTERNS):
        raise ModelImportError(f"{source}: no weights (no *.safetensors or pytorch_model*.bin files)")
    return "hf-directory"


def _matches(info: dict[str, Any], key: ImportKey) -> bool:
    return bool(info.get("source_sha256") == key.source_sha256 and info.get("importer_version") == key.importer_version)


def _import_gguf(source: Path, out: Path, report: Report) -> dict[str, Any]:
    """Dequantise a GGUF into a float32 model and its tokenizer, saved as a Hugging Face directory."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import is_gguf_available

    if not is_gguf_available():
        raise ModelImportError(f"{source}: reading GGUF needs the `gguf` package (pip install gguf==0.19.0)")
    report(f"loading and dequantising {source}")
    try:
        tokenizer = AutoTokenizer.from_pretrained(source.parent, gguf_file=source.name)
        loaded = AutoModelForCausalLM.from_pretrained(source.parent, gguf_file=source.name, dtype=torch.float32)
    except Exception as exc:  # transformers and gguf raise many kinds for a file they cannot read
        raise ModelImportError(f"{source}: transformers cannot read this GGUF ({_first_line(exc)})") from exc
    # The loaded model is marked quantised (GGUF) and save_pretrained refuses it: the same weights go into
    # a fresh model of the same config without the quantisation marker.
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict(), strict=True)
    model.tie_weights()
    model.generation_config = loaded.generation_config
    if model.generation_config.eos_token_id is None:
        model.generation_config.eos_token_id = tokenizer.eos_token_id
    del loaded
    parameters = sum(p.numel() for p in model.parameters())
    report(f"saving {config.model_type}, {parameters / 1e6:.1f}M parameters in float32, with its tokenizer")
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    _check_tokenizer_round_trip(tokenizer, out, source, report)
    return {"model_type": config.model_type, "parameters": parameters, "head_dim": _head_dim(config)}


def _check_tokenizer_round_trip(tokenizer: Any, out: Path, source: Path, report: Report) -> None:
    """The saved tokenizer must be the one read from the GGUF: same chat template, same ids, an eos."""
    from transformers import AutoTokenizer, GenerationConfig

    saved = AutoTokenizer.from_pretrained(out)
    probe = "What is the capital of France? 12,345 naïve"
    if saved.chat_template != tokenizer.chat_template or saved.encode(probe) != tokenizer.encode(probe):
        raise ModelImportError(f"{source}: the tokenizer did not survive saving (chat template or ids changed)")
    if GenerationConfig.from_pretrained(out).eos_token_id is None:
        raise ModelImportError(f"{source}: no end-of-sequence token in the GGUF; generation would never stop")
    if tokenizer.chat_template is None:
        report(f"warning: {source} has no chat template; chat requests to it will fail")


def _copy_hf_directory(source: Path, out: Path, report: Report) -> dict[str, Any]:
    """Validate a Hugging Face directory (config, weights, tokenizer), then copy its files."""
    from transformers import AutoConfig, AutoTokenizer
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    try:
        config = AutoConfig.from_pretrained(source)
    except Exception as exc:  # an unknown model_type, a malformed file, ...
        raise ModelImportError(f"{source}/config.json: transformers cannot read it ({_first_line(exc)})") from exc
    if config.model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        raise ModelImportError(f"{source}: a {config.model_type} model is not a causal language model")
    _check_weight_headers(source)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
    except Exception as exc:
        raise ModelImportError(f"{source}: no tokenizer transformers can load ({_first_line(exc)})") from exc
    if tokenizer.chat_template is None:
        report(f"warning: {source} has no chat template; chat requests to it will fail")
    files = _model_files(source)
    report(f"copying {len(files)} files from {source}")
    for path in files:
        copy = out / path.relative_to(source)
        copy.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, copy)  # follows symlinks (a hub snapshot's): the cache holds the bytes
    _ensure_eos_in_generation_config(out, config, tokenizer, source)
    return {"model_type": config.model_type, "head_dim": _head_dim(config)}


def _check_weight_headers(source: Path) -> None:
    from safetensors import safe_open

    for path in sorted(source.glob("*.safetensors")):
        try:
            with safe_open(str(path), framework="pt"):
                pass
        except Exception as exc:  # safetensors raises its own error type for a bad header
            raise ModelImportError(f"{path}: not a readable safetensors file ({_first_line(exc)})") from exc


def _ensure_eos_in_generation_config(out: Path, config: Any, tokenizer: Any, source: Path) -> None:
    """Generation must stop: a generation config with an eos, from the source's own or from its tokenizer."""
    from transformers import GenerationConfig

    has_own = (out / "generation_config.json").is_file()
    generation = GenerationConfig.from_pretrained(out) if has_own else GenerationConfig.from_model_config(config)
    if generation.eos_token_id is None:
        generation.eos_token_id = tokenizer.eos_token_id
    if generation.eos_token_id is None:
        raise ModelImportError(f"{source}: neither its config nor its tokenizer names an end-of-sequence token")
    generation.save_pretrained(out)


def _warn_if_vllm_cpu_cannot_run(head_dim: int, source: Path, report: Report) -> None:
    if head_dim not in VLLM_CPU_HEAD_SIZES:
        sizes = ", ".join(str(size) for size in sorted(VLLM_CPU_HEAD_SIZES))
        report(
            f"warning: {source} has head_dim {head_dim}, which vLLM's CPU attention cannot run "
            f"(it supports {sizes}): serving it on CPU will fail; a GPU or the learner can still use it"
        )


def _head_dim(config: Any) -> int:
    return int(getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads)


def _model_files(directory: Path) -> list[Path]:
    """A model directory's files, in a stable order: hidden ones (.git, .cache) and trimtab's markers left out."""
    return sorted(
        path
        for path in directory.rglob("*")
        if path.is_file()
        and path.name not in _MARKERS
        and not any(part.startswith(".") for part in path.relative_to(directory).parts)
    )


def _hash_file(path: Path, digest: Any) -> None:
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)


def _all_files(directory: Path) -> Iterator[Path]:
    return (path for path in directory.rglob("*") if path.is_file())


def _megabytes(directory: Path) -> str:
    return f"{sum(path.stat().st_size for path in _all_files(directory)) / 1e6:.0f} MB"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
