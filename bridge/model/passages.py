"""Splitting a document into passages that each fit the model, counted in its own tokens.

A document's body is cut into windows of at most ``max_tokens`` tokens of the serving
model's tokenizer, consecutive windows sharing ``overlap`` tokens; cuts fall between words
where one is near. Each passage is embedded with the document's title in front (the same
``with_title`` text bridge-side ingest always embedded), so a body that fits in one window
is one passage whose vector equals the document's single vector. Nothing is cut silently:
when a title leaves too little room, the input is refused.

Offsets are Unicode code-point positions in the body (Python ``str`` indices).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from bridge.model.errors import InputError, TooLarge

# Defaults of `bridge setup` and of the API (see docs/search.md for the measurement).
DEFAULT_PASSAGE_TOKENS = 256
DEFAULT_PASSAGE_OVERLAP = 32
MIN_WINDOW = 16  # fewer body tokens beside the title than this: refused, not cut


def with_title(title: str | None, text: str) -> str:
    """What is embedded for ``text`` under ``title``: the non-empty parts, each once, one
    per line (title first)."""
    parts = [p for p in (title, text) if p]
    return "\n".join(dict.fromkeys(parts))


@dataclass(frozen=True)
class PassageSpec:
    """How documents are split: window and overlap in model tokens."""

    max_tokens: int
    overlap: int

    def check(self) -> None:
        if self.max_tokens < MIN_WINDOW:
            raise InputError(
                f"passages.max_tokens must be at least {MIN_WINDOW}, got {self.max_tokens}",
                param="passages.max_tokens",
            )
        if not 0 <= self.overlap <= self.max_tokens // 2:
            raise InputError(
                f"passages.overlap must be between 0 and half of max_tokens "
                f"({self.max_tokens // 2}), got {self.overlap}",
                param="passages.overlap",
            )


@dataclass
class Passage:
    """One passage of an input: its span in the body and the token ids to embed."""

    start: int
    end: int
    ids: list[int]


Offsets = list[tuple[int, int]]
# (texts, add_special_tokens) -> per text (ids, character offsets)
OffsetEncoder = Callable[[list[str], bool], list[tuple[list[int], Offsets]]]
# a full text to embed -> its finished ids (special and end tokens, no truncation)
Finisher = Callable[[str], list[int]]


def _starts_word(text: str, offsets: Offsets, k: int) -> bool:
    """Whether token ``k`` begins a word (a cut before it falls between words)."""
    if k <= 0 or k >= len(offsets):
        return True
    start = offsets[k][0]
    return (
        start > offsets[k - 1][1]
        or text[start : start + 1].isspace()
        or text[start - 1 : start].isspace()
    )


def window_end(text: str, offsets: Offsets, i: int, window: int) -> int:
    """End (exclusive) of the window starting at token ``i``: ``window`` tokens on, moved
    back to a word boundary when one is within the last quarter."""
    n = len(offsets)
    j = min(i + window, n)
    if j < n:
        k = j
        while k > i + (3 * window) // 4 and not _starts_word(text, offsets, k):
            k -= 1
        if _starts_word(text, offsets, k):
            j = k
    return j


def next_start(text: str, offsets: Offsets, i: int, j: int, overlap: int) -> int:
    """Start of the window after ``[i, j)``: ``overlap`` tokens before ``j``, or a little
    more to start on a word; always after ``i``."""
    following = max(j - overlap, i + 1)
    k = following
    while k > max(i + 1, following - max(1, overlap // 2)) and not _starts_word(text, offsets, k):
        k -= 1
    return k if _starts_word(text, offsets, k) else following


def token_windows(text: str, offsets: Offsets, window: int, overlap: int) -> list[tuple[int, int]]:
    """Token ranges ``[i, j)`` covering every token, each at most ``window`` long."""
    out: list[tuple[int, int]] = []
    i = 0
    while True:
        j = window_end(text, offsets, i, window)
        out.append((i, j))
        if j >= len(offsets):
            return out
        i = next_start(text, offsets, i, j, overlap)


class PassageSplitter:
    """Splits bodies into passages for one tokenizer and input limit; thread-safe."""

    def __init__(self, encode: OffsetEncoder, finish: Finisher, max_input_tokens: int) -> None:
        self.encode = encode
        self.finish = finish
        self.max_input_tokens = max_input_tokens

    def split(
        self, texts: Sequence[str], titles: Sequence[str | None], spec: PassageSpec
    ) -> list[list[Passage]]:
        """The passages of each text, in order, each with its finished token ids."""
        spec.check()
        bodies = self.encode(list(texts), False)
        return [
            self._split_one(i, text, title, ids_offsets[1], spec)
            for i, (text, title, ids_offsets) in enumerate(zip(texts, titles, bodies, strict=True))
        ]

    def _split_one(
        self, index: int, text: str, title: str | None, offsets: Offsets, spec: PassageSpec
    ) -> list[Passage]:
        if not text or not text.strip():
            raise InputError(f"input[{index}] is an empty string", code="empty_input")
        whole = self.finish(with_title(title, text))
        fits = len(whole) <= self.max_input_tokens
        if fits and len(offsets) <= spec.max_tokens or not offsets:
            return [Passage(0, len(text), whole)]
        # Room for the body beside the title, the separator and the special tokens.
        overhead = len(self.finish(with_title(title, "x"))) - 1
        window = min(spec.max_tokens, self.max_input_tokens - overhead)
        if window < MIN_WINDOW:
            raise TooLarge(
                f"input[{index}]'s title takes {overhead} of the {self.max_input_tokens} "
                f"tokens the model reads, leaving fewer than {MIN_WINDOW} for each passage; "
                "shorten the title",
                param="titles",
                code="title_too_long",
            )
        overlap = min(spec.overlap, window // 2)
        passages, i = [], 0
        while True:
            j = window_end(text, offsets, i, window)
            while True:  # re-tokenizing a span can merge differently: shrink until it fits
                start, end = offsets[i][0], offsets[j - 1][1]
                ids = self.finish(with_title(title, text[start:end]))
                if len(ids) <= self.max_input_tokens or j - i <= 1:
                    break
                j -= max(1, len(ids) - self.max_input_tokens)
            passages.append(Passage(start, end, ids))
            if j >= len(offsets):
                return passages
            i = next_start(text, offsets, i, j, overlap)
