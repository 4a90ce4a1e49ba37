"""Splitting a document into passages that each fit the model, counted in its own tokens.

A document's body is cut into windows of at most ``max_tokens`` tokens of the serving
model's tokenizer. Paragraphs come first: a window ends at the first paragraph break past
half of it (else the latest past a quarter), and after such a cut the next window starts
at a paragraph too, sharing whole paragraphs of at most ``overlap`` tokens (none when the
last paragraph is longer), so paragraphs that fit a window are never cut. Where there is
no paragraph break to cut at, consecutive windows share about ``overlap`` tokens: as few
windows as cover the rest (counted again after each cut), of about even size, so no short
tail window is left over; each cut at the best boundary near that size (sentence end,
else word boundary).
docs/search.md has the measurements behind both.
Each passage is embedded with the document's title in front (the same ``with_title`` text
bridge-side ingest always embedded), so a body that fits in one window is one passage
whose vector equals the document's single vector. Nothing is cut silently:
when a title leaves too little room, the input is refused.

Offsets are Unicode code-point positions in the body (Python ``str`` indices).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from bridge.model.errors import InputError, TooLarge

# Defaults of `bridge setup` and of the API (see docs/search.md for the measurement).
DEFAULT_PASSAGE_TOKENS = 256
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

    @classmethod
    def of(cls, max_tokens: int, overlap: int | None = None) -> PassageSpec:
        """A window and its overlap; no overlap given: half the window (the measured
        default, docs/search.md)."""
        return cls(max_tokens, max_tokens // 2 if overlap is None else overlap)

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


def boundary(text: str, offsets: Offsets, k: int) -> int:
    """How good a cut before token ``k`` is: 3 between paragraphs, 2 between sentences,
    1 between words, 0 inside a word."""
    if k <= 0 or k >= len(offsets):
        return 3
    prev_end, start, end = offsets[k - 1][1], offsets[k][0], offsets[k][1]
    token = text[start:end]
    space = text[prev_end:start] + token[: len(token) - len(token.lstrip())]
    if not space and not text[start - 1 : start].isspace():
        return 0
    if space.count("\n") >= 2:
        return 3
    last = prev_end  # the last non-space character before the cut (no copy of the text)
    while last > 0 and text[last - 1].isspace():
        last -= 1
    before = text[last - 1 : last] if last else ""
    return 2 if before in (".", "!", "?", ":", ";") or "\n" in space else 1


def _strongest(text: str, offsets: Offsets, candidates: Iterable[int]) -> int | None:
    """The first of ``candidates`` (token positions) with the strongest boundary; None when
    every one is inside a word."""
    best, where = 0, None
    for k in candidates:
        strength = boundary(text, offsets, k)
        if strength > best:
            best, where = strength, k
            if strength == 3:
                break
    return where


def _best_cut(text: str, offsets: Offsets, low: int, high: int) -> int | None:
    """The best cut in ``[low, high]``: the strongest boundary, the latest of equals."""
    return _strongest(text, offsets, range(high, low - 1, -1))


def greedy_end(text: str, offsets: Offsets, i: int, window: int, overlap: int) -> int:
    """End (exclusive) of the window starting at token ``i``, greedily: ``window`` tokens
    on, moved back within the last third to the best boundary there (paragraph, sentence,
    word). The last window holds whatever is left, however little."""
    n = len(offsets)
    j = min(i + window, n)
    if j < n:
        j = _best_cut(text, offsets, i + max(1, (2 * window) // 3), j) or j
    return j


def _nearest_cut(text: str, offsets: Offsets, low: int, high: int, target: int) -> int | None:
    """The best cut in ``[low, high]``: the strongest boundary, the nearest to ``target`` of
    equals (the later of two as near)."""
    order = sorted(range(low, high + 1), key=lambda k: (abs(k - target), -k))
    return _strongest(text, offsets, order)


def balanced_end(text: str, offsets: Offsets, i: int, window: int, overlap: int) -> int:
    """End (exclusive) of the window starting at token ``i``, the rest shared out evenly:
    as few windows as cover it, each about the same size, the cut moved to the best boundary
    within a quarter of that size of it (never past ``window``). No short tail window is
    left over."""
    n = len(offsets)
    rest = n - i
    if rest <= window:
        return n
    count = -(-(rest - overlap) // (window - overlap))  # windows the rest needs, >= 2
    size = -(-(rest + (count - 1) * overlap) // count)
    target = i + size
    slack = max(1, size // 4)
    high = min(i + window, target + slack)
    return _nearest_cut(text, offsets, max(i + 1, target - slack), high, target) or high


def paragraph_end(text: str, offsets: Offsets, i: int, window: int, overlap: int) -> int:
    """End (exclusive) of the window starting at token ``i`` when the rest does not fit:
    the first paragraph break past half the window (paragraphs are merged only while the
    window is under half full, so a paragraph of half a window or more is its own
    passage), else the latest past a quarter, else ``balanced_end``."""
    n = len(offsets)
    if n - i > window:
        half, quarter = i + max(1, window // 2), i + max(1, window // 4)
        for k in range(half, i + window + 1):
            if boundary(text, offsets, k) == 3:
                return k
        for k in range(half - 1, quarter - 1, -1):
            if boundary(text, offsets, k) == 3:
                return k
    return balanced_end(text, offsets, i, window, overlap)


# (text, offsets, first token, window, overlap) -> end (exclusive) of that window
WindowEnd = Callable[[str, Offsets, int, int, int], int]


def next_start(text: str, offsets: Offsets, i: int, j: int, overlap: int) -> int:
    """Start of the window after ``[i, j)``: ``overlap`` tokens before ``j``, moved back up
    to half the overlap to the best boundary there; always after ``i``."""
    following = max(j - overlap, i + 1)
    if overlap == 0:
        return following
    low = max(i + 1, following - max(1, overlap // 2))
    return _best_cut(text, offsets, low, following) or following


def paragraph_start(text: str, offsets: Offsets, i: int, j: int, overlap: int) -> int:
    """Start of the window after ``[i, j)``: after a cut at a paragraph break, the earliest
    paragraph break at most ``overlap`` tokens before it (the overlap is whole paragraphs,
    none when the last one is longer than that); else ``next_start``."""
    if boundary(text, offsets, j) == 3:
        for k in range(max(i + 1, j - overlap), j + 1):
            if boundary(text, offsets, k) == 3:
                return k
    return next_start(text, offsets, i, j, overlap)


# (text, offsets, first token, end of the previous window, overlap) -> start of the next
WindowStart = Callable[[str, Offsets, int, int, int], int]


class PassageSplitter:
    """Splits bodies into passages for one tokenizer and input limit; thread-safe."""

    def __init__(
        self,
        encode: OffsetEncoder,
        finish: Finisher,
        max_input_tokens: int,
        window_end: WindowEnd = paragraph_end,
        window_start: WindowStart = paragraph_start,
    ) -> None:
        self.window_end = window_end
        self.window_start = window_start
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
        if len(offsets) <= spec.max_tokens:  # else it is split: no need to tokenize it all again
            whole = self.finish(with_title(title, text))
            if len(whole) <= self.max_input_tokens or not offsets:
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
        passages, i, done = [], 0, 0
        while True:
            j = self.window_end(text, offsets, i, window, overlap)
            if j <= done:  # inside the previous window: start where that one ended
                i = done
                j = self.window_end(text, offsets, i, window, overlap)
            while True:  # re-tokenizing a span can merge differently: shrink until it fits
                start, end = offsets[i][0], offsets[j - 1][1]
                ids = self.finish(with_title(title, text[start:end]))
                if len(ids) <= self.max_input_tokens or j - i <= 1:
                    break
                j -= max(1, len(ids) - self.max_input_tokens)
            passages.append(Passage(start, end, ids))
            done = j
            if j >= len(offsets):
                return passages
            i = self.window_start(text, offsets, i, j, overlap)
