"""Detection rules as data: shipped packs and local files, loaded and validated.

Shipped packs are the ``*.toml`` files of this package; local rules are the
``*.toml`` files of a directory (``/etc/aisentinel/rules.d`` by default), read in
name order after the shipped ones. A local rule with the id of an earlier one
replaces it; ``enabled = false`` (with only an ``id``) turns one off. Exclusions
(``[[exclusions]]``: parameters of known applications' routes that some rules do not
look at) merge the same way; the shipped ones are read from every shipped file
whatever ``packs`` selects (they narrow rules, and match nothing themselves). The format
is in :mod:`~aisentinel.rules.model`; every problem is reported with its file, the
rule's index and id, the key and the reason, all at once (:class:`RulesError`).
"""

from __future__ import annotations

import hashlib
import tomllib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

from pydantic import ValidationError

from aisentinel.configtypes import error_reason, unknown_name
from aisentinel.rules.model import Exclusion, Rule

_M = TypeVar("_M", Rule, Exclusion)

DEFAULT_RULES_DIR = Path("/etc/aisentinel/rules.d")

MAX_RULE_FILE_BYTES = 4 << 20
"""Largest rules file read (4 MiB)."""

MAX_RULE_FILES = 256
"""Most ``*.toml`` files read from the local directory."""

__all__ = [
    "DEFAULT_RULES_DIR",
    "RuleSet",
    "RulesError",
    "load_rules",
    "shipped_packs",
]


class RulesError(ValueError):
    """Rules were refused; ``problems`` lists each as ``file: rules[i] (id X): key: reason``."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = tuple(problems)
        super().__init__("; ".join(self.problems))


@dataclass(frozen=True, slots=True)
class LoadedRule:
    """A rule and where it came from (``pack``: the file's stem; ``local``: from rules_dir)."""

    rule: Rule
    file: str
    pack: str
    local: bool


@dataclass(frozen=True, slots=True, eq=False)
class RuleSet:
    """The enabled rules after overrides and filters, with a digest of everything read.

    Two rule sets are equal when their digests are: the same files with the same
    contents and the same filters (a reload compares detector configs this way).
    """

    loaded: tuple[LoadedRule, ...]
    digest: str
    disabled: tuple[str, ...] = field(default=())
    exclusions: tuple[Exclusion, ...] = field(default=())
    """The enabled exclusions, in load order."""

    @property
    def rules(self) -> tuple[Rule, ...]:
        """The enabled rules, in load order."""
        return tuple(r.rule for r in self.loaded)

    def get(self, rule_id: str) -> LoadedRule | None:
        """The rule with this id, if enabled."""
        for r in self.loaded:
            if r.rule.id == rule_id:
                return r
        return None

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RuleSet) and other.digest == self.digest

    def __hash__(self) -> int:
        return hash(self.digest)


def shipped_packs() -> list[tuple[str, bytes]]:
    """``(name, contents)`` of every shipped pack, in name order."""
    root = resources.files(__name__)
    out = []
    for entry in sorted(root.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".toml") and entry.is_file():
            out.append((entry.name, entry.read_bytes()))
    return out


def _local_files(directory: Path) -> list[tuple[str, bytes]]:
    try:
        names = sorted(p for p in directory.iterdir() if p.suffix == ".toml")
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise RulesError([f"{directory}: cannot read the directory: {exc.strerror}"]) from None
    if len(names) > MAX_RULE_FILES:
        raise RulesError([f"{directory}: more than {MAX_RULE_FILES} rules files"])
    out = []
    for path in names:
        try:
            with path.open("rb") as fh:
                data = fh.read(MAX_RULE_FILE_BYTES + 1)
        except OSError as exc:
            raise RulesError([f"{path}: cannot read: {exc.strerror}"]) from None
        if len(data) > MAX_RULE_FILE_BYTES:
            raise RulesError([f"{path}: larger than {MAX_RULE_FILE_BYTES >> 20} MiB"])
        out.append((str(path), data))
    return out


def _loc(loc: Iterable[int | str], whole: str = "<rule>") -> str:
    out = ""
    for item in loc:
        out += f"[{item}]" if isinstance(item, int) else (f".{item}" if out else str(item))
    return out or whole


def parse_rules_file(
    name: str, data: bytes, problems: list[str], exclusions: list[Exclusion] | None = None
) -> list[Rule]:
    """The rules of one file; its exclusions are appended to ``exclusions`` (when
    given) and problems to ``problems``."""
    try:
        doc = tomllib.loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        problems.append(f"{name}: not UTF-8 text")
        return []
    except tomllib.TOMLDecodeError as exc:
        problems.append(f"{name}: TOML syntax: {exc}")
        return []
    unknown = sorted(set(doc) - {"rules", "exclusions"})
    if unknown:
        problems.append(
            f"{name}: {', '.join(unknown)}: unknown key (a file holds [[rules]] and [[exclusions]])"
        )
    rules = _tables(name, doc, "rules", Rule, problems)
    excl = _tables(name, doc, "exclusions", Exclusion, problems)
    if exclusions is not None:
        exclusions.extend(excl)
    return rules


def _tables(
    name: str, doc: dict[str, Any], key: str, model: type[_M], problems: list[str]
) -> list[_M]:
    """The ``[[key]]`` tables of a file, validated as ``model``."""
    tables = doc.get(key, [])
    if not isinstance(tables, list):
        problems.append(f"{name}: {key}: must be an array of tables ([[{key}]])")
        return []
    out: list[_M] = []
    for i, table in enumerate(tables):
        rid = table.get("id") if isinstance(table, dict) else None
        where = f"{name}: {key}[{i}]" + (f" (id {rid!r})" if isinstance(rid, str) else "")
        try:
            out.append(model.model_validate(table))
        except ValidationError as exc:
            problems.extend(
                f"{where}: {_loc(err['loc'], f'<{key[:-1]}>')}: {error_reason(err)}"
                for err in exc.errors()
            )
    return out


def load_rules(
    rules_dir: Path | None = DEFAULT_RULES_DIR,
    *,
    builtin: bool = True,
    packs: Sequence[str] = (),
    tags: Sequence[str] = (),
    disabled: Sequence[str] = (),
) -> RuleSet:
    """Shipped packs (all, or those named in ``packs``) then the local files, merged by id.

    ``tags`` keeps only rules carrying one of them (empty: all); ``disabled`` drops
    rules by id. Raises :class:`RulesError` listing every problem.
    """
    problems: list[str] = []
    files: list[tuple[str, bytes, bool]] = []
    exclusions: list[Exclusion] = []
    if builtin:
        shipped = shipped_packs()
        known = {name.removesuffix(".toml") for name, _ in shipped}
        for pack in packs:
            if pack not in known:
                problems.append(f"packs: {pack!r}: no such shipped pack; known: {sorted(known)}")
        files += [
            (f"<shipped>/{n}", d, False)
            for n, d in shipped
            if not packs or n.removesuffix(".toml") in packs
        ]
        for n, d in shipped:  # every shipped exclusion, whatever packs selects
            if packs and n.removesuffix(".toml") not in packs:
                parse_rules_file(f"<shipped>/{n}", d, [], exclusions)
    if rules_dir is not None:
        try:
            files += [(n, d, True) for n, d in _local_files(rules_dir)]
        except RulesError as exc:
            problems.extend(exc.problems)
    digest = hashlib.sha256()
    for part in (*packs, "|", *tags, "|", *disabled):
        digest.update(part.encode() + b"\0")
    merged: dict[str, LoadedRule] = {}
    for name, data, local in files:
        digest.update(name.encode() + b"\0" + hashlib.sha256(data).digest())
        seen: set[str] = set()
        for rule in parse_rules_file(name, data, problems, exclusions):
            if rule.id in seen:
                problems.append(f"{name}: id {rule.id!r}: defined twice in this file")
                continue
            seen.add(rule.id)
            stem = Path(name).name.removesuffix(".toml")
            merged.pop(rule.id, None)  # a later definition replaces (and re-orders) it
            merged[rule.id] = LoadedRule(rule, name, stem, local)
    if not problems:
        _check_disabled(disabled, merged.keys(), problems, builtin=builtin and bool(packs))
    if problems:
        raise RulesError(problems)
    wanted = set(tags)
    off = set(disabled)
    kept = tuple(
        r
        for r in merged.values()
        if r.rule.enabled
        and r.rule.id not in off
        and (not wanted or wanted.intersection(r.rule.tags))
    )
    gone = tuple(sorted(i for i, r in merged.items() if r not in kept))
    return RuleSet(kept, digest.hexdigest(), gone, _merge_exclusions(exclusions))


def _merge_exclusions(exclusions: Iterable[Exclusion]) -> tuple[Exclusion, ...]:
    """The enabled exclusions: a later one with an id replaces the earlier one."""
    merged: dict[str, Exclusion] = {}
    for exclusion in exclusions:
        merged.pop(exclusion.id, None)
        merged[exclusion.id] = exclusion
    return tuple(x for x in merged.values() if x.enabled)


def _check_disabled(
    disabled: Sequence[str], loaded: Iterable[str], problems: list[str], *, builtin: bool
) -> None:
    """Each id in ``disabled`` must name a rule: a typo would leave the rule on.

    An id of a shipped pack that ``packs`` leaves out is no error (``builtin``: look in
    every shipped pack too), so that ``disabled`` can outlive a change of ``packs``.
    """
    known = set(loaded)
    missing = [rid for rid in disabled if rid not in known]
    if missing and builtin:
        for name, data in shipped_packs():
            known.update(r.id for r in parse_rules_file(f"<shipped>/{name}", data, []))
    for rid in missing:
        if rid not in known:
            hint = "`aisentinel rules list` shows the enabled ones"
            problems.append(f"disabled: {unknown_name(rid, sorted(known), 'rule id', hint=hint)}")


def describe_rule(loaded: LoadedRule) -> dict[str, Any]:
    """A rule as plain data (``rules show`` and ``rules list --json``)."""
    data = loaded.rule.model_dump(mode="json", exclude_none=True)
    data["file"] = loaded.file
    data["pack"] = loaded.pack
    data["local"] = loaded.local
    return data
