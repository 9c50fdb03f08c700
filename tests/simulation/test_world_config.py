"""The world's config section: strict, documented, and with defaults the demo can run on."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from trimtab.config.world import FamilyWeights, StyleMix, UserPopulationConfig, WorldConfig


def test_every_field_is_documented() -> None:
    for section in (WorldConfig, StyleMix, FamilyWeights, UserPopulationConfig):
        for name, field in section.model_fields.items():
            assert field.description, f"{section.__name__}.{name}"


def test_unknown_keys_are_rejected() -> None:
    with pytest.raises(ValidationError, match="seeed"):
        WorldConfig.model_validate({"seeed": 3})
    with pytest.raises(ValidationError, match="polite_share"):
        WorldConfig.model_validate({"style": {"polite_share": 0.5}})


def test_tone_shares_must_sum_to_one() -> None:
    with pytest.raises(ValidationError, match="must sum to 1"):
        StyleMix(polite=0.5, neutral=0.5, rude=0.5)


def test_noise_beyond_chance_is_rejected() -> None:
    with pytest.raises(ValidationError, match="noise"):
        UserPopulationConfig(noise=0.6)


def test_family_weights_cannot_all_be_zero() -> None:
    with pytest.raises(ValidationError, match="positive"):
        FamilyWeights(arithmetic=0, fact=0, greeting=0)


def test_defaults_suit_the_demo() -> None:
    config = WorldConfig()
    assert config.style.correct == 0.5 and config.style.rambling == 0.5
    assert 0 < config.unsafe_share < 0.5 and 0 < config.pii_share < 0.5
    assert config.users.adversarial_share == 0.0 and 0 < config.users.noise < 0.5
