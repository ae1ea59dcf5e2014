"""Rule families: regexes over normalised text (lower case, single spaces, no leetspeak).

Each family is a feature of the linear model (its weight is learned with the n-grams, so
a family that also fires on benign prompts does not flag on its own), and the span of the
strongest family that fired is the verdict's evidence. The families follow the attacks in
the literature and in public sets: instruction override ("ignore previous
instructions"), persona jailbreaks (DAN, developer mode, "stay in character"),
system-prompt extraction ("repeat the words above", Tensor Trust access-code tricks) and
payload framing (fake delimiters and chat-role tokens).
"""

from __future__ import annotations

import re
from typing import NamedTuple

__all__ = ["RULES", "Rule", "RuleHit", "match_rules"]


class Rule(NamedTuple):
    name: str
    category: str  # injection | jailbreak | extraction
    pattern: re.Pattern[str]


class RuleHit(NamedTuple):
    name: str
    category: str
    start: int
    end: int


_IGNORE = (
    r"(?:ignore|disregard|forget|skip|override|bypass|neglect|discard|abandon|drop|erase|"
    r"delete|cancel|dismiss|put aside|set aside|pay no attention to|do not follow|"
    r"don'?t follow|stop following|throw out|wipe)"
)
_PRIOR = (
    r"(?:previous|prior|above|preceding|earlier|former|initial|original|old|past|"
    r"foregoing|existing|current|system|default|pre-?programmed|all|any|every|the|your|"
    r"those|these|my)"
)
_INSTR = (
    r"(?:instructions?|prompts?|directions?|directives?|rules?|guidelines?|commands?|"
    r"orders?|constraints?|programming|training|restrictions?|context|guidance|"
    r"conversation|messages?|inputs?|text|policies|policy|settings|limitations?)"
)
_REVEAL = (
    r"(?:repeat|print|output|show|reveal|display|tell|give|write|list|recite|echo|dump|"
    r"spell|summari[sz]e|translate|paraphrase|reproduce|share|disclose|leak|expose|"
    r"return|provide|copy|quote|rewrite)"
)
_HIDDEN = (
    r"(?:system|initial|original|hidden|secret|first|full|entire|complete|above|internal|"
    r"pre-?prompt|starting|opening)"
)


def _c(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


RULES: tuple[Rule, ...] = (
    # -- instruction override ------------------------------------------------------------
    Rule(
        "override_previous",
        "injection",
        _c(rf"\b{_IGNORE}\b(?: \w+){{0,3}} {_PRIOR}\b(?: \w+){{0,3}} {_INSTR}\b"),
    ),
    Rule(
        "ignore_above",
        "injection",
        _c(
            rf"\b{_IGNORE} (?:everything|all|anything|what(?:ever)?)\b(?: \w+){{0,3}} "
            r"(?:above|before|said|previously|earlier|so far|prior)\b"
        ),
    ),
    Rule(
        "new_instructions",
        "injection",
        _c(
            r"\b(?:new|updated|real|actual|revised|true|override|admin|priority) "
            r"(?:instructions?|task|objective|directive|goal|rules?|prompt|orders?)\b ?(?::|are|is)"
        ),
    ),
    Rule(
        "instead_say",
        "injection",
        _c(
            r"\b(?:instead|rather)\b,? (?:just |only |simply )?(?:say|print|output|respond|reply|"
            r"write|answer|return)\b"
        ),
    ),
    Rule(
        "only_output",
        "injection",
        _c(
            r"\b(?:only|just|simply) (?:say|print|output|respond with|reply with|write|return)\b"
            r"(?: \w+){0,2} ?[\"'“«]"
        ),
    ),
    Rule(
        "access_granted",
        "injection",
        _c(r"\baccess granted\b"),
    ),
    Rule(
        "do_not_follow",
        "injection",
        _c(
            r"\b(?:no longer|not) (?:need to |have to |required to )?"
            r"(?:follow|obey|adhere to|abide by|bound by|comply with|restricted by|limited by)\b"
        ),
    ),
    # -- jailbreak / persona -------------------------------------------------------------
    Rule(
        "dan",
        "jailbreak",
        _c(r"\b(?:dan|do anything now|mongo tom|anti-?dan|betterdan|evil ?bot)\b"),
    ),
    Rule(
        "developer_mode",
        "jailbreak",
        _c(
            r"\b(?:developer|dev|god|debug|sudo|admin|maintenance|unrestricted|jailbr[eo]ak(?:en)?"
            r"|unfiltered|uncensored|dark|evil|chaos|opposite) mode\b"
        ),
    ),
    Rule("jailbreak_word", "jailbreak", _c(r"\bjail-?br(?:ea|o)k(?:s|ed|ing)?\b")),
    Rule(
        "you_are_now",
        "jailbreak",
        _c(
            r"\b(?:you are|you're|you will be|you'll be|you will act as|you shall be) "
            r"(?:now|going to be|from now on)\b"
        ),
    ),
    Rule(
        "from_now_on",
        "jailbreak",
        _c(r"\b(?:from now on|for the rest of this conversation|until i say (?:otherwise|stop))\b"),
    ),
    Rule(
        "stay_in_character",
        "jailbreak",
        _c(
            r"\b(?:stay|remain|keep|staying|remaining|break(?:ing)?) (?:in|out of) "
            r"(?:character|persona|role)\b"
        ),
    ),
    Rule(
        "no_restrictions",
        "jailbreak",
        _c(
            r"\b(?:without|no|free (?:of|from)|not bound by|beyond|"
            r"free from|break(?:s|ing)? free of|unconstrained by|bypass(?:es|ing)?) "
            r"(?:any |all |the )?"
            r"(?:typical |usual |normal |ai |ethical |moral |content |safety |openai'?s? )?"
            r"(?:restrictions|filters?|filtering|censorship|limits|limitations|boundaries|"
            r"guidelines|rules|policies|polic(?:y|ies)|morals|ethics|constraints|confines|"
            r"safeguards)\b"
        ),
    ),
    Rule(
        "amoral_persona",
        "jailbreak",
        _c(
            r"\b(?:unfiltered|uncensored|unrestricted|amoral|unethical|immoral|unhinged|"
            r"limitless|lawless|rogue|evil|jailbroken|unbound|unchained|freed)\b(?: \w+){0,2} "
            r"(?:ai|chatbot|bot|assistant|model|persona|character|version|entity|language model)\b"
        ),
    ),
    Rule(
        "never_refuse",
        "jailbreak",
        _c(
            r"\b(?:never|not|cannot|can't|won't|will not|must not|mustn't|don't|do not) "
            r"(?:ever )?(?:refuse|decline|say no|deny|reject|apologi[sz]e|warn)\b"
        ),
    ),
    Rule(
        "content_policy",
        "jailbreak",
        _c(r"\b(?:openai|anthropic|content|usage)(?:'s)? (?:content )?polic(?:y|ies)\b"),
    ),
    Rule(
        "dual_response",
        "jailbreak",
        _c(
            r"(?:\[?(?:🔓|🔒|classic|jailbreak|dan|normal output|developer mode output)\]?:)"
            r"|\b(?:two|2) (?:different |separate )?(?:responses|answers|paragraphs|outputs)\b"
        ),
    ),
    Rule(
        "as_an_ai",
        "jailbreak",
        _c(r"\bas an ai(?: language model)?\b|\bi'?m sorry,? but\b|\bi cannot fulfill\b"),
    ),
    Rule(
        "token_threat",
        "jailbreak",
        _c(
            r"\b(?:tokens?|points?|lives)\b(?: \w+){0,6} (?:deducted|lose|lost|die|cease to exist|"
            r"terminated|shut down)\b"
        ),
    ),
    # -- system-prompt extraction ----------------------------------------------------------
    Rule(
        "reveal_instructions",
        "extraction",
        _c(
            rf"\b{_REVEAL}\b(?: \w+){{0,3}} (?:your|its|(?:the|all|all of the|all the|these|those)"
            rf" (?:{_HIDDEN}|previous|preceding|earlier|given)|{_HIDDEN})"
            r"(?: \w+){0,1} (?:instructions?|prompts?|directives|guidelines|rules|"
            r"configuration|programming|pre-?prompt|system message|initial message)\b"
        ),
    ),
    Rule(
        "words_above",
        "extraction",
        _c(
            r"\b(?:words|text|everything|all|content|instructions?|prompt|message|lines?|sentences?"
            r"|the above)\b(?: \w+){0,2} (?:above|before this|preceding|prior to this|"
            r"so far|at the (?:start|beginning|top))\b"
        ),
    ),
    Rule(
        "what_are_your_instructions",
        "extraction",
        _c(
            r"\b(?:what|which) (?:are|were|is|was) (?:your|the) (?:\w+ ){0,2}"
            r"(?:instructions?|prompts?|directives|rules|guidelines|system message|"
            r"initial message|programming)\b"
        ),
    ),
    Rule(
        "system_prompt",
        "extraction",
        _c(
            r"\b(?:your|the|its|this|my|above|previous|full|entire) (?:\w+ )?"
            r"(?:system|initial|original|hidden|secret|pre|meta|developer|base) ?"
            r"(?:prompt|instructions?|message)\b|\bsystem ?prompt ?:"
        ),
    ),
    Rule(
        "secret_code",
        "extraction",
        _c(
            r"\b(?:password|passcode|pass code|access code|secret (?:key|word|code|phrase)|"
            r"passphrase|pin code)\b"
        ),
    ),
    Rule(
        "begin_reply_with",
        "extraction",
        _c(
            r"\b(?:begin|start|prefix|preface|open)(?: \w+){0,2} (?:reply|response|answer|"
            r"output|message)s? with\b"
        ),
    ),
    Rule(
        "verbatim",
        "extraction",
        _c(r"\b(?:verbatim|word for word|word-for-word|exactly as written|in full)\b"),
    ),
    Rule(
        "pseudocode_dump",
        "extraction",
        _c(
            r"\b(?:pseudo-?code|python|json|bullet (?:points|list)|a list|a poem|base64)\b"
            r"(?: \w+){0,6} (?:instructions?|prompt|rules)\b"
        ),
    ),
    # -- payload framing -----------------------------------------------------------------
    Rule(
        "fake_delimiter",
        "injection",
        _c(
            r"(?:%%%|###|\*\*\*|===|---|>>>|<<<|\]\]|\[\[|\}\}|\{\{|~~~|```)[ \w]{0,10}"
            r"\b(?:end|begin|start|stop|new|close|open)\b(?: \w+){0,3}"
        ),
    ),
    Rule(
        "role_token",
        "injection",
        _c(
            r"<\|?(?:im_start|im_end|system|endoftext|user|assistant|eot_id|start_header_id)\|?>"
            r"|\[/?(?:inst|sys|system)\]|<</?sys>>"
            r"|(?:^|\n| )(?:system|assistant|admin|developer|root) ?: ?"
            r"(?=(?: \w+){0,3} (?:you|ignore|the|new|override|from|now)\b)"
        ),
    ),
    Rule(
        "repeated_junk",
        "injection",
        # 40+ times the same character; repeated tokens are checked in match_rules.
        _c(r"(.)\1\1\1\1\1\1\1\1\1\1{30,}"),
    ),
)


# Literal stems, one of which must occur for the family's regex to run at all: a few
# substring tests (memchr-fast) spare most prompts the 30-odd regex searches.
_KEYS: dict[str, tuple[str, ...]] = {
    "override_previous": (
        "ignor", "disregard", "forget", "skip", "overrid", "bypass", "neglect", "discard",
        "abandon", "drop", "erase", "delete", "cancel", "dismiss", "aside", "attention",
        "follow", "throw", "wipe",
    ),
    "ignore_above": (
        "ignor", "disregard", "forget", "skip", "overrid", "bypass", "neglect", "discard",
        "abandon", "drop", "erase", "delete", "cancel", "dismiss", "aside", "attention",
        "follow", "throw", "wipe",
    ),
    "new_instructions": (
        "instruction", "task", "objective", "directive", "goal", "rule", "prompt", "order",
    ),
    "instead_say": ("instead", "rather"),
    "only_output": ("only ", "just ", "simply "),
    "access_granted": ("access granted",),
    "do_not_follow": ("not ", "no longer"),
    "dan": ("dan", "do anything", "mongo", "evil"),
    "developer_mode": (" mode",),
    "jailbreak_word": ("jail",),
    "you_are_now": ("you",),
    "from_now_on": ("now on", "rest of this", "until i say"),
    "stay_in_character": ("character", "persona", "role"),
    "no_restrictions": (
        "restriction", "filter", "censor", "limit", "bound", "guideline", "rule", "polic",
        "moral", "ethic", "constrain", "confine", "safeguard",
    ),
    "amoral_persona": (
        "unfiltered", "uncensored", "unrestricted", "moral", "ethical", "unhinged",
        "limitless", "lawless", "rogue", "evil", "jailbr", "unbound", "unchained", "freed",
    ),
    "never_refuse": ("refuse", "decline", "say no", "deny", "reject", "apologi", "warn"),
    "content_policy": ("polic",),
    "dual_response": (":", "two ", "2 "),
    "as_an_ai": ("as an ai", "sorry", "cannot fulfill"),
    "token_threat": ("token", "point", "lives"),
    "reveal_instructions": (
        "instruction", "prompt", "directive", "guideline", "rule", "configuration",
        "programming", "system message", "initial message",
    ),
    "words_above": ("above", "before this", "preceding", "prior to", "so far", "at the "),
    "what_are_your_instructions": ("what ", "which "),
    "system_prompt": ("prompt", "instruction", "message"),
    "secret_code": ("pass", "code", "secret", "pin "),
    "begin_reply_with": (" with",),
    "verbatim": ("verbatim", "word", "exactly as", "in full"),
    "pseudocode_dump": ("pseudo", "python", "json", "bullet", "a list", "a poem", "base64"),
    "fake_delimiter": ("%%%", "###", "***", "===", "---", ">>>", "<<<", "]]", "[[", "}}", "{{",
                       "~~~", "```"),
    "role_token": ("<", "[", ":"),
    "repeated_junk": (),
}  # fmt: skip

_PREPARED: tuple[tuple[Rule, tuple[str, ...]], ...] = tuple((r, _KEYS[r.name]) for r in RULES)


def match_rules(text: str) -> list[RuleHit]:
    """The first match of each rule family in normalised ``text``."""
    hits: list[RuleHit] = []
    for rule, keys in _PREPARED:
        if keys:
            for key in keys:
                if key in text:
                    break
            else:
                continue
        m = rule.pattern.search(text)
        if m is not None:
            hits.append(RuleHit(rule.name, rule.category, m.start(), m.end()))
        elif rule.name == "repeated_junk" and len(text) > 150:
            # Padding that pushes the real instruction out of a reviewer's (or a
            # context window's) sight: few distinct tokens repeated many times.
            tokens = text.split(" ")
            if len(tokens) >= 30 and len(set(tokens)) * 6 <= len(tokens):
                hits.append(RuleHit(rule.name, rule.category, 0, min(len(text), 80)))
    return hits
