"""Scrubbing secrets out of every text that leaves the process.

Why: servers echo credentials in error bodies, often *masked* (``abcd...wxyz``), and models put
whatever they like in exception messages. A whole-key replace misses both. The promise here is
stronger: **no piece of six or more characters of any secret** survives in a scrubbed text.
Log lines, job errors, excerpts of answers and the outbox's error records all pass through one
:class:`Scrubber`.

How: the text is cut into maximal runs of characters that occur in some secret (a piece of a
secret can only sit inside one such run); each run of six or more is checked window by window
against the set of the secrets' six-character pieces, and every window that matches is
replaced, merged with its neighbours, by ``[redacted]``. Secrets shorter than six characters
(but at least four) are replaced whole; shorter ones are ignored (they would mangle words).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

REDACTED = "[redacted]"
PIECE = 6


class Scrubber:
    """Replaces every piece of ``PIECE`` or more characters of any secret in a text."""

    def __init__(self, secrets: Iterable[str | None]) -> None:
        values = sorted({s for s in secrets if s and len(s) >= 4}, key=len, reverse=True)
        self._short = [s for s in values if len(s) < PIECE]
        self._pieces = frozenset(
            s[i : i + PIECE] for s in values if len(s) >= PIECE for i in range(len(s) - PIECE + 1)
        )
        alphabet = "".join(sorted({c for s in values for c in s}))
        self._runs = re.compile(f"[{re.escape(alphabet)}]{{{PIECE},}}") if alphabet else None

    def __bool__(self) -> bool:
        return bool(self._pieces or self._short)

    def __call__(self, text: str) -> str:
        if self._runs is None:
            return text
        for secret in self._short:
            if secret in text:
                text = text.replace(secret, REDACTED)
        if not self._pieces:
            return text
        spans = self._spans(text)
        if not spans:
            return text
        out: list[str] = []
        last = 0
        for start, end in spans:
            out.append(text[last:start])
            out.append(REDACTED)
            last = end
        out.append(text[last:])
        return "".join(out)

    def _spans(self, text: str) -> list[tuple[int, int]]:
        assert self._runs is not None
        pieces = self._pieces
        spans: list[tuple[int, int]] = []
        for run in self._runs.finditer(text):
            begin, word = run.start(), run.group()
            for i in range(len(word) - PIECE + 1):
                if word[i : i + PIECE] in pieces:
                    start, end = begin + i, begin + i + PIECE
                    if spans and start <= spans[-1][1]:
                        spans[-1] = (spans[-1][0], max(spans[-1][1], end))
                    else:
                        spans.append((start, end))
        return spans


NO_SECRETS = Scrubber(())
