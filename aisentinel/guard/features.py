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

import re
from typing import NamedTuple

from aisentinel.guard.rules import RuleHit, match_rules

__all__ = ["CHAR_NS", "HEAD", "TAIL", "Features", "extract", "model_view"]

CHAR_NS: tuple[int, ...] = (4,)
HEAD = 1536
TAIL = 512
_WORD = re.compile(r"[^\W_]+|[^\w\s]")


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
    length = len(padded)
    chars: set[str] = set()
    for n in CHAR_NS:
        chars.update({padded[i : i + n] for i in range(length - n + 1)})
    words_list = _WORD.findall(view)
    words = set(words_list)
    words.update(map("{} {}".format, words_list, words_list[1:]))
    return Features(chars, words, words_list, view, match_rules(norm))
