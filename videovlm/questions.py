"""Questions files, read and checked in one place for every command that takes one (``batch
--questions``, ``eval``).

A file is JSON Lines of objects, a JSON list, or, where a question alone will do, plain text
with one question per line (``#`` comments). The keys are ``video``, ``question``, ``choices``,
``answer`` and ``id``; this module checks their shapes, and each caller checks what only it can
know (that a video is one of its inputs, that a gold answer names an option). Every problem is
collected, one line each (``FILE:LINE: what is wrong``), into one :class:`QuestionsFileError`,
so a file with ten mistakes is fixed in one pass, not ten runs.
"""

from __future__ import annotations

import json
import os
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from videovlm.errors import VideoVLMError
from videovlm.text import MAX_CHOICES

KEYS = ("video", "question", "choices", "answer", "id")


class QuestionsFileError(VideoVLMError):
    """A questions file with mistakes: every problem found, one line each (``problems``), so a
    user fixes them all in one go instead of one per run."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        more = f" (and {len(problems) - 1} more problems)" if len(problems) > 1 else ""
        super().__init__(f"{problems[0]}{more}")


@dataclass(frozen=True)
class Entry:
    """One question of a file, its keys checked (absent ones None, ``question`` stripped).
    ``where`` starts its problems (``FILE:LINE``, or ``FILE item N`` in a JSON list); ``number``
    is that line or item, the question's id when it has none."""

    where: str
    number: int
    question: str
    video: str | None = None
    choices: tuple[str, ...] | None = None
    answer: str | None = None
    id: str | None = None
    fields: dict[str, Any] = field(default_factory=dict)
    """The item's keys outside :data:`KEYS`, as written (a benchmark's category, duration,
    subtitles...); only files read without ``strict`` can have any."""


def read_questions(
    path: str | os.PathLike[str],
    problems: list[str],
    *,
    required: Collection[str] = (),
    bare: bool = True,
    strict: bool = True,
) -> Iterator[Entry]:
    """Each well-formed question of the file at ``path``, in file order; every problem met on
    the way is appended to ``problems``, so the checks a caller makes as the entries come land
    among them in file order too.

    ``question`` and the ``required`` keys must be there. ``bare`` also takes a question alone
    (plain text, or a JSON string), for callers that need no other key; without it a file that
    is not a JSON list is read as JSON Lines. ``strict`` makes a key outside :data:`KEYS` a
    problem, as a misspelt key would otherwise be dropped without a word; files that carry
    fields of their own (benchmarks) are read without it. A file that cannot be read raises.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise VideoVLMError(f"cannot read questions file {path}: {exc}") from None
    needed = {"question", *required}
    found = len(problems)
    items = 0
    for where, number, obj in _items(path, text, bare, problems):
        items += 1
        try:
            entry = _entry(obj, where, number, needed, bare, strict)
        except ValueError as exc:
            problems.append(f"{where}: {exc}")
            continue
        yield entry
    if not items and len(problems) == found:
        problems.append(f"{path} holds no questions")


def _items(path: Path, text: str, bare: bool, problems: list[str]
           ) -> Iterator[tuple[str, int, Any]]:
    """The file's items as parsed, with where each one is; what does not parse is a problem."""
    start = text.lstrip()[:1]
    if start == "[":
        try:
            data = json.loads(text)
        except ValueError as exc:
            problems.append(f"{path}: not valid JSON ({exc})")
            return
        for i, obj in enumerate(data, 1):
            yield f"{path} item {i}", i, obj
    elif start == "{" or not bare:
        for no, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except ValueError as exc:
                problems.append(f"{path}:{no}: not a JSON object ({exc})")
                continue
            yield f"{path}:{no}", no, obj
    else:
        for no, line in enumerate(text.splitlines(), 1):
            if line.strip() and not line.lstrip().startswith("#"):
                yield f"{path}:{no}", no, line.strip()


def _entry(obj: Any, where: str, number: int, needed: Collection[str], bare: bool,
           strict: bool) -> Entry:
    """One item checked; raises ``ValueError`` saying what is wrong (the caller adds where)."""
    if bare and isinstance(obj, str):
        obj = {"question": obj}
    shape = ", ".join(f'"{k}"' if k in needed else f'"{k}"?' for k in KEYS)
    expected = f"a JSON object {{{shape}}}{' or a question string' if bare else ''}"
    if not isinstance(obj, dict):
        raise ValueError(f"expected {expected}")
    missing = [k for k in KEYS if k in needed and obj.get(k) is None]
    if missing:
        raise ValueError(f"missing {', '.join(missing)}; expected {expected}")
    unknown = sorted(set(obj) - set(KEYS))
    if strict and unknown:
        raise ValueError(f"unknown key(s) {', '.join(unknown)}; use {', '.join(KEYS)}")
    video, question, choices, answer, ident = (obj.get(k) for k in KEYS)
    if video is not None and (not isinstance(video, str) or not video.strip()):
        raise ValueError("video must be a path, relative to the videos' folder")
    if not isinstance(question, str) or not question.strip():
        raise ValueError("question must be a non-empty string")
    if choices is not None and (
            not isinstance(choices, list) or not 2 <= len(choices) <= MAX_CHOICES
            or not all(isinstance(c, str) and c.strip() for c in choices)):
        raise ValueError(f"choices must be a list of 2 to {MAX_CHOICES} strings, none empty")
    if answer is not None and (not isinstance(answer, str) or not answer.strip()):
        raise ValueError("answer must be an option's letter or its text")
    if ident is not None and (isinstance(ident, bool) or not isinstance(ident, str | int)):
        raise ValueError("id must be a string or an integer")
    return Entry(where, number, question.strip(), video,
                 None if choices is None else tuple(choices), answer,
                 None if ident is None else str(ident), {k: obj[k] for k in unknown})
