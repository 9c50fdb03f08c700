"""The feedback service's settings (filled in by the feedback ingestion work, issue 5)."""

from __future__ import annotations

from trimtab.config.base import Section


class FeedbackConfig(Section):
    """Feedback ingestion: ports, validation limits, idempotency, abuse limits."""
