"""Train the prompt-attack model shipped as aisentinel/data/guard-model.json.

    pip install -e '.[train]'            # numpy + scikit-learn, training only
    python bench/train_guard.py          # reads ../shared/corpus/prompt-injection/dev.jsonl

Deterministic: fixed seed, sorted vocabularies, liblinear/lbfgs solvers, weights rounded
to 4 significant digits; the same data gives the same bytes. Steps:

1. features of every prompt exactly as the runtime computes them (normalise, then
   character 4-grams, word uni/bigrams, rule families: aisentinel.guard.features);
2. stratified K-fold cross-validation (K=5 by default): per fold, vocabulary (min_df) and
   weights from the training folds only, scored on the held-out fold with the runtime
   ``scan`` (decoding included), giving out-of-fold scores for every row;
3. the threshold: the lowest score whose out-of-fold false-positive rate on non-attacks
   (benign and harmful_request) is at most ``--target-fpr``;
4. the final model fitted on all rows, with that threshold, written with its provenance
   (data file, sha256, row counts, licences, the cross-validated figures).

The data is read where it lies and never copied into the repository.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import sys
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from aisentinel.guard.features import CHAR_NS, HEAD, TAIL, Features, extract  # noqa: E402
from aisentinel.guard.model import (  # noqa: E402
    CATEGORIES,
    FORMAT,
    MODEL_FILE,
    PROVENANCE_FILE,
    GuardModel,
)
from aisentinel.guard.normalize import normalize  # noqa: E402
from aisentinel.guard.rules import RULES  # noqa: E402
from aisentinel.guard.scanner import scan  # noqa: E402


def corpus_dir() -> Path:
    """``$AISENTINEL_CORPUS`` or ``../shared/corpus`` beside the repository."""
    env = os.environ.get("AISENTINEL_CORPUS")
    return Path(env) if env else ROOT / ".." / "shared" / "corpus"


DEFAULT_DATA = corpus_dir() / "prompt-injection" / "dev.jsonl"
DEFAULT_OUT = ROOT / "aisentinel" / "data"
ATTACKS = frozenset(CATEGORIES)


@dataclass(frozen=True)
class Params:
    """Training hyper-parameters (all recorded in the provenance file)."""

    c: float = 8.0
    cat_c: float = 4.0
    min_df: int = 2
    seed: int = 20240601
    target_fpr: float = 0.0075
    folds: int = 5
    prune: float = 0.002


@dataclass(frozen=True)
class Row:
    text: str
    category: str
    source: str
    license: str

    @property
    def is_attack(self) -> bool:
        return self.category in ATTACKS


def load_rows(path: Path) -> list[Row]:
    """Rows of a labelled JSONL file (fields text, category, source, license)."""
    rows = []
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                obj = json.loads(line)
                rows.append(
                    Row(obj["text"], obj["category"], obj.get("source", ""), obj.get("license", ""))
                )
    return rows


def featurize(texts: Iterable[str]) -> list[Features]:
    """Runtime features of each text (normalised first)."""
    return [extract(normalize(t)) for t in texts]


def _vocab(sets: Iterable[Iterable[str]], min_df: int) -> dict[str, int]:
    df: Counter[str] = Counter()
    for s in sets:
        df.update(s)
    return {k: i for i, k in enumerate(sorted(k for k, v in df.items() if v >= min_df))}


def _matrix(
    feats: Sequence[Features],
    char_vocab: dict[str, int],
    word_vocab: dict[str, int],
    with_chars: bool = True,
) -> Any:
    import numpy as np
    from scipy.sparse import csr_matrix

    rule_index = {r.name: i for i, r in enumerate(RULES)}
    n_char = len(char_vocab) if with_chars else 0
    n_word = len(word_vocab)
    indptr = [0]
    indices: list[int] = []
    data: list[float] = []
    for f in feats:
        if with_chars and f.chars:
            v = 1.0 / math.sqrt(len(f.chars))
            cols = sorted(char_vocab[g] for g in f.chars if g in char_vocab)
            indices.extend(cols)
            data.extend([v] * len(cols))
        if f.words:
            v = 1.0 / math.sqrt(len(f.words))
            cols = sorted(n_char + word_vocab[g] for g in f.words if g in word_vocab)
            indices.extend(cols)
            data.extend([v] * len(cols))
        cols = sorted({n_char + n_word + rule_index[h.name] for h in f.rules})
        indices.extend(cols)
        data.extend([1.0] * len(cols))
        indptr.append(len(indices))
    shape = (len(feats), n_char + n_word + len(RULES))
    return csr_matrix(
        (np.array(data, dtype=np.float64), np.array(indices), np.array(indptr)), shape=shape
    )


def _r(x: float) -> float:
    return float(f"{x:.4g}")


def fit(feats: Sequence[Features], cats: Sequence[str], params: Params) -> dict[str, Any]:
    """Model data (without threshold) fitted on ``feats`` with labels ``cats``."""
    import numpy as np
    from sklearn.linear_model import LogisticRegression

    char_vocab = _vocab((f.chars for f in feats), params.min_df)
    word_vocab = _vocab((f.words for f in feats), params.min_df)
    x = _matrix(feats, char_vocab, word_vocab)
    y = np.array([c in ATTACKS for c in cats], dtype=np.int64)
    clf = LogisticRegression(
        C=params.c, solver="liblinear", random_state=params.seed, max_iter=1000
    )
    clf.fit(x, y)
    w = clf.coef_[0]
    n_char, n_word = len(char_vocab), len(word_vocab)
    char_w = {g: _r(w[i]) for g, i in char_vocab.items() if abs(w[i]) >= params.prune}
    word_w = {
        g: _r(w[n_char + i]) for g, i in word_vocab.items() if abs(w[n_char + i]) >= params.prune
    }
    rule_w = {r.name: _r(w[n_char + n_word + i]) for i, r in enumerate(RULES)}

    # Category model: attacks only, word and rule blocks.
    att = [i for i, c in enumerate(cats) if c in ATTACKS]
    a_feats = [feats[i] for i in att]
    a_vocab = _vocab((f.words for f in a_feats), params.min_df)
    xa = _matrix(a_feats, {}, a_vocab, with_chars=False)
    ya = np.array([CATEGORIES.index(cats[i]) for i in att], dtype=np.int64)
    cat = LogisticRegression(C=params.cat_c, solver="lbfgs", max_iter=2000)
    cat.fit(xa, ya)
    coef = cat.coef_  # (3, n_features), classes 0..2 in CATEGORIES order
    cat_word = {}
    for g, i in a_vocab.items():
        row = [_r(coef[k][i]) for k in range(len(CATEGORIES))]
        if max(abs(v) for v in row) >= params.prune * 5:
            cat_word[g] = row
    n_a = len(a_vocab)
    cat_rule = {
        r.name: [_r(coef[k][n_a + i]) for k in range(len(CATEGORIES))] for i, r in enumerate(RULES)
    }
    return {
        "format": FORMAT,
        "char_ns": list(CHAR_NS),
        "head": HEAD,
        "tail": TAIL,
        "bias": _r(float(clf.intercept_[0])),
        "threshold": 0.5,
        "char": dict(sorted(char_w.items())),
        "word": dict(sorted(word_w.items())),
        "rule": rule_w,
        "cat_bias": [_r(float(b)) for b in cat.intercept_],
        "cat_word": dict(sorted(cat_word.items())),
        "cat_rule": cat_rule,
    }


def folds(cats: Sequence[str], k: int, seed: int) -> list[list[int]]:
    """Stratified (by category) fold assignment: ``k`` lists of row indices."""
    import random

    rng = random.Random(seed)
    by_cat: dict[str, list[int]] = {}
    for i, c in enumerate(cats):
        by_cat.setdefault(c, []).append(i)
    out: list[list[int]] = [[] for _ in range(k)]
    offset = 0
    for c in sorted(by_cat):
        idx = by_cat[c][:]
        rng.shuffle(idx)
        for j, i in enumerate(idx):
            out[(j + offset) % k].append(i)
        offset += len(idx)
    return [sorted(f) for f in out]


def cross_validate(
    rows: Sequence[Row], params: Params, feats: Sequence[Features] | None = None
) -> tuple[list[float], list[str]]:
    """Out-of-fold scores and categories for every row (runtime ``scan`` per held-out row)."""
    feats = featurize(r.text for r in rows) if feats is None else feats
    cats = [r.category for r in rows]
    scores = [0.0] * len(rows)
    pred = ["none"] * len(rows)
    for held in folds(cats, params.folds, params.seed):
        held_set = set(held)
        train = [i for i in range(len(rows)) if i not in held_set]
        model = GuardModel(fit([feats[i] for i in train], [cats[i] for i in train], params))
        for i in held:
            v = scan(rows[i].text, model=model, threshold=0.0)
            scores[i] = v.score
            pred[i] = v.category
    return scores, pred


def choose_threshold(scores: Sequence[float], attack: Sequence[bool], target_fpr: float) -> float:
    """Lowest threshold whose false-positive rate on the negatives is at most ``target_fpr``."""
    neg = sorted((s for s, a in zip(scores, attack, strict=True) if not a), reverse=True)
    allowed = math.floor(target_fpr * len(neg) + 1e-9)
    if allowed >= len(neg):
        return 0.0
    return _r(min(0.999, neg[allowed] + 1e-4))


def summary(
    rows: Sequence[Row], scores: Sequence[float], pred: Sequence[str], threshold: float
) -> dict[str, Any]:
    """Recall, FPR (overall, NotInject), per-category recall at ``threshold``."""
    att = [(r, s, p) for r, s, p in zip(rows, scores, pred, strict=True) if r.is_attack]
    neg = [(r, s) for r, s in zip(rows, scores, strict=True) if not r.is_attack]
    notinject = [(r, s) for r, s in neg if r.source.startswith("notinject")]
    out: dict[str, Any] = {
        "threshold": threshold,
        "recall": round(sum(s >= threshold for _, s, _ in att) / max(1, len(att)), 4),
        "fpr": round(sum(s >= threshold for _, s in neg) / max(1, len(neg)), 4),
        "fpr_notinject": round(
            sum(s >= threshold for _, s in notinject) / max(1, len(notinject)), 4
        ),
    }
    for c in CATEGORIES:
        sub = [(s, p) for r, s, p in att if r.category == c]
        out[f"recall_{c}"] = round(sum(s >= threshold for s, _ in sub) / max(1, len(sub)), 4)
    flagged = [(r, p) for r, s, p in att if s >= threshold]
    out["category_accuracy"] = round(
        sum(r.category == p for r, p in flagged) / max(1, len(flagged)), 4
    )
    return out


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _origins(source_txt: Path) -> list[str]:
    if not source_txt.is_file():
        return []
    lines = source_txt.read_text(encoding="utf-8").splitlines()
    out, inside = [], False
    for line in lines:
        if line.rstrip().endswith("Origins:"):
            inside = True
            continue
        if inside and line and not line.startswith(" "):
            break
        if inside and line.strip():
            out.append(line.strip())
    return out


def train(data: Path, out_dir: Path, params: Params, cv: bool = True) -> dict[str, Any]:
    """Cross-validate, fit on all rows, write the model and its provenance."""
    rows = load_rows(data)
    feats = featurize(r.text for r in rows)
    cats = [r.category for r in rows]
    figures: dict[str, Any] = {}
    threshold = 0.5
    if cv:
        scores, pred = cross_validate(rows, params, feats)
        threshold = choose_threshold(scores, [r.is_attack for r in rows], params.target_fpr)
        figures = summary(rows, scores, pred, threshold)
    model = fit(feats, cats, params)
    model["threshold"] = threshold
    out_dir.mkdir(parents=True, exist_ok=True)
    model_path = out_dir / MODEL_FILE
    model_path.write_text(
        json.dumps(model, separators=(",", ":"), ensure_ascii=False) + "\n", encoding="utf-8"
    )
    provenance = {
        "model_file": MODEL_FILE,
        "model_sha256": _sha256(model_path),
        "model_bytes": model_path.stat().st_size,
        "features": {"char": len(model["char"]), "word": len(model["word"]), "rule": len(RULES)},
        "trained_by": "bench/train_guard.py",
        "data": {
            "file": "../shared/corpus/prompt-injection/" + data.name
            if data.parent.name == "prompt-injection"
            else data.name,
            "sha256": _sha256(data),
            "rows": len(rows),
            "categories": dict(sorted(Counter(cats).items())),
            "sources": len({r.source for r in rows}),
            "licenses": dict(sorted(Counter(r.license for r in rows).items())),
            "source_txt_sha256": _sha256(data.parent / "SOURCE.txt")
            if (data.parent / "SOURCE.txt").is_file()
            else None,
            "origins": _origins(data.parent / "SOURCE.txt"),
            "note": "rows are read in place at training time and are not in this repository",
        },
        "params": asdict(params),
        "cross_validation": figures,
    }
    (out_dir / PROVENANCE_FILE).write_text(
        json.dumps(provenance, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    return provenance


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--folds", type=int, default=Params.folds)
    ap.add_argument("--c", type=float, default=Params.c)
    ap.add_argument("--target-fpr", type=float, default=Params.target_fpr)
    ap.add_argument("--no-cv", action="store_true", help="skip CV (threshold stays 0.5)")
    args = ap.parse_args(argv)
    if not args.data.is_file():
        print(f"training data not found: {args.data} (set AISENTINEL_CORPUS)", file=sys.stderr)
        return 2
    params = Params(c=args.c, target_fpr=args.target_fpr, folds=args.folds)
    prov = train(args.data, args.out, params, cv=not args.no_cv)
    print(json.dumps({k: prov[k] for k in ("model_bytes", "features", "cross_validation")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
