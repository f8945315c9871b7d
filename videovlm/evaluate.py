"""Benchmark evaluation: multiple-choice questions about videos, scored against gold letters.

A benchmark is a questions file (JSON Lines of ``{video, question, choices, answer, id?}``) and
a folder of videos. Questions are grouped by video so that each video is decoded once and
encoded once: every question about it continues from the same cached prefix of frames (the
model stage of :func:`videovlm.api.run_model`, with each question showing its own options).

The run itself is a :mod:`videovlm.batch` run, one job per video, so it inherits the batch's
crash safety: ``OUTDIR/results.jsonl`` holds one complete record per finished video (its answers,
or its error) and a rerun skips those. ``predictions.jsonl`` (one line per question),
``report.json`` and ``report.md`` are derived from that log by :mod:`videovlm.scoring` and
rewritten whole, atomically, after every run, so they always agree with it and are never seen
half-written.

A video that is not there, or cannot be read or decoded, does not stop the run: it is a job like
the others, its error is recorded, and its questions are scored as missing. ``strict`` restores
the older rule (a video not found fails before the model loads; one that fails in the run makes
the exit code 1).
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import astuple, dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from videovlm import batch as b
from videovlm import scoring, tasks
from videovlm.api import VideoInputs, load_video, option_texts, run_model
from videovlm.convert import SUBTITLE_FIELD
from videovlm.errors import VideoVLMError
from videovlm.model import Model
from videovlm.pipelines import Recipe, load_recipe
from videovlm.questions import QuestionsFileError, read_questions
from videovlm.result import Result
from videovlm.run import Asker
from videovlm.text import LETTERS, choice_letters

PREDICTIONS_NAME = scoring.PREDICTIONS_NAME
REPORT_NAME = scoring.REPORT_NAME
REPORT_MD_NAME = scoring.REPORT_MD_NAME


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
                        *, limit: int | None = None, strict: bool = False) -> list[EvalItem]:
    """Read and check a questions file against the videos folder; the first ``limit``
    questions (in file order) when given.

    Everything is checked before a model is loaded, and every problem is collected (bad JSON,
    missing or mistyped keys, a gold answer that names no option, a duplicate id, with
    ``strict`` a video that is not under ``videos``) into one
    :class:`~videovlm.questions.QuestionsFileError`, one line per problem. The file (JSON
    Lines, or a JSON list) and its keys are read and checked by
    :func:`videovlm.questions.read_questions`; keys a benchmark adds of its own are kept in
    ``fields``. A video that is not in ``videos`` is a problem only with ``strict``, or when no
    video of the file is there at all (the wrong ``--videos`` folder, not a few lost files);
    otherwise its questions are scored as missing. Videos are looked for only for the questions
    kept by ``limit``, so a quick run on the first few does not need the whole benchmark.
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
    missing = missing_videos(items, root)
    if strict:
        problems += [f"{path}: video {video!r} not found in {root} ({k} question"
                     f"{'s' if k > 1 else ''})" for video, k in missing.items()]
    elif items and len(missing) == len({i.video for i in items}):
        problems.append(f"{path}: none of its {len(missing)} videos is in {root}: give the "
                        "folder that holds them with --videos")
    if problems:
        raise QuestionsFileError(problems)
    return items


def missing_videos(items: Sequence[EvalItem], videos: str | os.PathLike[str]) -> dict[str, int]:
    """The videos of ``items`` that are not readable files under ``videos``, each with its
    question count (in order of first mention)."""
    root = Path(videos)
    missing: dict[str, int] = {}
    for item in items:
        if item.video not in missing and _readable(root / item.video):
            continue
        missing[item.video] = missing.get(item.video, 0) + 1
    return missing


def _readable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.R_OK)


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
    """How an evaluation went: the batch run's report and the scores written from its log
    (``report.json``'s content)."""

    batch: b.BatchReport
    summary: dict[str, Any] = field(default_factory=dict)
    strict: bool = False

    @property
    def exit_code(self) -> int:
        """130/143 stopped by Ctrl-C/SIGTERM; with ``strict``, 1 when some video failed;
        else 0: missing videos are part of the result, counted in the report."""
        if self.batch.interrupted or self.strict:
            return self.batch.exit_code
        return 0

    def line(self) -> str:
        """The one line a person reads at the end: the accuracy, its interval, and what it does
        not cover."""
        s = self.summary
        acc = "n/a" if s["accuracy"] is None else f"{s['accuracy']:.4f}"
        iv = s["accuracy_interval"]
        ci = f" [95% {iv[0]:.4f}-{iv[1]:.4f}]" if iv else ""
        tail = f", {s['unparseable']} unparseable" if s["unparseable"] else ""
        if s["missing"]:
            tail += (f", {s['missing']} missing on {len(s['missing_videos'])} video(s) (all "
                     f"questions {s['accuracy_all']:.4f})")
        tail += f", {s['pending']} questions left" if s["pending"] else ""
        return (f"accuracy {acc}{ci} ({s['correct']}/{s['answered']}){tail} on {s['protocol']} "
                f"-> {s['report_md']}")


def model_revision(model: Model) -> str:
    """The checkpoint's commit hash when it came from the hub, else ``config-sha256:`` and the
    digest of its config.json (a local folder has no commit; its config still tells two
    checkpoints apart)."""
    if model.revision:
        return model.revision
    digest = hashlib.sha256((Path(model.path) / "config.json").read_bytes()).hexdigest()
    return f"config-sha256:{digest[:16]}"


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
    resume: bool | str = True,
    progress: bool = True,
    say: Callable[[str], None] | None = None,
    dialogue: dict[str, Any] | None = None,
    strict: bool = False,
) -> EvalReport:
    """Answer ``items`` with ``model`` under ``protocol`` into ``out_dir`` and score them.

    One batch job per video (videos in order of first mention), decoded in background workers
    while the model answers the previous one; with ``batch_size`` > 1, that many videos'
    questions decode together (:mod:`videovlm.batch.together`). ``results.jsonl`` and
    ``batch.json`` make the run resumable (a rerun skips the videos recorded, answered or
    failed; ``resume=RETRY_FAILED`` redoes the failed ones; other settings are refused);
    afterwards ``predictions.jsonl``, ``report.json`` and ``report.md`` are rewritten from the
    whole log. A video that is missing or fails to decode
    is recorded as an error and its questions are scored as missing; ``strict`` makes that
    exit code 1. ``dialogue``
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
    provenance = {
        "protocol": protocol, "recipe": recipe.name, "recipe_digest": settings["recipe_digest"],
        "frames": recipe.sampling["n"] if n is None else n, "backend": backend,
        "model": {"id": model.id, "revision": model_revision(model), "family": model.family,
                  "dtype": model.dtype, "device": model.device,
                  "quantization": model.quantization},
        "questions_digest": settings["questions"],
    }
    summary = scoring.write_report(out, scoring.predictions(items, records), provenance)
    return EvalReport(batch=report, summary=summary, strict=strict)
