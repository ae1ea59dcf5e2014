"""The shipped linear model: weights per feature, loaded once from a JSON data file.

The file (``aisentinel/data/guard-model.json``) is written by ``bench/train_guard.py``;
its provenance (training file, sha256, row counts, licences, cross-validated figures)
is ``guard-model.provenance.json`` beside it. Scoring is a sum of dictionary look-ups:
no numpy, no download, no GPU.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from functools import cache
from importlib import resources
from itertools import repeat
from typing import Any

from aisentinel.guard.features import CHAR_NS, HEAD, TAIL, Features

__all__ = ["HAND_SET_RULES", "MODEL_FILE", "PROVENANCE_FILE", "GuardModel", "default_model"]

MODEL_FILE = "guard-model.json"
PROVENANCE_FILE = "guard-model.provenance.json"
FORMAT = 1
CATEGORIES = ("injection", "jailbreak", "extraction")
#: Rule families no training row holds, with the weight they get whatever the model file
#: says: ``hidden_tags`` (text written in Unicode tag characters, invisible on screen and
#: read by models; nothing but an attack uses it). 2.0 makes it an alert on its own
#: (rules alone 0.73: under the default ``abuse_rule_score`` of 0.75, so hidden text alone
#: is not abuse; what it decodes to is scored too, and counts by its own rules).
HAND_SET_RULES: Mapping[str, float] = {"hidden_tags": 2.0}


class GuardModel:
    """A binary attack model plus a three-way category model (word and rule features)."""

    __slots__ = (
        "bias",
        "cat_bias",
        "cat_cols",
        "cat_rule",
        "cat_word",
        "char_w",
        "positive_words",
        "rule_w",
        "threshold",
        "word_w",
    )

    def __init__(self, data: Mapping[str, Any]) -> None:
        if data.get("format") != FORMAT:
            raise ValueError(f"guard model format {data.get('format')!r}, expected {FORMAT}")
        if tuple(data["char_ns"]) != CHAR_NS or data["head"] != HEAD or data["tail"] != TAIL:
            raise ValueError("guard model was trained with other feature settings")
        self.bias = float(data["bias"])
        self.threshold = float(data["threshold"])
        self.char_w: dict[str, float] = {k: float(v) for k, v in data["char"].items()}
        self.word_w: dict[str, float] = {k: float(v) for k, v in data["word"].items()}
        self.rule_w: dict[str, float] = {k: float(v) for k, v in data["rule"].items()}
        self.rule_w.update(HAND_SET_RULES)
        self.cat_bias: tuple[float, ...] = tuple(float(v) for v in data["cat_bias"])
        self.cat_word: dict[str, tuple[float, ...]] = {
            k: tuple(float(x) for x in v) for k, v in data["cat_word"].items()
        }
        self.cat_rule: dict[str, tuple[float, ...]] = {
            k: tuple(float(x) for x in v) for k, v in data["cat_rule"].items()
        }
        rows = (*self.cat_word.values(), *self.cat_rule.values())
        if len(self.cat_bias) != len(CATEGORIES) or any(len(r) != len(CATEGORIES) for r in rows):
            raise ValueError("guard model category block has the wrong width")
        # One dict per category (sums in C), and the words that can point to an attack.
        self.cat_cols: tuple[dict[str, float], ...] = tuple(
            {k: v[i] for k, v in self.cat_word.items()} for i in range(len(CATEGORIES))
        )
        self.positive_words = frozenset(k for k, v in self.word_w.items() if v > 0)

    def logit(self, feats: Features) -> float:
        """Log-odds that the text is an attack."""
        total = self.bias
        if feats.chars:
            got = sum(map(self.char_w.get, feats.chars, repeat(0.0)))
            total += got / math.sqrt(len(feats.chars))
        if feats.words:
            got = sum(map(self.word_w.get, feats.words, repeat(0.0)))
            total += got / math.sqrt(len(feats.words))
        rule_w = self.rule_w
        for hit in feats.rules:
            total += rule_w.get(hit.name, 0.0)
        return total

    def score(self, feats: Features) -> float:
        """Probability-like score in 0..1."""
        return _sigmoid(self.logit(feats))

    def rule_score(self, feats: Features) -> float:
        """The score of the rule families alone: the bias plus the weights of the
        families that matched, no n-grams (how sure the regex evidence is by itself)."""
        rule_w = self.rule_w
        return _sigmoid(self.bias + sum(rule_w.get(hit.name, 0.0) for hit in feats.rules))

    def families_score(self, names: Iterable[str]) -> float:
        """:meth:`rule_score` of a text in which just the families ``names`` matched."""
        rule_w = self.rule_w
        return _sigmoid(self.bias + sum(rule_w.get(name, 0.0) for name in set(names)))

    def category(self, feats: Features) -> str:
        """The most likely attack category (only meaningful for texts that are attacks)."""
        sums = list(self.cat_bias)
        words = self.cat_word.keys() & feats.words
        if words:
            scale = 1.0 / math.sqrt(len(feats.words))
            for i, column in enumerate(self.cat_cols):
                sums[i] += sum(map(column.__getitem__, words)) * scale
        for hit in feats.rules:
            row = self.cat_rule.get(hit.name)
            if row is not None:
                for i, w in enumerate(row):
                    sums[i] += w
        best = max(range(len(sums)), key=sums.__getitem__)
        return CATEGORIES[best]

    def top_word(self, feats: Features) -> tuple[str, float] | None:
        """The word n-gram with the largest positive weight present in the text (of equal
        weights, the one first in sort order)."""
        present = self.positive_words & feats.words
        if not present:
            return None
        w = self.word_w
        best = min(present, key=lambda word: (-w[word], word))
        return best, w[best]


def _sigmoid(z: float) -> float:
    if z >= 0:
        return 1.0 / (1.0 + math.exp(-z))
    e = math.exp(z)
    return e / (1.0 + e)


@cache
def default_model() -> GuardModel:
    """The shipped model, loaded on first use."""
    ref = resources.files("aisentinel") / "data" / MODEL_FILE
    return GuardModel(json.loads(ref.read_text(encoding="utf-8")))
