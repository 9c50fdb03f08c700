"""The base every config section derives from: strict, immutable, documented."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

# Serialization context under which secret fields dump in full (a config handed to a child process).
REVEAL_SECRETS = "reveal_secrets"


class Section(BaseModel):
    """A config section. Unknown keys are errors (a typo must not silently become a default)."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)
