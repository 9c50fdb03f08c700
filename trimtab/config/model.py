"""Which model serves, and the recipe of the tiny default model trimtab builds for itself."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, model_validator

from trimtab.config.base import Section

# Head sizes vLLM's CPU attention kernels accept (design.md: head_dim 16 dies on first generate).
VLLM_CPU_HEAD_SIZES = frozenset({32, 64, 80, 96, 112, 128, 160, 192, 224, 256, 512})


class DefaultModelRecipe(Section):
    """Everything that determines the default model; its hash keys the build cache."""

    seed: int = Field(default=1234, description="Seed of the corpus sample, init and data order.")
    vocab_size: int = Field(default=1024, ge=128, description="Target BPE vocabulary size (incl. specials).")
    hidden_size: int = Field(default=256, ge=32, description="Model width.")
    num_layers: int = Field(default=6, ge=1, description="Transformer blocks.")
    num_heads: int = Field(default=4, ge=1, description="Attention heads; hidden_size / num_heads is head_dim.")
    intermediate_size: int = Field(default=1024, ge=32, description="MLP width.")
    max_positions: int = Field(default=256, ge=32, description="Longest sequence the model supports.")
    sft_examples: int = Field(default=12_000, ge=100, description="SFT examples drawn from the world corpus.")
    epochs: int = Field(default=1, ge=1, description="Passes over the SFT examples.")
    batch_size: int = Field(default=32, ge=1, description="Sequences per optimiser step.")
    lr: float = Field(default=2e-3, gt=0, description="Peak SFT learning rate.")

    @model_validator(mode="after")
    def _head_dim_vllm_supports(self) -> DefaultModelRecipe:
        head_dim, rest = divmod(self.hidden_size, self.num_heads)
        if rest or head_dim not in VLLM_CPU_HEAD_SIZES:
            raise ValueError(
                f"hidden_size/num_heads = {self.hidden_size}/{self.num_heads} must be a whole head size "
                f"vLLM's CPU attention supports: {sorted(VLLM_CPU_HEAD_SIZES)}"
            )
        return self


class ModelConfig(Section):
    """The model trimtab serves and starts learning from."""

    path: Path = Field(
        default=Path(".trimtab/models/default"),
        description="Hugging Face model directory. The default is built by `trimtab model build`.",
    )
    recipe: DefaultModelRecipe = Field(
        default_factory=DefaultModelRecipe, description="How the default model at `path` is built."
    )
    # Outside the checkout, as pip's wheel cache is: a new clone or worktree copies a build of the same recipe
    # (its hash covers the recipe, the world and the source that shapes the weights) instead of training again,
    # and an import of the same source file instead of converting it again.
    build_cache: Path | None = Field(
        default=Path("~/.cache/trimtab/models"),
        description="Where `trimtab model build` keeps each default-model build under its recipe hash, and"
        " `trimtab model import` each import under its source's sha256 (null: no cache; `--force` redoes it).",
    )
