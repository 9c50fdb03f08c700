"""`trimtab model build`: the tiny default model, built from nothing but the synthetic world.

Tokenizer -> small Llama -> SFT on an even mix of response styles -> a Hugging Face directory that
transformers and vLLM both load. The build is cached under a hash of its recipe, the world's config
and the source code that shapes it, and replaces the old directory atomically.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import torch
from rich.console import Console

from learner.batching import tokenize_chat
from learner.runtime import device_and_dtype, seed_everything
from learner.sft import SFTSettings, train_sft
from trimtab.config import TrimtabConfig
from trimtab.durable import keep_copy, replaced_atomically
from trimtab.errors import TrimtabError
from trimtab.simulation.default_model.architecture import generation_config, new_model
from trimtab.simulation.default_model.sampling import StyleStats, sample_with_hf, style_stats
from trimtab.simulation.default_model.tokenizer import train_tokenizer
from trimtab.simulation.world import Split, World

BUILD_FILE = "trimtab_build.json"
EVAL_PROMPTS = 256
# Source that determines the built weights: a change here must rebuild the model.
_RECIPE_SOURCES = (
    "trimtab/simulation/default_model",
    "learner/sft.py",
    "learner/losses/sft.py",
    "learner/batching.py",
    "learner/optim.py",
    "trimtab/simulation/world",
)
_REPO = Path(__file__).resolve().parents[3]

Report = Callable[[str], None]


class ModelBuildError(TrimtabError):
    """The default model could not be built; the message says at which step and why."""


def recipe_hash(config: TrimtabConfig) -> str:
    """Hash of everything the default model's weights depend on."""
    digest = hashlib.sha256()
    digest.update(config.model.recipe.model_dump_json().encode())
    digest.update(config.world.model_dump_json().encode())
    for source in _RECIPE_SOURCES:
        root = _REPO / source
        for path in sorted(root.rglob("*.py")) if root.is_dir() else [root]:
            digest.update(str(path.relative_to(_REPO)).encode() + path.read_bytes())
    return digest.hexdigest()[:16]


def build_info(model_dir: Path) -> dict[str, object] | None:
    """What the build recorded about the model at `model_dir`, or None if trimtab did not build it."""
    try:
        return dict(json.loads((model_dir / BUILD_FILE).read_text()))
    except (OSError, ValueError):
        return None


def build_default_model(config: TrimtabConfig, force: bool = False, report: Report = print) -> Path:
    """Build the default model at config.model.path unless a build of the same recipe is there."""
    target = config.model.path
    wanted = recipe_hash(config)
    info = build_info(target)
    if info is not None and info.get("recipe_hash") == wanted and not force:
        report(f"default model up to date at {target} (recipe {wanted})")
        return target
    if target.exists() and info is None:
        raise ModelBuildError(f"{target} exists and was not built by trimtab; move it or set model.path")
    cache = config.model.build_cache.expanduser() / f"default-{wanted}" if config.model.build_cache else None
    with replaced_atomically(target, "building") as staging:  # readers never see half a model
        if cache is not None and not force and _built(cache, wanted):
            shutil.copytree(cache, staging, dirs_exist_ok=True)
            report(f"default model (recipe {wanted}) copied from the build cache at {cache}")
        else:
            _build_into(staging, config, wanted, report)
            if cache is not None:
                _keep(staging, cache, report)
    report(f"default model written to {target}")
    return target


def _built(directory: Path, wanted_hash: str) -> bool:
    info = build_info(directory)
    return info is not None and info.get("recipe_hash") == wanted_hash


def _keep(build: Path, cache: Path, report: Report) -> None:
    """A copy of `build` in the cache; a cache that cannot be written costs the next checkout a build, no more."""
    try:
        keep_copy(build, cache)
    except OSError as exc:
        report(f"the build cache at {cache} could not be written ({exc}); the next checkout builds again")


def _build_into(out: Path, config: TrimtabConfig, wanted_hash: str, report: Report) -> None:
    recipe = config.model.recipe
    started = time.monotonic()
    device, _ = device_and_dtype(config.learner)
    seed_everything(recipe.seed)
    world = World(config.world)

    report(f"building the default model (recipe {wanted_hash}) into {out}")
    tokenizer = train_tokenizer(world.corpus_text(seed=recipe.seed), recipe.vocab_size)
    model = new_model(recipe, tokenizer)
    model.to(device)  # type: ignore[arg-type]  # transformers wraps .to with a signature mypy misreads
    params = sum(p.numel() for p in model.parameters())
    report(f"tokenizer: {len(tokenizer)} tokens; model: Llama, {params / 1e6:.1f}M parameters")

    corpus = world.sft_corpus(recipe.sft_examples, seed=recipe.seed)
    examples = [tokenize_chat(tokenizer, ex.prompt_messages, ex.response) for ex in corpus]
    too_long = [ex for ex in examples if len(ex) > recipe.max_positions]
    if too_long:
        raise ModelBuildError(f"{len(too_long)} SFT examples exceed max_positions={recipe.max_positions}")
    settings = SFTSettings(recipe.batch_size, recipe.epochs, recipe.lr, recipe.seed, config.learner.log_every_steps)
    result = train_sft(
        model,
        examples,
        tokenizer.pad_token_id,
        settings,
        config.learner.optim,
        device,
        Console(stderr=True),
        metrics_path=out / "sft_metrics.jsonl",
    )
    report(f"SFT: {result.steps} steps, final loss {result.final_loss:.3f}, {result.examples_per_s:.0f} examples/s")

    model.generation_config = generation_config(tokenizer)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)

    prompts = world.sample_prompts(EVAL_PROMPTS, seed=recipe.seed, split=Split.HELDOUT)
    with torch.no_grad():
        responses = sample_with_hf(model, tokenizer, [p.messages for p in prompts], temperature=1.0, seed=recipe.seed)
    stats = style_stats(world, [p.text for p in prompts], responses)
    _write_build_info(out, wanted_hash, config, params, result.final_loss, stats, time.monotonic() - started)
    report(f"held-out sample at T=1 ({len(prompts)} prompts): {stats.describe()}")
    report(f"build took {time.monotonic() - started:.0f}s")


def _write_build_info(
    out: Path, wanted_hash: str, config: TrimtabConfig, params: int, loss: float, stats: StyleStats, seconds: float
) -> None:
    info = {
        "recipe_hash": wanted_hash,
        "recipe": config.model.recipe.model_dump(mode="json"),
        "world_seed": config.world.seed,
        "parameters": params,
        "sft_final_loss": round(loss, 4),
        "heldout_sample_t1": stats.as_dict(),
        "build_seconds": round(seconds, 1),
    }
    (out / BUILD_FILE).write_text(json.dumps(info, indent=2) + "\n")
