"""Reading structure back out of a model's free text: timed segments and multiple-choice letters.

Small models do not follow an output format reliably, so both readers are lenient about shape
and strict about meaning: a time that cannot be in the video is dropped rather than guessed, and
a letter is only returned when the text commits to one option. Callers always get an answer they
can use (a spanning segment, or ``None``) and a flag saying whether the parse succeeded.
"""

from __future__ import annotations

import re
import string
from collections.abc import Sequence
from dataclasses import dataclass

from videovlm.errors import VideoVLMError
from videovlm.result import Segment

# A time as models write it: ``1:02:03``, ``00:12``, ``0:12.5``, or seconds ``12s`` / ``12.5 sec``.
_CLOCK = r"\d{1,3}(?::\d{1,2}){1,2}(?:\.\d+)?"
_SECONDS = r"\d+(?:\.\d+)?\s*(?:s|secs?|seconds?)\b"
_TIME = rf"(?:{_CLOCK}|{_SECONDS})"
# A range's first half may drop the unit when the second half has it: ``0-5s``.
_BARE = r"\d+(?:\.\d+)?"
_RANGE_SEP = r"[ \t]*(?:-->|->|--|-|–|—|~|\bto\b|\buntil\b|\btill\b|\band\b)[ \t]*"

# An anchor is where a segment starts: a time or a range at the start of a line (after an
# optional bullet, number, bracket or bold marker) or at the start of a sentence, optionally
# introduced by "From" / "At" / "Between". Times in the middle of a sentence are description,
# not structure, and are left in the text.
_ANCHOR = re.compile(
    rf"""
    (?:^[ \t>]*|(?<=[.!?;])[ \t]+)                  # line start, or after a sentence's end
    (?:(?:[-*+•]|\d{{1,3}}[.)])[ \t]+)?              # bullet or list number
    [*_#]*[ \t]*                                    # markdown emphasis or heading
    (?P<label>(?:scene|shot|segment|part|clip|chapter)[ \t]*\d{{0,3}}[ \t]*[:.\-–—]?[ \t]*)?
    (?P<intro>(?:from|at|between|around|starting\ at)[ \t]+)?   # introducing word
    (?P<open>[\[(])?[ \t]*
    (?:
        (?P<a>{_TIME})(?:{_RANGE_SEP}(?P<b>{_TIME}))?
      | (?P<a2>{_BARE}){_RANGE_SEP}(?P<b2>{_SECONDS})
    )
    [ \t]*[\])]?[*_]*                               # closing bracket / emphasis
    (?P<tail>[ \t]*[:,\-–—.|]?)                     # separator before the text
    """,
    re.IGNORECASE | re.MULTILINE | re.VERBOSE,
)


def parse_time(token: str) -> float | None:
    """Seconds for one time token (``1:02:03``, ``00:12``, ``12.5s``); None if it is impossible.

    Minutes and seconds past 59 in a clock time are impossible (``00:75`` is a typo, not 75 s), so
    the token is rejected instead of being read as something the model did not write.
    """
    token = token.strip().lower()
    if ":" not in token:
        m = re.match(r"(\d+(?:\.\d+)?)", token)
        return float(m.group(1)) if m else None
    parts = token.split(":")
    try:
        nums = [float(p) for p in parts]
    except ValueError:
        return None
    if any(n != int(n) for n in nums[:-1]) or nums[-1] >= 60:
        return None
    if len(nums) == 3:
        h, m, s = nums
        if m >= 60:
            return None
        return h * 3600 + m * 60 + s
    m, s = nums
    return m * 60 + s


@dataclass
class _Anchor:
    start: float | None
    end: float | None
    end_invalid: bool  # an end was written but is not a possible time
    text_start: int  # where this anchor's text begins in the source
    match_start: int  # where the anchor itself begins (the previous text ends here)


def _clean(text: str) -> str:
    """One paragraph of description: joined lines, no list markers or stray separators."""
    lines = [ln.strip() for ln in text.splitlines()]
    joined = " ".join(ln for ln in lines if ln)
    return joined.strip(" \t:-–—,;*_|").strip()


def parse_segments(text: str, duration_s: float, start_s: float = 0.0
                   ) -> tuple[list[Segment], bool]:
    """Timed segments from a model's timeline text, clamped to ``[start_s, duration_s]`` (a
    window's span; the whole video by default) and ordered.

    Accepts ranges (``00:12 - 00:30: text``, ``[0:12-0:30] text``, ``From 00:05 to 00:10, text``,
    ``0-5s text``) and start-only lists (``- 00:12: text``, ``[0:12] text``, ``At 12s, text``).
    A start-only segment ends where the next one starts (the last at ``duration_s``). Segments
    that start at or after the end of the video, or end before they start, are dropped: they are
    the model's invention, and clamping them would put text on the wrong part of the video.

    Returns ``(segments, True)``, or, when no timed segment survives, one segment spanning the
    whole video with the whole text and ``False`` so the result can say the times are not real.
    """
    duration_s = max(0.0, float(duration_s))
    anchors: list[_Anchor] = []
    for m in _ANCHOR.finditer(text):
        a_tok, b_tok = (m.group("a"), m.group("b")) if m.group("a") else (
            m.group("a2"), m.group("b2"))
        if (":" not in a_tok and not b_tok and not m.group("intro") and not m.group("open")
                and not m.group("label") and not m.group("tail").strip()):
            continue  # "10 seconds later, ..." is prose, not a timestamp
        start = parse_time(a_tok)
        end = parse_time(b_tok) if b_tok else None
        anchors.append(_Anchor(start, end, bool(b_tok) and end is None, m.end(), m.start()))

    raw: list[tuple[float, float | None, str]] = []
    for i, anc in enumerate(anchors):
        stop = anchors[i + 1].match_start if i + 1 < len(anchors) else len(text)
        body = _clean(text[anc.text_start:stop])
        if anc.start is None or anc.end_invalid or not body:
            continue
        start, end = anc.start, anc.end
        if start >= duration_s or (end is not None and (end < start or end < start_s)):
            continue
        start = max(start, start_s)
        if end is not None:
            end = min(end, duration_s)
            if end <= start:  # a moment, not a stretch: let the next start close it
                end = None
        raw.append((start, end, body))

    if not raw:
        whole = text.strip()
        return [Segment(start_s, duration_s, whole)], False

    raw.sort(key=lambda r: r[0])
    starts = [r[0] for r in raw]
    segments = []
    for start, end, body in raw:
        if end is None:
            later = [s for s in starts if s > start]
            end = later[0] if later else duration_s
        segments.append(Segment(start, end, body))
    return segments, True


LETTERS = string.ascii_uppercase
MAX_CHOICES = len(LETTERS)
"""The most options a question may have: one letter each."""


def choice_letters(choices: Sequence[str]) -> list[str]:
    """The letters that label ``choices`` (A, B, C, ...); more than MAX_CHOICES options is a user
    error."""
    if len(choices) > MAX_CHOICES:
        raise ValueError(f"at most {MAX_CHOICES} choices are supported, got {len(choices)}")
    return list(LETTERS[: len(choices)])


def option_texts(choices: Sequence[str]) -> list[str]:
    """Option texts without labels: ``["A. red", "B) blue"]`` and ``["red", "blue"]`` agree.

    Users paste options with or without their letters; the letters are ours to assign (A, B,
    ...), so labels that match their position are removed rather than shown twice.
    """
    if len(choices) > len(LETTERS):
        raise VideoVLMError(f"{len(choices)} choices given; at most {len(LETTERS)} (A-Z) are "
                            "supported")
    letters = choice_letters(choices)
    pats = [re.compile(rf"^\s*(?:\({ltr}\)|{ltr}[.):])\s+") for ltr in letters]
    if choices and all(p.match(c) for p, c in zip(pats, choices, strict=True)):
        return [p.sub("", c, count=1).strip() for p, c in zip(pats, choices, strict=True)]
    return [c.strip() for c in choices]


def _norm(s: str) -> str:
    return " ".join(re.sub(r"[^\w\s]", " ", s.lower()).split())


def extract_choice(text: str, choices: Sequence[str]) -> str | None:
    """The option letter ``text`` commits to, or None when it commits to none (the reply is
    *unparseable*: scoring counts it wrong, and apart).

    The answer rule, tried in order, most explicit first (README, "Evaluation", has the table
    of replies it is tested on):

    1. The reply is just a letter: ``B``, ``(B)``, ``B.``, ``[B]``, ``**B**``; here a lower-case
       letter counts too (``b``): nothing else can be meant.
    2. It names one after a keyword: ``Answer: B``, ``**Answer:** B``, ``The answer is (B).``,
       ``option B``; a lower-case letter only when it ends the reply (``the answer is b``), so
       "the answer is a red car" is not option A.
    3. It starts with a labelled letter: ``B) text``, ``(B) text``, ``B. text``, ``B: text`` --
       unless it shows another option's label too (``(A) or (B)``, a list of the options), which
       is no commitment.
    4. It names exactly one option's text (an option only named as part of a longer one does not
       count, so "red car" beats "red"), or is part of exactly one option's text.
    5. It holds exactly one parenthesised letter.

    Letters elsewhere must be capitals and among the options, so "a man walks" is not option A,
    and two letters with nothing to choose between them (``A or B``) are no answer.
    """
    letters = choice_letters(choices)
    valid = "".join(letters)
    if not valid or not text:
        return None
    body = text.strip().strip("*_`\"' ")
    lc = rf"[{valid}]"
    either = rf"[{valid}{valid.lower()}]"

    m = re.fullmatch(rf"[\[(]?(?P<l>{either})[\])]?[.):]?", body)
    if m:
        return m.group("l").upper()
    keyword = (r"\b(?i:answer|option|choice|letter)\b(?:\s+(?i:is|would\s+be|should\s+be))?"
               r"[\s:*_\-]*[\[(]?")
    m = (re.search(rf"{keyword}(?P<l>{lc})(?![\w'])", body)
         or re.search(rf"{keyword}(?P<l>{either})[\])]?[\s.*_]*$", body))
    if m:
        return m.group("l").upper()
    m = re.match(rf"[\[(]?(?P<l>{lc})(?:[.):\]]|\s*[-–—]\s)", body)
    if m:
        labels = set(re.findall(rf"\(({lc})\)|^[\[(]?({lc})[.):\]]", body, flags=re.M))
        if {x for pair in labels for x in pair if x} == {m.group("l")}:
            return m.group("l")
        return None

    norm_text = f" {_norm(body)} "
    named = {letter: _norm(c) for letter, c in zip(letters, choices, strict=True)
             if _norm(c) and f" {_norm(c)} " in norm_text}
    # "the red car" names both "red" and "the red car": the shorter is only part of the longer
    named = {k: v for k, v in named.items()
             if not any(v != w and f" {v} " in f" {w} " for w in named.values())}
    if len(named) == 1:
        return next(iter(named))

    # A bare option text ("red car" for "a red car"): the answer is part of exactly one option.
    answer = _norm(body)
    if len(answer) >= 3:
        inside = [letter for letter, c in zip(letters, choices, strict=True)
                  if f" {answer} " in f" {_norm(c)} "]
        if len(inside) == 1:
            return inside[0]

    parens = set(re.findall(rf"\(({lc})\)", body))
    if len(parens) == 1:
        return parens.pop()
    return None
