"""Feedback service fixtures: one in-process server for the session, on free ports and a topic of its own."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.feedback.support import InProcessServer, fresh_topic, service_config
from trimtab.config import TrimtabConfig


@pytest.fixture(scope="session")
def feedback_server(stack: TrimtabConfig) -> Iterator[InProcessServer]:
    """FeedbackService (gRPC + HTTP) with default validation and abuse settings, except that raters'
    flag thresholds are low enough to reach in a test."""
    config = service_config(stack, fresh_topic(), agreement={"min_comparable_votes": 4, "flag_p_value": 0.1})
    server = InProcessServer(config)
    yield server
    server.close()
