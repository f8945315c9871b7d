"""``videovlm batch``: every video of a folder, one record each, resumable after any crash.

Only options in and a report out: finding inputs, the crash-safe log and the engines live in
:mod:`videovlm.batch` and :mod:`videovlm.batch_ray`. Everything a user can get wrong (a folder
with no videos, a questions file naming unknown videos, a model that is not there, an output
folder made with other settings) is refused in one line before anything is written; a questions
file with mistakes gets one line per mistake, all of them at once.
:func:`run_batch` is also what ``videovlm run RECIPE DIR`` calls, so the two cannot drift apart.
"""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from videovlm import batch as b
from videovlm import tasks
from videovlm.api import windowed_recipe
from videovlm.batch_ray import run_ray
from videovlm.cli import cli
from videovlm.cli.common import (
    backend_option,
    batch_size_option,
    dialogue_options,
    dialogue_overrides,
    formats_option,
    load_model,
    model_options,
    output_option,
    quiet_option,
    resume_options,
    say_problems,
    setup_logging,
    window_option,
)
from videovlm.errors import VideoVLMError
from videovlm.model import default_model_id
from videovlm.pipelines import load_recipe
from videovlm.questions import QuestionsFileError
from videovlm.writers import parse_formats

if TYPE_CHECKING:
    from videovlm.batch import BatchReport, Question
    from videovlm.pipelines import Recipe


@cli.command()
@click.argument("folder", type=click.Path(exists=True, file_okay=False, path_type=Path))
@output_option("Output folder: results.jsonl, batch.json and per-video files.", required=True)
@click.option("--recipe", "--pipeline", "recipe_name", default=None, metavar="NAME|FILE.toml",
              help=f"Recipe to run [default: {tasks.get(tasks.DEFAULT_TASK).recipe}; "
                   f"{tasks.for_questions(False).recipe} with --questions, "
                   f"{tasks.for_questions(True).recipe} for its questions with choices]. "
                   "--pipeline is an alias.")
@click.option("--recursive/--no-recursive", default=True, show_default=True,
              help="Walk subfolders.")
@click.option("--include", multiple=True, metavar="GLOB",
              help="Only files matching GLOB (path relative to FOLDER, or name); picks videos "
                   "with any extension. Repeatable.")
@click.option("--exclude", multiple=True, metavar="GLOB", help="Leave out matching files. "
              "Repeatable.")
@resume_options("videos")
@click.option("--workers", type=click.IntRange(min=0), default=2, show_default=True,
              help="Background decode workers (local engine; 0: decode and generate in turn).")
@batch_size_option
@click.option("--questions", "questions_file", default=None,
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="JSON Lines of {video, question, choices?} (or one question per line, for "
                   "every video): answered per video in the same pass.")
@formats_option
@click.option("--engine", type=click.Choice(["local", "ray"]), default="local",
              show_default=True, help="ray: decode as Ray tasks, generate in an actor pool "
              "(RAY_ADDRESS for a cluster; pip install 'videovlm[ray]').")
@window_option
@backend_option
@dialogue_options
@quiet_option
@model_options
def batch(folder: Path, out_dir: Path, recipe_name: str | None, recursive: bool,
          include: tuple[str, ...], exclude: tuple[str, ...], resume: bool | str, workers: int,
          batch_size: int, questions_file: Path | None, formats: str | None, engine: str,
          window: float | None, backend: str | None, dialogue: dict[str, Any],
          quiet: bool, model_id: str | None, device: str | None, dtype: str | None,
          n: int | None, no_cache: bool, quantize: str | None) -> None:
    """Run a recipe on every video in FOLDER, writing OUTDIR/results.jsonl (one line per video).

    Videos are found by content. Killed or interrupted, the same command resumes where it
    stopped: Ctrl-C or SIGTERM finishes the current video, then stops (twice: at once). Exit
    code 0: all done; 1: some videos failed (each has an error record); 2: a mistake, an
    unwritable OUTDIR or a full disk; 130/143: stopped by Ctrl-C/SIGTERM.
    """
    setup_logging(quiet)
    if recipe_name is not None:
        recipe = choice_recipe = load_recipe(recipe_name)
    elif questions_file is not None:
        recipe = load_recipe(tasks.for_questions(False).recipe)
        choice_recipe = load_recipe(tasks.for_questions(True).recipe)
    else:
        recipe = choice_recipe = load_recipe(tasks.get(tasks.DEFAULT_TASK).recipe)
    if window is not None:
        recipe = windowed_recipe(recipe, window)
        choice_recipe = recipe if choice_recipe.name == recipe.name else choice_recipe
    dialogue = dialogue_overrides(dialogue, one_video=False)
    recipe = recipe.with_overrides(**dialogue)
    choice_recipe = choice_recipe.with_overrides(**dialogue)
    if questions_file and not tasks.get(recipe.task).questions:
        raise VideoVLMError(f"recipe {recipe.name!r} does not ask questions (task "
                            f"{recipe.task!r}): use --recipe {tasks.for_questions(False).recipe}"
                            f" or {tasks.for_questions(True).recipe} with --questions")
    sys.exit(run_batch(folder, out_dir, recipe, choice_recipe=choice_recipe,
                       questions_file=questions_file, recursive=recursive, include=include,
                       exclude=exclude, resume=resume, workers=workers,
                       batch_size=batch_size, formats=formats,
                       engine=engine, backend=backend, n=n, model_id=model_id, device=device,
                       dtype=dtype, quiet=quiet, no_cache=no_cache, quantize=quantize))


def run_batch(
    folder: Path,
    out_dir: Path,
    recipe: Recipe,
    *,
    choice_recipe: Recipe | None = None,
    questions_file: Path | None = None,
    asked: Sequence[Question] = (),
    recursive: bool = True,
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    resume: bool | str = True,
    workers: int = 2,
    batch_size: int = 1,
    formats: str | None = None,
    engine: str = "local",
    backend: str | None = None,
    n: int | None = None,
    model_id: str | None = None,
    device: str | None = None,
    dtype: str | None = None,
    quiet: bool = False,
    no_cache: bool = False,
    quantize: str | None = None,
) -> int:
    """Run ``recipe`` on every video in ``folder`` into ``out_dir``; the exit code (0 all done,
    1 some failed, 2 a questions file with mistakes, 130/143 stopped by Ctrl-C/SIGTERM).

    Questions come from a file (``questions_file``, per video or for all) or are ``asked`` of
    every video; ``choice_recipe`` answers those with choices. ``n`` and ``backend`` are kept
    apart from the recipe, as in ``batch.json``'s settings, so ``run RECIPE DIR`` and ``batch
    DIR --pipeline RECIPE`` record the same settings and can resume each other's folders. The
    model loads only once the inputs are known to be good, so a mistake costs seconds and
    writes nothing. The summary line is printed even when quiet: it is the batch's result.
    """
    say = (lambda text: None) if quiet else (lambda text: click.echo(f"videovlm: {text}",
                                                                      err=True))
    names = parse_formats(formats if formats is not None else recipe.outputs or ["json"])

    found = b.find_videos(folder, recursive=recursive, include=include, exclude=exclude,
                          skip=[out_dir])
    if found.not_video:
        shown = ", ".join(found.not_video[:3])
        more = f" and {len(found.not_video) - 3} more" if len(found.not_video) > 3 else ""
        say(f"ignored {len(found.not_video)} file(s) that are not videos by content: "
            f"{shown}{more}")
    jobs = found.jobs
    questions = b.Questions(common=list(asked)) if asked else None
    if questions_file is not None:
        try:
            questions = b.load_questions(questions_file, folder, [j.input for j in jobs])
        except QuestionsFileError as exc:  # every problem on its own line, nothing written
            say_problems(exc)
            return exc.exit_code
        if questions.named and not questions.common:  # the file names its videos: only those
            jobs = [j for j in jobs if j.input in questions.named]
    if engine == "ray" and batch_size > 1:
        raise VideoVLMError("--batch-size runs on the local engine; with --engine ray each "
                            "model actor takes one video at a time: drop one of them")
    if not jobs:
        raise VideoVLMError(f"no videos found in {folder}"
                            f"{'' if recursive else ' (subfolders not walked)'}; "
                            "check the folder, or pick files with --include GLOB")

    settings = {
        "recipe": recipe.name, "recipe_digest": b.settings_digest(recipe.to_dict()),
        "model": model_id or default_model_id(), "n": n, "backend": backend, "formats": names,
        "questions": None if questions is None else b.settings_digest(
            [questions.common, sorted(questions.named.items())]),
    }
    report: BatchReport
    if engine == "ray":
        report = run_ray(jobs, recipe, out_dir, model_id=model_id, device=device, dtype=dtype,
                         n=n, backend=backend, questions=questions, choice_recipe=choice_recipe,
                         formats=names, resume=resume, settings=settings,
                         progress=not quiet, say=say, cache=not no_cache,
                         quantize=quantize)
    else:
        # before any file is written
        model = load_model(model_id, device, dtype, quiet, no_cache, quantize)
        stages = b.VideoStages(recipe, image_size=model.image_size, n=n, backend=backend,
                               questions=questions, choice_recipe=choice_recipe,
                               out_dir=out_dir, resume=resume)
        stage = functools.partial(stages.model, model)
        size = b.batch_size_for(model, batch_size)
        report = b.run_local(jobs, stages.cpu, stage, out_dir, formats=names, workers=workers,
                             resume=resume, settings=settings, progress=not quiet,
                             batch_size=size, model_batch=b.batched(model, stage, size))
    if report.interrupted:
        click.echo("videovlm: interrupted: " + report.summary() + "; run the same command "
                   "again (without --no-resume) to resume", err=True)
    else:
        click.echo("videovlm: batch: " + report.summary(), err=True)
    logging.getLogger("videovlm").debug("batch report: %s", report)
    return report.exit_code
