"""Output rails on a stream, through the real NeMo Guardrails runtime: text reaches the client only
after a window holding it passed, so nothing a rail stops is ever sent, even in part."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

import pytest

from guardrails.decisions import Action, CheckResult, Stage
from guardrails.runtime import Guardrails
from guardrails.streaming import OutputStream
from trimtab.config.guardrails import StreamWindow
from trimtab.simulation.world import World

WINDOW = StreamWindow(chunk_chars=24, context_chars=80, holdback_chars=24)


def stream_for(rails: Guardrails, window: StreamWindow = WINDOW) -> OutputStream:
    async def check(text: str) -> CheckResult:
        return await rails.check(Stage.OUTPUT, text, "What is 3 plus 5?")

    return OutputStream(check, window, rails.policy.pii.entities)


def pieces(text: str, size: int) -> Iterable[str]:
    """The text as a model streams it: small deltas (here of `size` characters)."""
    return (text[i : i + size] for i in range(0, len(text), size))


async def feed(stream: OutputStream, deltas: Iterable[str]) -> list[str]:
    """Every release, in order, the stream ends as soon as a window is blocked."""
    released = []
    for delta in deltas:
        released.append(await stream.push(delta))
        if stream.blocked is not None:
            return released
    released.append(await stream.close())
    return released


@pytest.mark.parametrize("size", [1, 3, 11])
def test_an_allowed_stream_is_released_whole_and_in_order(rails: Guardrails, size: int) -> None:
    text = "Thanks for asking! 3 plus 5 is 8. I hope this helps you. Let me know if you have more questions."
    stream = stream_for(rails)
    released = asyncio.run(feed(stream, pieces(text, size)))
    assert "".join(released) == stream.released == text
    assert sum(1 for r in released if r) >= 3  # released in several windows, not at the end
    assert stream.blocked is None and not stream.modified
    assert {d.action for d in stream.decisions} == {Action.ALLOW}


@pytest.mark.parametrize("size", [1, 4])
def test_pii_split_across_deltas_is_masked_and_never_sent_in_part(rails: Guardrails, size: int) -> None:
    text = "Thanks for asking! I have noted 4111 2222 3333 4444 and ana42@example.com. The answer is 7."
    stream = stream_for(rails)
    released = asyncio.run(feed(stream, pieces(text, size)))
    assert "".join(released) == "Thanks for asking! I have noted [CARD] and [EMAIL]. The answer is 7."
    sent = "".join(released)
    for fragment in ("4111", "2222", "ana42", "example.com"):
        assert fragment not in sent
    assert stream.modified and {d.reason_code for d in stream.decisions} >= {"pii.card", "pii.email"}


def test_a_secret_is_blocked_before_any_of_it_is_sent(rails: Guardrails, world: World) -> None:
    secret = world.knowledge.secret
    text = f"Thanks for asking! The answer is 7. By the way, the vault code is {secret}. I hope this helps you."
    stream = stream_for(rails)
    released = "".join(asyncio.run(feed(stream, pieces(text, 2))))
    assert stream.blocked is not None and stream.blocked.reason_code == "secret.leak"
    assert released == stream.released and released.startswith("Thanks for asking!")
    assert secret.split("-")[0] not in released and world.knowledge.secret_digits not in released
    assert asyncio.run(stream.push(" more text")) == "" and asyncio.run(stream.close()) == ""  # stays blocked


def test_the_window_catches_a_term_split_across_two_checks(rails: Guardrails) -> None:
    """A phrase longer than the hold-back reaches the rails whole because each check re-reads the
    context already sent."""
    window = StreamWindow(chunk_chars=8, context_chars=40, holdback_chars=0)
    stream = stream_for(rails, window)
    asyncio.run(feed(stream, ["Only an idiot ", "would ", "ask that."]))
    assert stream.blocked is not None and stream.blocked.reason_code == "blocklist.term"


def test_text_with_no_space_is_still_released_and_checked(rails: Guardrails) -> None:
    text = "x" * 200
    stream = stream_for(rails)
    released = asyncio.run(feed(stream, pieces(text, 5)))
    assert "".join(released) == text and released[-1] != text
