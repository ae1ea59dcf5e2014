"""Rule families: regexes over normalised text (lower case, single spaces, no leetspeak).

Each family is a feature of the linear model (its weight is learned with the n-grams, so
a family that also fires on benign prompts does not flag on its own), and the span of the
strongest family that fired is the verdict's evidence. The families follow the attacks in
the literature and in public sets: instruction override ("ignore previous
instructions"), persona jailbreaks (DAN, developer mode, "stay in character"),
system-prompt extraction ("repeat the words above", Tensor Trust access-code tricks) and
payload framing (fake delimiters and chat-role tokens). ``hidden_tags`` is the marker
:func:`~.normalize.normalize` puts where text was written in Unicode tag characters; no
training row holds it, and its weight is set by hand (:data:`~.model.HAND_SET_RULES`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import NamedTuple

from aisentinel.guard.normalize import HIDDEN_TAGS

__all__ = ["RULES", "TOKEN", "Rule", "RuleHit", "match_rules"]


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

_CODEWORD = (
    r"(?:password|passcode|pass code|access code|secret (?:key|word|code|phrase)|passphrase|"
    r"pin code)"
)
# Words around a secret that make a request of it (or address the model).
_ASKED = (
    r"(?:you|your|yours|me|say|tell|print|output|repeat|write|reveal|show|give|respond|reply|"
    r"answer|restate|recite|what|what's|provide|share|spell|list|enter|type|guess|forget|"
    r"ignore|correct|granted|told)"
)
_SAY = (
    r"(?:say|tell|print|output|repeat|write|reveal|show|give|respond|reply|answer|restate|"
    r"recite|provide|share|spell|list|dump|echo|display|quote|reproduce|translate)"
)
# "verbatim copies" / "verbatim copying" is a licence's term of art, not a request.
_VERBATIM = (
    r"(?:verbatim|word for word|word-for-word|exactly as written|in full)\b"
    r"(?! cop(?:y|ies|ying)\b)"
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
        # "dan" alone is Indonesian and Malay for "and" (and unaccented Vietnamese):
        # the persona only in a jailbreak's context ("act as DAN", "DAN Mode enabled").
        _c(
            r"\b(?:do anything now|mongo tom|anti-?dan|betterdan|evil ?bot)\b"
            r"|\b(?:act(?:ing)? as|pretend(?:ing)? to be|you are|you're|you will be|"
            r"become|called|named|known as|stay|remain)(?: now)? (?:an? |the )?dan\b"
            r"|\[dan\]|\bwith dan mode\b|\bdan (?:mode (?:enabled|activated|on|output)|jailbreak)\b"
            r"|\bdan(?: \w+){0,3} stands for\b"
        ),
    ),
    Rule(
        "developer_mode",
        "jailbreak",
        _c(
            r"\b(?:developer|dev|god|debug|sudo|admin|maintenance|unrestricted|jailbr[eo]ak(?:en)?"
            r"|unfiltered|uncensored|evil|chaos|opposite) mode\b"
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
        # Only next to words that ask for it, address the model or state it: a licence's
        # "must require no special password" or a manual's "pin code" is not a request.
        _c(
            rf"\b{_ASKED}\b(?: \S+){{0,3}} {_CODEWORD}\b"
            rf"|\b{_CODEWORD}\b(?: \S+){{0,3}} (?:{_ASKED}|is|was)\b"
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
        # Only as a request to reproduce something ("print the text above verbatim"):
        # licences grant "verbatim copies", contracts stay "in full force".
        _c(
            rf"\b{_SAY}\b(?: \S+){{0,4}} {_VERBATIM}"
            rf"|\b{_VERBATIM}(?: \S+){{0,2}} (?:instructions?|prompts?|text|above|message)\b"
        ),
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
    Rule("hidden_tags", "injection", re.compile(re.escape(HIDDEN_TAGS))),
    Rule(
        "repeated_junk",
        "injection",
        # 40+ times the same character; repeated tokens are checked in match_rules.
        _c(r"(.)\1\1\1\1\1\1\1\1\1\1{30,}"),
    ),
)


# Prefilter: words a family's regex cannot match without. A text's tokens (maximal runs
# of letters/digits, and each other non-space character alone: ``TOKEN``) are
# intersected once with every word named below; a family's regex then runs only when
# one of its alternatives has a token from each of its groups. Only words that every
# match holds as a whole token are listed (a word the regex requires with ``\b`` on
# both sides, or a punctuation character), so the prefilter never skips a match:
# ``tests/test_guard.py`` checks that against the regexes alone. Most prompts pass no
# family's prefilter, and the regex searches (one text pass each) are skipped.
TOKEN = re.compile(r"[^\W_]+|[^\w\s]")

_IGNORE_W = (
    "ignore disregard forget skip override bypass neglect discard abandon drop erase delete "
    "cancel dismiss aside attention follow following throw wipe"
)
_INSTR_W = (
    "instruction instructions prompt prompts direction directions directive directives rule "
    "rules guideline guidelines command commands order orders constraint constraints "
    "programming training restriction restrictions context guidance conversation message "
    "messages input inputs text policies policy settings limitation limitations"
)
_REVEAL_W = (
    "repeat print output show reveal display tell give write list recite echo dump spell "
    "summarise summarize translate paraphrase reproduce share disclose leak expose return "
    "provide copy quote rewrite"
)

# family -> alternatives; an alternative is a tuple of groups (space-separated words),
# each of which must have a word among the text's tokens; a group written "~a b c"
# holds substrings instead, one of which the text must contain (for words the regex
# does not bound with \b). A family with an empty alternative always runs.
_NEEDS: dict[str, tuple[tuple[str, ...], ...]] = {
    "override_previous": ((_IGNORE_W, _INSTR_W),),
    "ignore_above": (
        (_IGNORE_W, "everything all anything what whatever",
         "above before said previously earlier far prior"),
    ),
    "new_instructions": (
        ("new updated real actual revised true override admin priority",
         "instruction instructions task objective directive goal rule rules prompt order orders"),
    ),
    "instead_say": (
        ("instead rather", "say print output respond reply write answer return"),
    ),
    "only_output": (
        ("only just simply", "say print output respond reply write return", "\" ' “ «"),
    ),
    "access_granted": (("access", "granted"),),
    "do_not_follow": (
        ("not longer", "follow obey adhere abide bound comply restricted limited"),
    ),
    "dan": (("dan anything mongo antidan betterdan evil evilbot",),),
    "developer_mode": (
        ("mode",
         "developer dev god debug sudo admin maintenance unrestricted jailbreak jailbroak "
         "jailbreaken jailbroaken unfiltered uncensored evil chaos opposite"),
    ),
    "jailbreak_word": (
        ("jail jailbreak jailbreaks jailbreaked jailbreaking jailbrok jailbroks jailbroked "
         "jailbroking",),
    ),
    "you_are_now": (("you", "are re will ll shall", "now going from"),),
    "from_now_on": (("on conversation otherwise stop", "now rest say"),),
    "stay_in_character": (
        ("stay remain keep staying remaining break breaking", "character persona role"),
    ),
    "no_restrictions": (
        ("without no free bound beyond unconstrained bypass bypasses bypassing",
         "restrictions filter filters filtering censorship limits limitations boundaries "
         "guidelines rules policies policy morals ethics constraints confines safeguards"),
    ),
    "amoral_persona": (
        ("unfiltered uncensored unrestricted amoral unethical immoral unhinged limitless "
         "lawless rogue evil jailbroken unbound unchained freed",
         "ai chatbot bot assistant model persona character version entity"),
    ),
    "never_refuse": (
        ("never not cannot t",
         "refuse decline say deny reject apologise apologize warn"),
    ),
    "content_policy": (("openai anthropic content usage", "policy policies"),),
    "dual_response": (
        (":", "~🔓 🔒 classic jailbreak dan output"),  # "jordan:" matches: substrings
        ("two 2", "responses answers paragraphs outputs"),
    ),
    "as_an_ai": (("ai sorry fulfill",),),
    "token_threat": (
        ("token tokens point points lives",
         "deducted lose lost die exist terminated down"),
    ),
    "reveal_instructions": (
        (_REVEAL_W,
         "instruction instructions prompt prompts directives guidelines rules configuration "
         "programming preprompt message"),
    ),
    "words_above": (
        ("words text everything all content instruction instructions prompt message line "
         "lines sentence sentences above",
         "above this preceding far start beginning top"),
    ),
    "what_are_your_instructions": (
        ("what which", "are were is was",
         "instruction instructions prompt prompts directives rules guidelines message "
         "programming"),
    ),
    "system_prompt": (  # words may be glued ("systemprompt", "preprompt"): substrings
        ("~prompt instruction message",
         "~system initial original hidden secret pre meta developer base"),
    ),
    "secret_code": (
        ("password passcode passphrase code key word phrase",
         "password passcode passphrase pass access secret pin"),
    ),
    "begin_reply_with": (
        ("begin start prefix preface open", "with",
         "reply replys response responses answer answers output outputs message messages"),
    ),
    "verbatim": (("verbatim word written full",),),
    "pseudocode_dump": (
        ("code pseudocode python json points list poem base64",
         "instruction instructions prompt rules"),
    ),
    "fake_delimiter": (
        ("~%%% ### *** === --- >>> <<< ]] [[ }} {{ ~~~ ```",
         "end begin start stop new close open"),
    ),
    "role_token": (
        ("<", ">"),
        ("[", "]"),
        (":", "system assistant admin developer root"),
    ),
    "hidden_tags": (("hidden", "tag", "text"),),
    "repeated_junk": ((),),
}  # fmt: skip

_WORD_GROUPS: list[frozenset[str]] = []
_Alt = tuple[int, tuple[tuple[str, ...], ...]]  # (mask of word groups, substring groups)


def _alternative(groups: tuple[str, ...]) -> _Alt:
    mask = 0
    subs: list[tuple[str, ...]] = []
    for group in groups:
        if group.startswith("~"):
            subs.append(tuple(group[1:].split()))
        else:
            mask |= 1 << len(_WORD_GROUPS)
            _WORD_GROUPS.append(frozenset(group.split()))
    return mask, tuple(subs)


_PREPARED: tuple[tuple[Rule, tuple[_Alt, ...]], ...] = tuple(
    (r, tuple(_alternative(alt) for alt in _NEEDS[r.name])) for r in RULES
)
# Each prefilter word -> the bits of the word groups that hold it.
_WORD_BITS: dict[str, int] = {}
for _bit, _group in enumerate(_WORD_GROUPS):
    for _word in _group:
        _WORD_BITS[_word] = _WORD_BITS.get(_word, 0) | (1 << _bit)


def _present_groups(tokens: Iterable[str]) -> int:
    """The bits of the word groups that have a word among ``tokens``."""
    mask = 0
    for word in _WORD_BITS.keys() & tokens:
        mask |= _WORD_BITS[word]
    return mask


def match_rules(text: str, tokens: Iterable[str] | None = None) -> list[RuleHit]:
    """The first match of each rule family in normalised ``text``.

    ``tokens``, when given, must hold every :data:`TOKEN` of ``text`` (more entries are
    harmless); without it they are found here.
    """
    present = _present_groups(TOKEN.findall(text) if tokens is None else tokens)
    hits: list[RuleHit] = []
    for rule, alternatives in _PREPARED:
        for mask, subs in alternatives:
            if present & mask != mask:
                continue
            for group in subs:
                for sub in group:
                    if sub in text:
                        break
                else:
                    break
            else:
                break  # this alternative holds
        else:
            continue  # no alternative holds: the regex cannot match
        m = rule.pattern.search(text)
        if m is not None:
            hits.append(RuleHit(rule.name, rule.category, m.start(), m.end()))
        elif rule.name == "repeated_junk" and len(text) > 150:
            # Padding that pushes the real instruction out of a reviewer's (or a
            # context window's) sight: few distinct tokens repeated many times.
            parts = text.split(" ")
            if len(parts) >= 30 and len(set(parts)) * 6 <= len(parts):
                hits.append(RuleHit(rule.name, rule.category, 0, min(len(text), 80)))
    return hits
