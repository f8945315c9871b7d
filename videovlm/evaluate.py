"""Benchmark evaluation: multiple-choice questions about videos, scored against gold letters.

A benchmark is a questions file (JSON Lines of ``{video, question, choices, answer, id?}``) and
a folder of videos. Questions are grouped by video so that each video is decoded once and
encoded once: every question about it continues from the same cached prefix of frames (the
model stage of :func:`videovlm.api.run_model`, with each question showing its own options).

The run itself is a :mod:`videovlm.batch` run, one job per video, so it inherits the batch's
crash safety: ``OUTDIR/results.jsonl`` holds one complete record per finished video (its answers,
or its error) and a rerun skips those. ``predictions.jsonl`` (one line per question) and
``summary.json`` are derived from that log and rewritten whole, atomically, after every run, so
they always agree with it and are never seen half-written.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import astuple, dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from videovlm import batch as b
from videovlm import tasks
from videovlm.api import VideoInputs, load_video, option_texts, run_model
from videovlm.convert import SUBTITLE_FIELD
from videovlm.errors import VideoVLMError
from videovlm.files import atomic_write
from videovlm.model import Model
from videovlm.pipelines import Recipe, load_recipe
from videovlm.questions import QuestionsFileError, read_questions
from videovlm.result import Result
from videovlm.run import Asker
from videovlm.text import LETTERS, choice_letters

PREDICTIONS_NAME = "predictions.jsonl"
SUMMARY_NAME = "summary.json"


@dataclass(frozen=True)
class EvalItem:
    """One benchmark question: its options without labels and its gold answer as a letter."""

    id: str
    video: str  # path relative to the videos folder, POSIX separators: the job's key
    question: str
    choices: tuple[str, ...]
    answer: str
    fields: dict[str, Any] = field(default_factory=dict, compare=False)
    """The benchmark's own keys of the question (``category``, ``duration``, ``subtitles``...),
    kept for reports broken down by them and for protocols that use them."""


def gold_letter(answer: str, choices: Sequence[str]) -> str | None:
    """The letter of the gold ``answer``, given as a letter (``B``, ``(B)``, ``B.``), as an
    option's text, or as a labelled option (``B) text``); None when it is none of those.

    Benchmarks publish gold answers both ways (Video-MME a letter, CinePile the answer's text),
    and scoring compares letters, so text is mapped to its option's letter. Case and spacing
    are ignored in text, not in letters: a lone ``a`` is an option text, never option A.
    """
    letters = choice_letters(choices)
    text = answer.strip()
    m = re.fullmatch(r"\(?([A-Z])\)?[.):]?", text)
    if m:
        return m.group(1) if m.group(1) in letters else None

    def norm(s: str) -> str:
        return " ".join(s.casefold().split())

    by_text = {norm(c): ltr for ltr, c in zip(letters, choices, strict=True)}
    if norm(text) in by_text:
        return by_text[norm(text)]
    m = re.fullmatch(r"\(?([A-Z])[.):]\s*(.+)", text, flags=re.S)
    if m and by_text.get(norm(m.group(2))) == m.group(1):
        return m.group(1)
    return None


def load_eval_questions(path: str | os.PathLike[str], videos: str | os.PathLike[str],
                        *, limit: int | None = None) -> list[EvalItem]:
    """Read and check a questions file against the videos folder; the first ``limit``
    questions (in file order) when given.

    Everything is checked before a model is loaded, and every problem is collected (bad JSON,
    missing or mistyped keys, a gold answer that names no option, a duplicate id, a video that
    is not under ``videos``) into one :class:`~videovlm.questions.QuestionsFileError`, one line
    per problem. The file (JSON Lines, or a JSON list) and its keys are read and checked by
    :func:`videovlm.questions.read_questions`; keys a benchmark adds of its own are ignored.
    Videos are checked for existence only for the questions kept by ``limit``, so a quick run
    on the first few questions does not need the whole benchmark on disk.
    """
    root = Path(videos)
    if not root.is_dir():
        raise VideoVLMError(f"{root} is not a folder; give the folder that holds the videos "
                            "with --videos")
    problems: list[str] = []
    items: list[EvalItem] = []
    seen: dict[str, str] = {}
    for entry in read_questions(path, problems, required=("video", "choices", "answer"),
                                bare=False, strict=False):
        options = option_texts(entry.choices)
        gold = gold_letter(entry.answer, options)
        if gold is None:
            problems.append(f"{entry.where}: answer {entry.answer!r} is neither an option "
                            f"letter (A-{LETTERS[len(options) - 1]}) nor one of the choices")
            continue
        ident = str(entry.number) if entry.id is None else entry.id
        if ident in seen:
            problems.append(f"{entry.where}: id {ident!r} repeats {seen[ident]}")
            continue
        seen[ident] = entry.where
        rel = PurePosixPath(entry.video.strip().replace("\\", "/")).as_posix()
        items.append(EvalItem(ident, rel, entry.question, tuple(options), gold, entry.fields))
    if limit is not None:
        items = items[:limit]
    missing: dict[str, int] = {}
    for item in items:
        if item.video not in missing and not (root / item.video).is_file():
            missing[item.video] = 0
        if item.video in missing:
            missing[item.video] += 1
    problems += [f"{path}: video {video!r} not found in {root} ({k} question"
                 f"{'s' if k > 1 else ''})" for video, k in missing.items()]
    if problems:
        raise QuestionsFileError(problems)
    return items


def answer_video(model: Model, inputs: VideoInputs, recipe: Recipe,
                 items: Sequence[EvalItem], asker: Asker | None = None) -> Result:
    """Answer every question about one video from one encoding of its frames, each question
    with its own options (:func:`videovlm.api.run_model` with ``question_choices``) and its own
    ``subtitles`` field where it has one (CinePile's scene subtitles, for a protocol whose
    prompt shows ``{subtitles}``)."""
    subtitles = [s if isinstance(s := item.fields.get("subtitles"), str) else None
                 for item in items]
    return run_model(model, inputs, recipe, questions=[item.question for item in items],
                     question_choices=[list(item.choices) for item in items],
                     question_subtitles=subtitles, asker=asker)


def video_recipe(recipe: Recipe, items: Sequence[EvalItem], videos: Path) -> Recipe:
    """The protocol's recipe for one video's questions: their ``subtitle_file`` (Video-MME's
    ``.srt``, written by ``eval-convert --subtitle-dir``; a relative one is under ``videos``)
    read instead of a sidecar, when the recipe reads subtitles (``subtitles = "auto"``, so not
    under a frames-only protocol or ``--subtitles none``)."""
    named = {f for item in items if isinstance(f := item.fields.get(SUBTITLE_FIELD), str)}
    if not named or recipe.dialogue.get("subtitles", "auto") != "auto":
        return recipe
    if len(named) > 1:
        raise VideoVLMError(f"{items[0].video}: its questions name different subtitle files "
                            f"({', '.join(sorted(named))}): give one {SUBTITLE_FIELD} per video")
    path = Path(named.pop())
    return recipe.with_overrides(subtitles=str(path if path.is_absolute() else videos / path))


@dataclass
class EvalReport:
    """How an evaluation went: the batch run's report and the scores written from its log."""

    batch: b.BatchReport
    summary: dict[str, Any] = field(default_factory=dict)

    @property
    def exit_code(self) -> int:
        """0 every video answered; 1 some video failed (its questions unscored); 130/143
        stopped by Ctrl-C/SIGTERM."""
        return self.batch.exit_code

    def line(self) -> str:
        """The one line a person reads at the end: the accuracy, and what it does not cover."""
        s = self.summary
        acc = "n/a" if s["accuracy"] is None else f"{s['accuracy']:.4f}"
        failed = len(s["failures"])
        tail = (f", {failed} video(s) failed ({s['unanswered']} questions unscored)"
                if failed else "")
        left = s["questions"] - s["total"] - s["unanswered"]
        tail += f", {left} questions left" if left else ""
        return (f"accuracy {acc} ({s['correct']}/{s['total']}) on {s['protocol']}{tail} "
                f"-> {s['summary_file']}")


def evaluate(
    items: Sequence[EvalItem],
    videos: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    model: Model,
    *,
    protocol: str = tasks.DEFAULT_PROTOCOL,
    n: int | None = None,
    backend: str | None = None,
    workers: int = 2,
    batch_size: int = 1,
    resume: bool = True,
    progress: bool = True,
    say: Callable[[str], None] | None = None,
    dialogue: dict[str, Any] | None = None,
) -> EvalReport:
    """Answer ``items`` with ``model`` under ``protocol`` into ``out_dir`` and score them.

    One batch job per video (videos in order of first mention), decoded in background workers
    while the model answers the previous one; with ``batch_size`` > 1, that many videos'
    questions decode together (:mod:`videovlm.batch.together`). ``results.jsonl`` and
    ``batch.json`` make the run resumable (a rerun skips answered videos; other settings are
    refused); afterwards
    ``predictions.jsonl`` and ``summary.json`` are rewritten from the whole log. ``dialogue``
    overrides the protocol recipe's ``[dialogue]`` (``subtitles``: auto or none,
    ``subtitle_lang``): by default each video's subtitles, found as ``describe`` finds them,
    go after the frames they are said during, as the benchmarks' subtitle tracks give them.
    """
    recipe = load_recipe(tasks.protocol(protocol).recipe).with_overrides(**(dialogue or {}))
    root, out = Path(videos).absolute(), Path(out_dir)
    by_video: dict[str, list[EvalItem]] = {}
    for item in items:
        by_video.setdefault(item.video, []).append(item)
    jobs = [b.Job(path=root / rel, input=rel) for rel in by_video]
    settings = {
        "eval": protocol, "recipe": recipe.name,
        "recipe_digest": b.settings_digest(recipe.to_dict()), "model": model.id, "n": n,
        "backend": backend, "questions": b.settings_digest([astuple(i) for i in items]),
    }

    def cpu(job: b.Job) -> VideoInputs:
        return load_video(job.path, video_recipe(recipe, by_video[job.input], root), n=n,
                          image_size=model.image_size, backend=backend)

    def generate(job: b.Job, inputs: VideoInputs, asker: Asker | None = None) -> Result:
        return answer_video(model, inputs, recipe, by_video[job.input], asker)

    size = b.batch_size_for(model, batch_size)
    report = b.run_local(jobs, cpu, generate, out, workers=workers, resume=resume,
                         settings=settings, progress=progress, say=say, batch_size=size,
                         model_batch=b.batched(model, generate, size))
    records = b.ResultsLog(out / b.RESULTS_NAME).load()
    summary = write_scores(items, records, out, protocol=protocol, model_id=model.id, n=n)
    return EvalReport(batch=report, summary=summary)


def write_scores(items: Sequence[EvalItem], records: dict[str, dict[str, Any]],
                 out_dir: str | os.PathLike[str], *, protocol: str, model_id: str,
                 n: int | None = None) -> dict[str, Any]:
    """Write ``predictions.jsonl`` (one line per answered question, in file order) and
    ``summary.json`` from the run's records; return the summary.

    Accuracy is ``correct / total`` over the predictions written, the same lines a reader can
    recount; questions of a failed video are not guessed but counted apart (``unanswered``)
    with the video's error under ``failures``.
    """
    out = Path(out_dir)
    lines: list[str] = []
    correct = unanswered = 0
    failures: list[dict[str, Any]] = []
    position: dict[str, int] = {}
    counts: dict[str, int] = {}
    for item in items:
        counts[item.video] = counts.get(item.video, 0) + 1
    for item in items:
        rec = records.get(item.video)
        k = position[item.video] = position.get(item.video, -1) + 1
        if rec is None:
            continue
        if rec.get("error") is not None:
            unanswered += 1
            if k == 0:
                failures.append({"video": item.video, "questions": counts[item.video],
                                 "error": rec["error"]})
            continue
        got = rec["answers"][k]
        ok = got["choice"] == item.answer
        correct += ok
        lines.append(json.dumps({
            "id": item.id, "video": item.video, "question": item.question,
            "choices": list(item.choices), "answer": item.answer, "predicted": got["choice"],
            "raw": got["answer"], "correct": ok,
        }, ensure_ascii=False) + "\n")
    atomic_write(out / PREDICTIONS_NAME, "".join(lines))
    total = len(lines)
    summary = {
        "protocol": protocol, "recipe": tasks.protocol(protocol).recipe, "model": model_id,
        "frames": n,
        "questions": len(items), "videos": len(counts), "n": total, "correct": correct,
        "total": total, "accuracy": round(correct / total, 6) if total else None,
        "unanswered": unanswered, "failures": failures,
        "predictions_file": str(out / PREDICTIONS_NAME),
        "summary_file": str(out / SUMMARY_NAME),
    }
    atomic_write(out / SUMMARY_NAME, json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
    return summary
