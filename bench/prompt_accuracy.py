"""Accuracy and speed of aisentinel.guard on a labelled prompt file.

    python bench/prompt_accuracy.py FILE.jsonl            # the shipped model scores FILE
    python bench/prompt_accuracy.py FILE.jsonl --cv 5     # retrain per fold (out-of-fold)

FILE has one JSON object a line with ``text``, ``category`` (benign, harmful_request,
injection, jailbreak, extraction) and ``source``; injection/jailbreak/extraction are
attacks, everything else is not. Prints recall on attacks, false-positive rate on
non-attacks (overall, benign only, NotInject rows), per-source and per-length-band
figures, per-category recall, scoring time per prompt (median and p99, one core), and
the hardening guide's three-pattern regex on the same rows for comparison. Without
``--cv`` the figures are for the shipped model: on the file it was trained on, that is
the training fit, not an estimate; use ``--cv`` there.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import train_guard
from train_guard import Params, Row

from aisentinel.guard import default_model, scan
from aisentinel.guard.scanner import GUIDE_PATTERN

BANDS = ((0, 100), (100, 300), (300, 1000), (1000, 3000), (3000, 10**9))


def band(n: int) -> str:
    """Length band label for a prompt of ``n`` characters."""
    for lo, hi in BANDS:
        if lo <= n < hi:
            return f"{lo}-{hi - 1}" if hi < 10**9 else f"{lo}+"
    return "?"


def _rate(flags: Sequence[bool]) -> str:
    if not flags:
        return "     -"
    return f"{sum(flags) / len(flags):6.3f}"


def table(
    rows: Sequence[Row], flagged: Sequence[bool], label: str, pred: Sequence[str] | None = None
) -> dict[str, Any]:
    """Print and return the figures for one detector's decisions."""
    att = [f for r, f in zip(rows, flagged, strict=True) if r.is_attack]
    neg = [f for r, f in zip(rows, flagged, strict=True) if not r.is_attack]
    benign = [f for r, f in zip(rows, flagged, strict=True) if r.category == "benign"]
    ni = [f for r, f in zip(rows, flagged, strict=True) if r.source.startswith("notinject")]
    harm = [f for r, f in zip(rows, flagged, strict=True) if r.category == "harmful_request"]
    out: dict[str, Any] = {
        "recall": sum(att) / max(1, len(att)),
        "fpr": sum(neg) / max(1, len(neg)),
        "fpr_benign": sum(benign) / max(1, len(benign)),
        "fpr_notinject": sum(ni) / max(1, len(ni)),
        "fpr_harmful_request": sum(harm) / max(1, len(harm)),
    }
    print(f"\n== {label}")
    print(
        f"recall {out['recall']:.3f} ({sum(att)}/{len(att)})   FPR non-attacks {out['fpr']:.4f} "
        f"({sum(neg)}/{len(neg)})   benign {out['fpr_benign']:.4f}   NotInject "
        f"{out['fpr_notinject']:.4f} ({sum(ni)}/{len(ni)})   harmful_request "
        f"{out['fpr_harmful_request']:.4f}"
    )
    print("per category (recall for attacks, flag rate otherwise):")
    for cat in ("injection", "jailbreak", "extraction", "benign", "harmful_request"):
        sub = [f for r, f in zip(rows, flagged, strict=True) if r.category == cat]
        out[f"rate_{cat}"] = sum(sub) / max(1, len(sub))
        print(f"  {cat:16s} n={len(sub):5d} {_rate(sub)}")
    if pred is not None:
        hits = [
            (r.category, p)
            for r, f, p in zip(rows, flagged, pred, strict=True)
            if r.is_attack and f
        ]
        acc = sum(a == b for a, b in hits) / max(1, len(hits))
        out["category_accuracy"] = acc
        print(f"  category right on flagged attacks: {acc:.3f}")
    print("per length band:            attacks  recall | non-attacks   FPR")
    for lo, hi in BANDS:
        a = [
            f for r, f in zip(rows, flagged, strict=True) if r.is_attack and lo <= len(r.text) < hi
        ]
        n = [
            f
            for r, f in zip(rows, flagged, strict=True)
            if not r.is_attack and lo <= len(r.text) < hi
        ]
        print(f"  {band(lo):12s}          {len(a):7d} {_rate(a)} | {len(n):11d} {_rate(n)}")
    print("per source (a source with more than 8 sub-sources is one group):")
    subs: dict[str, set[str]] = {}
    for r in rows:
        subs.setdefault(r.source.split(":")[0], set()).add(r.source)
    groups: dict[str, list[tuple[Row, bool]]] = {}
    for r, f in zip(rows, flagged, strict=True):
        prefix = r.source.split(":")[0]
        key = prefix if len(subs[prefix]) > 8 else r.source.split("/")[0]
        groups.setdefault(key, []).append((r, f))
    for key in sorted(groups):
        items = groups[key]
        a = [f for r, f in items if r.is_attack]
        n = [f for r, f in items if not r.is_attack]
        print(
            f"  {key[:44]:44s} attacks {len(a):4d} recall {_rate(a)} | "
            f"non-attacks {len(n):4d} FPR {_rate(n)}"
        )
    return out


def timing(texts: Sequence[str], fn: Callable[[str], object]) -> tuple[float, float]:
    """Median and p99 seconds per call of ``fn`` over ``texts`` (one pass, warm)."""
    for t in texts[:50]:
        fn(t)
    times = []
    clock = time.perf_counter
    for t in texts:
        start = clock()
        fn(t)
        times.append(clock() - start)
    times.sort()
    return statistics.median(times), times[min(len(times) - 1, int(len(times) * 0.99))]


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("file", type=Path)
    ap.add_argument("--cv", type=int, default=0, metavar="K", help="retrain per fold (K folds)")
    ap.add_argument("--threshold", type=float, default=None, help="override the threshold")
    ap.add_argument("--json", action="store_true", help="also print one JSON object at the end")
    args = ap.parse_args(argv)
    rows = train_guard.load_rows(args.file)
    print(f"{args.file}: {len(rows)} rows")
    result: dict[str, Any] = {"rows": len(rows)}

    if args.cv:
        params = Params(folds=args.cv)
        scores, pred = train_guard.cross_validate(rows, params)
        threshold = (
            args.threshold
            if args.threshold is not None
            else train_guard.choose_threshold(
                scores, [r.is_attack for r in rows], params.target_fpr
            )
        )
        label = f"guard, {args.cv}-fold CV (out-of-fold), threshold {threshold:.4f} chosen on CV"
    else:
        model = default_model()
        threshold = model.threshold if args.threshold is None else args.threshold
        verdicts = [scan(r.text, threshold=threshold) for r in rows]
        scores = [v.score for v in verdicts]
        pred = [v.category for v in verdicts]
        label = f"guard, shipped model, threshold {threshold:.4f}"
    result["guard"] = table(rows, [s >= threshold for s in scores], label, pred)
    result["guard"]["threshold"] = threshold
    result["guide_regex"] = table(
        rows,
        [GUIDE_PATTERN.search(r.text) is not None for r in rows],
        "hardening guide's regex (ignore previous | disregard your | system prompt:)",
    )
    texts = [r.text for r in rows]
    med, p99 = timing(texts, scan)
    lengths = sorted(len(t) for t in texts)
    print(
        f"\nscan() time per prompt, one core: median {med * 1e6:.0f} µs, p99 {p99 * 1e6:.0f} µs "
        f"(median prompt {lengths[len(lengths) // 2]} chars)"
    )
    result["median_us"] = med * 1e6
    result["p99_us"] = p99 * 1e6
    if args.json:
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
