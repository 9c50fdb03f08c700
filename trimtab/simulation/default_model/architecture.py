"""The default model's architecture: a small Llama that vLLM's CPU backend can serve."""

from __future__ import annotations

from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from trimtab.config import DefaultModelRecipe


def llama_config(recipe: DefaultModelRecipe, tokenizer: PreTrainedTokenizerFast) -> LlamaConfig:
    return LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=recipe.hidden_size,
        intermediate_size=recipe.intermediate_size,
        num_hidden_layers=recipe.num_layers,
        num_attention_heads=recipe.num_heads,
        num_key_value_heads=recipe.num_heads,
        max_position_embeddings=recipe.max_positions,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        # Untied: at this size the output head is a large share of capacity, and untied weights keep
        # every tensor a plain parameter for vLLM's reload_weights and for FSDP2 sharding.
        tie_word_embeddings=False,
    )


def new_model(recipe: DefaultModelRecipe, tokenizer: PreTrainedTokenizerFast) -> LlamaForCausalLM:
    return LlamaForCausalLM(llama_config(recipe, tokenizer))


def generation_config(tokenizer: PreTrainedTokenizerFast, max_new_tokens: int = 64) -> GenerationConfig:
    """Sampling at T=1 by default: the model's own distribution, which the alignment loop reshapes."""
    return GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        do_sample=True,
        temperature=1.0,
        max_new_tokens=max_new_tokens,
    )
