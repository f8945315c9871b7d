"""``videovlm run RECIPE INPUT...`` and ``videovlm pipelines``: any recipe, by name or file.

The options that override a recipe are generated from :data:`videovlm.pipelines.SCHEMA`, so
their choices, bounds and help are the ones a recipe file is checked against; an option left
out keeps the recipe's value. A folder input runs through the same function as ``videovlm
batch`` (:func:`~videovlm.cli.batch_cmd.run_batch`): same records, messages and exit codes.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from videovlm import tasks
from videovlm.api import run_recipe, windowed_recipe
from videovlm.batch import Question
from videovlm.cli import cli
from videovlm.cli.batch_cmd import run_batch
from videovlm.cli.common import (
    dialogue_options,
    dialogue_overrides,
    formats_option,
    load_model,
    model_options,
    output_formats,
    output_option,
    quiet_option,
    resume_options,
    run_videos,
    schema_options,
    setup_logging,
    stream_option,
    window_option,
)
from videovlm.errors import InputError, VideoVLMError
from videovlm.pipelines import Recipe, list_recipes, load_recipe


@cli.command("run")
@click.argument("recipe", metavar="RECIPE")
@click.argument("inputs", nargs=-1, required=True, metavar="VIDEO_OR_DIR...")
@output_option("Write DIR/<video name>.<format> files (needed for a folder).")
@formats_option
@click.option("-q", "--question", "questions", multiple=True,
              help="A question (qa and mcq recipes); repeat for several.")
@click.option("--choices", multiple=True, metavar="TEXT",
              help="An option for multiple choice (mcq recipes); repeat for each.")
@schema_options("backend", "seek", "fit", "max_new_tokens")
@window_option
@stream_option
@dialogue_options
@resume_options("(for a folder) videos")
@quiet_option
@model_options
def run(recipe: str, inputs: tuple[str, ...], out_dir: Path | None, formats: str | None,
        questions: tuple[str, ...], choices: tuple[str, ...], backend: str | None,
        seek: str | None, fit: str | None, max_new_tokens: int | None, window: float | None,
        stream: bool, dialogue: dict[str, Any], resume: bool | str,
        quiet: bool, model_id: str | None, device: str | None, dtype: str | None,
        n: int | None, no_cache: bool, quantize: str | None) -> None:
    """Run RECIPE (a built-in name, see `videovlm pipelines`, or a .toml file) on videos.

    Files: without -o the result JSON goes to stdout (one line per video when there are
    several). A folder: every video in it, one record each in OUTDIR/results.jsonl, exactly
    as `videovlm batch FOLDER -o OUTDIR --pipeline RECIPE` would.
    """
    setup_logging(quiet)
    folders = [p for p in inputs if Path(p).is_dir()]
    rec = load_recipe(recipe).with_overrides(
        seek=seek, fit=fit, max_new_tokens=max_new_tokens,
        **dialogue_overrides(dialogue,
                             one_video=len(inputs) == 1 and not folders))
    rec = windowed_recipe(rec, window)
    rec.with_overrides(n=n)  # applied per video, as batch does; a bad -n fails here, first
    names = output_formats(formats, out_dir, rec.outputs)
    _check_questions(rec, questions, choices)
    if folders and len(inputs) > 1:
        raise VideoVLMError("give either one folder or video files, not both: "
                            f"{folders[0]} is a folder")
    if folders and out_dir is None:
        raise VideoVLMError(f"{folders[0]} is a folder: add -o OUTDIR for its results")
    if len(inputs) == 1 and not Path(inputs[0]).exists():  # fail before the model loads
        raise InputError(f"{inputs[0]}: no such file or folder")
    if folders:
        assert out_dir is not None
        if stream:
            raise VideoVLMError("--stream prints one run's segments: a folder's results go to "
                                "OUTDIR/results.jsonl; drop --stream")
        sys.exit(run_batch(Path(folders[0]), out_dir, rec, choice_recipe=rec,
                           asked=[Question(q, tuple(choices) or None) for q in questions],
                           resume=resume, formats=formats, backend=backend, n=n,
                           model_id=model_id, device=device, dtype=dtype, quiet=quiet,
                           no_cache=no_cache, quantize=quantize))
    model = load_model(model_id, device, dtype, quiet, no_cache, quantize)
    code = run_videos(
        inputs, lambda video, watch: run_recipe(rec, video, model=model, n=n, backend=backend,
                                                questions=list(questions) or None,
                                                choices=list(choices) or None,
                                                **watch.kwargs()),
        desc=rec.name, quiet=quiet, out_dir=out_dir, formats=names, stream=stream)
    if code:
        sys.exit(code)


def _check_questions(rec: Recipe, questions: tuple[str, ...], choices: tuple[str, ...]) -> None:
    """Mismatches between a recipe's task and the questions given, before any model loads."""
    task = tasks.get(rec.task)
    if task.questions and not questions:
        raise VideoVLMError(f"recipe {rec.name!r} ({rec.task}) answers questions: add -q QUESTION")
    tasks.check_takes_questions(rec.name, rec.task, questions, "drop -q, or ")
    if any(not q.strip() for q in questions):
        raise VideoVLMError("a question (-q) is empty: give the question's text")
    if task.choices and len(choices) < 2:
        raise VideoVLMError(f"recipe {rec.name!r} is multiple choice: give at least two "
                            "--choices")
    if choices and not task.choices:
        raise VideoVLMError(f"--choices needs a multiple-choice recipe; {rec.name!r} is "
                            f"{rec.task!r}: run {tasks.for_questions(True).recipe}")


@cli.command("pipelines")
@click.option("--show", "show", metavar="NAME", default=None,
              help="Print a recipe's TOML (copy it to start your own: --show describe > my.toml).")
@click.option("--json", "as_json", is_flag=True, help="List the recipes as JSON.")
def pipelines(show: str | None, as_json: bool) -> None:
    """List the built-in recipes, one line each (run one with `videovlm run NAME VIDEO`)."""
    if show is not None:
        rec = load_recipe(show)
        click.echo(Path(rec.path).read_text(encoding="utf-8"), nl=False)
        return
    recipes = list_recipes()
    if as_json:
        click.echo(json.dumps([{"name": r.name, "task": r.task, "description": r.description,
                                "path": r.path} for r in recipes], indent=2))
        return
    width = max(len(r.name) for r in recipes)
    for r in recipes:
        click.echo(f"{r.name:<{width}}  {r.task:<8}  {r.description}")
