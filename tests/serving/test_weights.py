"""Pre-swap checks read safetensors headers only, and refuse weights that do not fit the running model."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from serving.weights import SwapRefused, check_compatible, tensor_specs, write_zero_adapter


def weights_dir(tmp_path: Path, name: str, tensors: dict[str, torch.Tensor]) -> Path:
    directory = tmp_path / name
    directory.mkdir()
    save_file(tensors, directory / "model.safetensors")
    return directory


def test_specs_come_from_headers_and_equal_shapes_pass(tmp_path: Path) -> None:
    running = tensor_specs(weights_dir(tmp_path, "a", {"w": torch.zeros(4, 8), "b": torch.zeros(8)}))
    assert running == {"w": ((4, 8), "F32"), "b": ((8,), "F32")}
    check_compatible(tensor_specs(weights_dir(tmp_path, "b", {"w": torch.ones(4, 8), "b": torch.ones(8)})), running)


@pytest.mark.parametrize(
    ("tensors", "message"),
    [
        ({"w": torch.zeros(4, 9), "b": torch.zeros(8)}, r"w: shape \(4, 9\) != running \(4, 8\)"),
        ({"w": torch.zeros(4, 8)}, r"missing tensors \['b'\]"),
        ({"w": torch.zeros(4, 8), "b": torch.zeros(8), "extra": torch.zeros(1)}, r"unexpected tensors \['extra'\]"),
    ],
)
def test_misfits_are_refused_naming_the_tensor(tmp_path: Path, tensors: dict[str, torch.Tensor], message: str) -> None:
    running = tensor_specs(weights_dir(tmp_path, "running", {"w": torch.zeros(4, 8), "b": torch.zeros(8)}))
    with pytest.raises(SwapRefused, match=message):
        check_compatible(tensor_specs(weights_dir(tmp_path, "candidate", tensors)), running)


def test_zero_adapter_covers_q_and_v_with_exact_zero_updates(tmp_path: Path) -> None:
    model = weights_dir(
        tmp_path,
        "model",
        {
            "model.layers.0.self_attn.q_proj.weight": torch.zeros(16, 16),
            "model.layers.0.self_attn.v_proj.weight": torch.zeros(8, 16),
            "model.layers.0.mlp.up_proj.weight": torch.zeros(32, 16),
        },
    )
    adapter = load_file(write_zero_adapter(model, tmp_path / "zero") / "adapter_model.safetensors")
    assert sorted(adapter) == [
        "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight",
        "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight",
        "base_model.model.model.layers.0.self_attn.v_proj.lora_A.weight",
        "base_model.model.model.layers.0.self_attn.v_proj.lora_B.weight",
    ]
    b = adapter["base_model.model.model.layers.0.self_attn.v_proj.lora_B.weight"]
    assert b.shape == (8, 8) and not b.any()  # B = 0: the update B @ A is exactly zero
