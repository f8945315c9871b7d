"""A batch's questions: a questions file (read and checked by :mod:`videovlm.questions`)
resolved against the batch's inputs, into the questions every video is asked and those asked of
named videos."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from videovlm.questions import QuestionsFileError, read_questions


@dataclass(frozen=True)
class Question:
    """One question of a questions file; ``choices`` make it multiple choice."""

    question: str
    choices: tuple[str, ...] | None = None


@dataclass
class Questions:
    """A questions file, resolved against a batch's inputs: questions for every video, and
    questions for named ones. ``named`` is empty when no line names a video."""

    common: list[Question] = field(default_factory=list)
    named: dict[str, list[Question]] = field(default_factory=dict)

    def for_input(self, rel: str) -> list[Question]:
        return [*self.common, *self.named.get(rel, [])]


def load_questions(path: str | os.PathLike[str], root: str | os.PathLike[str],
                   inputs: Sequence[str]) -> Questions:
    """Read a questions file: JSON Lines of ``{video?, question, choices?}``, a JSON list, or
    plain text with one question per line (``#`` comments). A line without ``video`` applies to
    every video. ``video`` is matched to an input by its path relative to ``root``, its
    absolute path, or its file name when that is unique. Every problem, an unknown or ambiguous
    video among them, is raised at once in one :class:`~videovlm.questions.QuestionsFileError`.
    """
    by_rel = set(inputs)
    by_abs = {os.path.realpath(Path(root) / rel): rel for rel in inputs}
    by_name: dict[str, list[str]] = {}
    for rel in inputs:
        by_name.setdefault(rel.rsplit("/", 1)[-1], []).append(rel)
    result = Questions()
    problems: list[str] = []
    for entry in read_questions(path, problems):
        q = Question(entry.question, entry.choices)
        video = entry.video
        if video is None:
            result.common.append(q)
            continue
        norm = PurePosixPath(video.replace("\\", "/")).as_posix()
        rel = (norm if norm in by_rel else by_abs.get(os.path.realpath(video))
               or by_abs.get(os.path.realpath(Path(root) / video)))
        same_name = by_name.get(norm, [])
        if rel is None and len(same_name) > 1:
            problems.append(f"{entry.where}: {video!r} matches {len(same_name)} videos "
                            f"({', '.join(same_name[:3])}); give its path relative to {root}")
            continue
        if rel is None and same_name:
            rel = same_name[0]
        if rel is None:
            problems.append(f"{entry.where}: video {video!r} not found in {root}; use a path "
                            f"relative to {root}")
            continue
        result.named.setdefault(rel, []).append(q)
    if problems:
        raise QuestionsFileError(problems)
    return result
