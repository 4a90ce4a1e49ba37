"""Splitting bodies into passages, with a word-level tokenizer (one token per word)."""

from __future__ import annotations

import random
import re
from itertools import pairwise

import pytest

from bridge.model.errors import InputError, TooLarge
from bridge.model.passages import PassageSpec, PassageSplitter, boundary, with_title


def encode(texts: list[str], add_special_tokens: bool):
    out = []
    for text in texts:
        spans = [m.span() for m in re.finditer(r"\S+", text)]
        ids = list(range(len(spans)))
        if add_special_tokens:
            ids = [-1, *ids, -2]
        out.append((ids, spans))
    return out


def finish(text: str) -> list[int]:
    return encode([text], True)[0][0]


def splitter(limit: int = 64) -> PassageSplitter:
    return PassageSplitter(encode, finish, limit)


def words(n: int, start: int = 0) -> str:
    return " ".join(f"w{i}" for i in range(start, start + n))


def test_with_title_joins_non_empty_parts_once():
    assert with_title("T", "body") == "T\nbody"
    assert with_title(None, "body") == with_title("", "body") == "body"
    assert with_title("same", "same") == "same"


def test_short_body_is_one_passage_spanning_it():
    body = "  a short body "
    [[passage]] = splitter().split([body], ["Title"], PassageSpec(32, 4))
    assert (passage.start, passage.end) == (0, len(body))
    assert passage.ids == finish("Title\n" + body)


@pytest.mark.parametrize("overlap", [0, 3, 8])
def test_every_word_is_covered_windows_fit_and_overlap(overlap):
    body = words(200)
    spec = PassageSpec(32, overlap)
    [passages] = splitter(limit=40).split([body], ["A title here"], spec)
    covered = set()
    for p in passages:
        text = body[p.start : p.end]
        assert len(p.ids) <= 40 and len(text.split()) <= 32
        assert text == text.strip() and p.ids == finish("A title here\n" + text)
        covered |= set(text.split())
    assert covered == set(body.split())  # nothing cut silently
    for a, b in zip(passages, passages[1:], strict=False):
        shared = len(set(body[a.start : a.end].split()) & set(body[b.start : b.end].split()))
        assert shared >= overlap and (overlap or shared == 0)


def test_the_window_leaves_room_for_the_title():
    body = words(90)  # five windows of 30 - 2 - 10 = 18 words
    [passages] = splitter(limit=30).split([body], [words(10, 1000)], PassageSpec(64, 0))
    assert all(len(p.ids) <= 30 for p in passages)
    assert max(len(body[p.start : p.end].split()) for p in passages) == 30 - 2 - 10


def test_cuts_prefer_paragraphs_then_sentences():
    first = " ".join(["alpha."] * 27)
    body = first + "\n\n" + " ".join(["beta gamma."] * 40)
    [passages] = splitter().split([body], [None], PassageSpec(32, 0))
    assert body[passages[0].start : passages[0].end] == first  # the paragraph, not 32 words
    assert body[passages[1].start : passages[1].end].endswith(".")


def test_boundary_strengths():
    text = "One two. Three\n\nFour"
    offsets = [m.span() for m in re.finditer(r"\S+", text)]
    assert [boundary(text, offsets, k) for k in range(1, 4)] == [1, 2, 3]


def test_bad_specs_and_long_titles_are_refused():
    with pytest.raises(InputError, match="overlap"):
        splitter().split(["x"], [None], PassageSpec(32, 17))
    with pytest.raises(InputError, match="at least 16"):
        splitter().split(["x"], [None], PassageSpec(8, 0))
    with pytest.raises(TooLarge, match="title"):
        splitter(limit=40).split([words(100)], [words(30, 500)], PassageSpec(32, 0))
    with pytest.raises(InputError, match="empty"):
        splitter().split(["  "], [None], PassageSpec(32, 0))


@pytest.mark.parametrize("overlap", [0, 4, 16])
@pytest.mark.parametrize("n", [33, 40, 63, 70, 97, 150, 201])
def test_windows_are_as_few_as_possible_and_of_even_size(n, overlap):
    body = words(n)
    [passages] = splitter().split([body], [None], PassageSpec(32, overlap))
    sizes = [len(body[p.start : p.end].split()) for p in passages]
    assert len(passages) == -(-(n - overlap) // (32 - overlap))  # the fewest that cover it
    assert max(sizes) <= 32 and max(sizes) - min(sizes) <= 1  # no short tail window


def test_a_body_just_over_the_window_is_halved_not_left_a_tail():
    body = words(34)
    [passages] = splitter().split([body], [None], PassageSpec(32, 0))
    assert [body[p.start : p.end] for p in passages] == [words(17), words(17, 17)]


@pytest.mark.parametrize("seed", range(20))
def test_random_prose_is_covered_in_order_within_the_window(seed):
    rng = random.Random(seed)
    body = "".join(
        f"w{k}" + rng.choice([" ", " ", " ", ". ", ".\n", "\n\n"])
        for k in range(rng.randint(40, 400))
    )
    spec = PassageSpec(rng.randint(16, 48), 0)
    spec = PassageSpec(spec.max_tokens, rng.randint(0, spec.max_tokens // 2))
    [passages] = splitter().split([body], ["T"], spec)
    seen = [set(body[p.start : p.end].split()) for p in passages]
    assert set().union(*seen) == set(body.split())
    assert all(len(s) <= spec.max_tokens for s in seen)
    assert all(a.start < b.start and a.end < b.end for a, b in pairwise(passages))
    for (a, b), shared in zip(pairwise(passages), map(len, pairwise_and(seen)), strict=True):
        if body[a.end : a.end + 2] == "\n\n":  # cut at a paragraph: whole paragraphs shared
            assert body[b.start - 2 : b.start] == "\n\n" and shared <= spec.overlap
        else:
            assert shared >= spec.overlap


def pairwise_and(sets: list[set]) -> list[set]:
    return [a & b for a, b in pairwise(sets)]


def test_paragraphs_that_fit_are_never_cut_and_overlap_whole():
    sizes = [20, 25, 10, 40, 5, 30, 90]
    paragraphs = [words(n, 1000 * i) + "." for i, n in enumerate(sizes)]
    body = "\n\n".join(paragraphs)
    [passages] = splitter(limit=300).split([body], [None], PassageSpec(64, 32))
    texts = [body[p.start : p.end] for p in passages]
    assert (
        texts[:4]
        == [
            "\n\n".join(paragraphs[0:2]),  # 45 words: ends at the first break past half (32)
            "\n\n".join(paragraphs[1:3]),  # shares the 25-word paragraph (within 32 words)
            "\n\n".join(paragraphs[2:4]),  # shares the 10-word one
            "\n\n".join(paragraphs[4:6]),  # the 40-word one is more than 32: not shared
        ]
    )
    # the 90-word paragraph: words windows sharing about 32, starting at its beginning
    assert texts[4].startswith("w6000 ") and texts[-1].endswith("w6089.")
    assert all(len(t.split()) <= 64 for t in texts) and len(texts) == 6


def test_a_window_inside_the_previous_one_is_skipped():
    # after [A B], the overlap would start at B (within 32 words), but B and the long C
    # make no window past B's end: the next window starts at C instead of repeating B
    body = "\n\n".join([words(30) + ".", words(30, 100) + ".", words(100, 200) + "."])
    [passages] = splitter(limit=300).split([body], [None], PassageSpec(64, 32))
    assert all(a.end < b.end for a, b in pairwise(passages))
    assert body[passages[1].start :].startswith(("w100 ", "w200 "))


def test_a_body_over_the_window_is_not_tokenized_whole_again():
    calls = []
    body = words(100)
    PassageSplitter(encode, lambda t: calls.append(t) or finish(t), 64).split(
        [body], [None], PassageSpec(32, 0)
    )
    assert body not in calls and len(calls) == 1 + 4  # the title's cost, then each window


def test_the_overlap_defaults_to_half_the_window():
    assert PassageSpec.of(256) == PassageSpec(256, 128)
    assert PassageSpec.of(64) == PassageSpec(64, 32)  # valid for any window, not only 256
    assert PassageSpec.of(64, 0) == PassageSpec(64, 0)
    PassageSpec.of(17).check()
