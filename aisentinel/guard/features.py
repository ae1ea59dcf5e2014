"""Feature extraction shared by the runtime scorer and the training script.

Three blocks, all binary (present or not) so that a prompt repeating one phrase a
thousand times weighs no more than one that says it once:

* character n-grams of the normalised text (``CHAR_NS``), scaled by
  ``1/sqrt(number of distinct n-grams)``;
* word unigrams and bigrams, scaled the same way;
* rule families (:mod:`aisentinel.guard.rules`), scaled 1.

Only the first ``HEAD`` and last ``TAIL`` characters of a long prompt feed the n-gram
blocks (bounded work per prompt); the rules see the whole normalised text.
"""

from __future__ import annotations

from itertools import pairwise
from typing import NamedTuple

from aisentinel.guard.rules import TOKEN, RuleHit, match_rules

__all__ = ["CHAR_NS", "HEAD", "TAIL", "Features", "extract", "model_view"]

CHAR_NS: tuple[int, ...] = (4,)
HEAD = 1536
TAIL = 512
_WORD = TOKEN


class Features(NamedTuple):
    chars: set[str]
    words: set[str]
    words_list: list[str]
    view: str
    rules: list[RuleHit]


def model_view(norm: str) -> str:
    """The part of a normalised prompt that feeds the n-gram blocks."""
    if len(norm) <= HEAD + TAIL:
        return norm
    return norm[:HEAD] + " " + norm[-TAIL:]


def extract(norm: str) -> Features:
    """All feature blocks of an already normalised text."""
    view = model_view(norm)
    padded = f" {view} "
    chars: set[str] = set()
    for n in CHAR_NS:
        # n shifted copies zipped: the n-grams without a Python-level loop per position.
        chars.update(map("".join, zip(*(padded[k:] for k in range(n)), strict=False)))
    words_list = _WORD.findall(view)
    words = set(words_list)
    words.update(map(" ".join, pairwise(words_list)))
    # The word set holds every token of the text when the view is the whole text.
    rules = match_rules(norm, words if view is norm else None)
    return Features(chars, words, words_list, view, rules)
