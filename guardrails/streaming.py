"""Output rails over a stream: text reaches the client only after a window holding it has passed.

    stream = OutputStream(check, window, pii_entities)
    released = await stream.push(delta)     # "" until enough text waits; then what passed (masked)
    if stream.blocked: ...                  # stop generating; stream.blocked says why
    released = await stream.close()         # the rest, checked

Each check sees `context_chars` of text already released plus the new segment, so a term split
across two chunks is still caught. The newest `holdback_chars` are never released until more text
follows them (or the stream ends), and a cut never falls inside a word or a PII span: a secret, a
card number or an e-mail address still being generated is never sent in part.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

from guardrails.decisions import CheckResult, Decision
from guardrails.pii import spans
from trimtab.config.guardrails import StreamWindow

Check = Callable[[str], Awaitable[CheckResult]]
FORCE_CUT_FACTOR = 4  # text with no space at all is cut anyway once this many chunks of it wait


class OutputStream:
    def __init__(self, check: Check, window: StreamWindow, pii_entities: Sequence[str]) -> None:
        self._check = check
        self._window = window
        self._entities = tuple(pii_entities)
        self._pending = ""
        self.released = ""  # what the client has been sent, after masking
        self.decisions: list[Decision] = []
        self.blocked: CheckResult | None = None
        self.modified = False

    async def push(self, text: str) -> str:
        """Add generated text; returns the text now safe to send (often "")."""
        self._pending += text
        if self.blocked is not None or len(self._pending) < self._window.chunk_chars + self._window.holdback_chars:
            return ""
        return await self._release(self._cut(len(self._pending) - self._window.holdback_chars))

    async def close(self) -> str:
        """The generation ended: check and release everything still held back."""
        if self.blocked is not None or not self._pending:
            return ""
        return await self._release(len(self._pending))

    def _cut(self, limit: int) -> int:
        """The last safe place to cut the pending text at or before `limit`: after a whitespace, and not
        inside a PII span; 0 when there is none yet."""
        cut = max(self._pending.rfind(" ", 0, limit), self._pending.rfind("\n", 0, limit)) + 1
        if cut == 0 and len(self._pending) >= FORCE_CUT_FACTOR * self._window.chunk_chars:
            cut = limit
        moved = True
        while moved:  # a span that straddles the cut moves the cut to its start
            moved = False
            for start, end in spans(self._pending, self._entities):
                if start < cut < end:
                    cut, moved = start, True
        return cut

    async def _release(self, cut: int) -> str:
        if cut <= 0:
            return ""
        segment = self._pending[:cut]
        context = self.released[-self._window.context_chars :] if self._window.context_chars else ""
        result = await self._check(context + segment)
        self.decisions.extend(result.decisions)
        if result.blocked:
            self.blocked = result
            return ""
        released = segment
        if result.text != context + segment:
            self.modified = True
            # Masks never match again, so the context (masked when it was released) comes back as it
            # was and the rest is the masked segment. If not, the segment is checked on its own.
            if result.text.startswith(context):
                released = result.text[len(context) :]
            else:
                alone = await self._check(segment)
                self.decisions.extend(alone.decisions)
                if alone.blocked:
                    self.blocked = alone
                    return ""
                released = alone.text
        self._pending = self._pending[cut:]
        self.released += released
        return released
