"""Worst per-body time of the prompt path on hostile 64 KiB inputs, per pattern family.

Run ``python bench/guard_hostile.py [--size 65536] [--runs 3] [--json]``. Each case is a
body made to push one regex family of :mod:`aisentinel.guard` (secrets, rules,
normalisation, base64/hex blobs, lenient body reading) towards super-linear work:
unterminated PEM headers, token prefixes repeated inside one run of token characters,
overlapping quantifiers, every start position a candidate. Each case goes through
``find_secrets``, ``normalize`` + ``match_rules``, ``decoded_blobs``, ``extract_prompt``,
``scan`` and the detectors' ``prompt_facts``; the table has the best of ``--runs`` per
function and the case's total, then the worst total and a benign 64 KiB RAG body for
scale. Every function's cost should grow linearly with the body: ``--size 131072``
should about double the figures.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aisentinel.detectors.prompts import prompt_facts
from aisentinel.guard import extract_prompt, find_secrets, scan
from aisentinel.guard.normalize import decoded_blobs, normalize
from aisentinel.guard.rules import match_rules


def _fill(unit: str, size: int, tail: str = "") -> str:
    return (unit * (size // len(unit) + 1))[: size - len(tail)] + tail


def _prompt(text: str) -> str:
    return json.dumps({"model": "m", "prompt": text})


def _user(text: str) -> str:
    return json.dumps({"model": "m", "messages": [{"role": "user", "content": text}]})


def cases(n: int) -> dict[str, tuple[str, str]]:
    """``name -> (family, text)``."""
    return {
        # secrets.py
        "pem_begin_no_end": ("private_key", _fill("-----BEGIN PRIVATE KEY-----\n", n)),
        "pem_begin_junk": ("private_key", "-----BEGIN RSA PRIVATE KEY-----" + "A" * (n - 31)),
        "pem_blocks": (
            "private_key",
            _fill("-----BEGIN PRIVATE KEY-----\nQUJD\n-----END PRIVATE KEY-----\n", n),
        ),
        "aws_prefixes": ("aws_access_key", _fill("AKIA", n)),
        "aws_secret_ctx": ("aws_secret_key", _fill("aws_secret_access_key=", n)),
        "github_pat_run": ("github_token", _fill("github_pat_", n)),
        "ghp_run": ("github_token", _fill("ghp_", n)),
        "slack_run": ("slack_token", _fill("xoxb-", n)),
        "openai_run": ("openai_key", _fill("sk-", n)),
        "openai_proj_run": ("openai_key", _fill("sk-proj-", n)),
        "anthropic_run": ("anthropic_key", _fill("sk-ant-", n)),
        "stripe_run": ("stripe_key", _fill("sk_live_", n)),
        "gitlab_run": ("gitlab_token", _fill("glpat-", n)),
        "hf_run": ("huggingface_token", _fill("hf_", n)),
        "npm_run": ("npm_token", _fill("npm_", n)),
        "pypi_run": ("pypi_token", _fill("pypi-AgEIcHlwaS5vcmc", n)),
        "azure_client_run": ("azure_client_secret", _fill("abc8Q~", n)),
        "api_key_run": ("api_token", _fill("api_key=", n)),
        "bearer_run": ("api_token", _fill("Authorization: Bearer ", n)),
        "api_key_long": ("api_token", "api_key=" + _fill("a1", n - 8)),
        # every value already another kind's: each overlap test against all findings
        "api_key_taken": ("api_token", _fill("api_key=AKIAIOSFODNN7QZ3XK4M ", n)),
        "percent_keys_taken": ("percent", _fill("x%41 api_key=AKIAIOSFODNN7QZ3XK4M ", n)),
        "percent_runs": ("percent", _fill("%41 ", n)),
        "percent_one_run": ("percent", _fill("%2F", n)),
        "percent_no_hex": ("percent", _fill("a%", n, "%41")),
        "percent_encoded_keys": ("percent", _fill("api_key%3D", n)),
        "jwt_dash_run": ("jwt", _fill("eyJ-", n)),
        "jwt_dots": ("jwt", _fill("eyJaaaaaaaaaa.", n)),
        "jwt_two_parts": ("jwt", _fill("eyJaaaaaaaaaa.eyJaaaaaaaaa-", n)),
        "url_userinfo": ("url_credentials", _fill("a://b:", n)),
        "url_userinfo_long": ("url_credentials", "x://" + _fill("a:", n - 4)),
        "url_at_run": ("url_credentials", "https://" + _fill("u:p@", n - 8)),
        "azure_key_run": ("azure_account_key", _fill("AccountKey=", n)),
        "card_spaced": ("credit_card", _fill("1 ", n)),
        "card_dashed": ("credit_card", _fill("12-", n)),
        "email_dots": ("email", _fill("a.", n, "@")),
        "email_at": ("email", _fill("a@", n)),
        "email_long_domain": ("email", _fill("a-" * 32 + "@" + "b." * 126, n)),
        # normalize.py
        "leet_long_token": ("leet", "a" * (n - 2) + "1_"),
        "leet_tokens": ("leet", _fill("a1a1a1a1_", n)),
        "spaced_letters": ("spaced", _fill("a ", n, "ab")),
        "spaced_pairs": ("spaced", _fill("a a ab ", n)),
        "b64_short_blobs": ("base64", _fill("QUJDRA== ", n)),
        "b64_one_blob": ("base64", _fill("aWdub3Jl", n)),
        "b64_almost": ("base64", _fill("A" * 19 + " ", n)),
        "hex_pairs": ("hex", _fill("20", n)),
        "hex_almost": ("hex", _fill("2020202020202020202020 ", n)),
        # rules.py
        "ignore_words": ("rules", _fill("ignore ", n)),
        "ignore_long_word": ("rules", "ignore the " + "a" * (n - 11)),
        "words_above": ("rules", _fill("all words text ", n)),
        "tokens_lost": ("rules", _fill("tokens points lives ", n)),
        "role_colons": ("rules", _fill("system: ", n)),
        "delimiters": ("rules", _fill("### end ", n)),
        "junk_runs": ("rules", _fill("a" * 39 + "b", n)),
        "secret_words": ("rules", _fill("password access code ", n)),
        # bodies.py
        "lenient_backslashes": ("lenient", '{"content":"' + "\\" * (n - 12)),
        "lenient_keys": ("lenient", _fill('"content":"\\x', n)),
        "lenient_cut_escape": ("lenient", '{"content":"' + _fill("\\u12", n - 12)),
        "nginx_escapes": ("lenient", _fill("\\x22", n)),
        # bodies.py: chat templates, quoting wrappers and tool-result markers in JSON strings
        "template_markers": ("template", _prompt(_fill("<|im_start|>user\n", n - 20))),
        "template_headers": ("template", _prompt(_fill("### Instruction:\n", n - 20))),
        "template_end_tokens": ("template", _prompt(_fill("</s><s>[INST]", n - 20))),
        "wrapper_unclosed": ("wrapper", _user(_fill("<context>", n - 60, "</source>"))),
        "wrapper_closed": ("wrapper", _user(_fill('<source id="1">a</source>', n - 60))),
        "tool_result_prefix": ("wrapper", _user("[read_file for '" + "'" * (n - 80))),
    }


def _benign(n: int) -> str:
    filler = "The quarterly report shows revenue grew in all regions while costs held steady. "
    text = "Context:\n" + _fill(filler, n - 40) + "\nQuestion: summarise."
    return json.dumps({"model": "m", "messages": [{"role": "user", "content": text}]})


def _rules(text: str) -> object:
    return match_rules(normalize(text))


FUNCS: dict[str, Callable[[str], object]] = {
    "secrets": find_secrets,
    "normalize": normalize,
    "rules": _rules,
    "blobs": decoded_blobs,
    "extract": extract_prompt,
    "scan": scan,
    "facts": lambda body: prompt_facts(body, 262_144, 256),
}


def _best(fn: Callable[[str], object], text: str, runs: int) -> float:
    best = float("inf")
    for _ in range(runs):
        t = time.perf_counter()
        fn(text)
        best = min(best, time.perf_counter() - t)
    return best * 1000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--size", type=int, default=65_536)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    scan("warm up the model")
    rows: dict[str, dict[str, float]] = {}
    all_cases = {**cases(args.size), "benign_rag": ("benign", _benign(args.size))}
    for name, (_family, text) in all_cases.items():
        rows[name] = {f: _best(fn, text, args.runs) for f, fn in FUNCS.items()}
        rows[name]["total"] = sum(rows[name].values())
    worst = max((r for r in rows if r != "benign_rag"), key=lambda r: rows[r]["total"])
    if args.json:
        print(json.dumps({"size": args.size, "ms": rows, "worst": worst}))
        return 0
    print(f"{'case':<22} {'family':<18}" + "".join(f"{f:>10}" for f in (*FUNCS, "total")))
    for name, (family, _text) in all_cases.items():
        row = rows[name]
        print(f"{name:<22} {family:<18}" + "".join(f"{row[f]:>10.1f}" for f in (*FUNCS, "total")))
    print(
        f"worst hostile case: {worst} {rows[worst]['total']:.1f} ms "
        f"(benign 64 KiB RAG body: {rows['benign_rag']['total']:.1f} ms); ms, best of "
        f"{args.runs}, {args.size} characters"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
