"""``videovlm describe`` and ``videovlm ask``: options in, library calls, results out.

Results go to stdout (JSON) or to files (``-o``); logs, warnings and progress go to stderr, so
``videovlm describe a.mp4 > a.json`` is always clean JSON. The model is loaded once per command,
before any video is decoded, so a missing model fails in seconds with one line.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from videovlm.cli import cli
from videovlm.cli.common import (
    backend_option,
    formats_option,
    load_model,
    model_options,
    output_formats,
    output_option,
    quiet_option,
    recipe_option,
    run_videos,
    setup_logging,
)
from videovlm.errors import VideoVLMError

if TYPE_CHECKING:
    from videovlm.result import Result


def _check_inputs(videos: list[str]) -> None:
    """Refuse unreadable inputs before the model loads (seconds) rather than after.

    One video is probed (a demux pass, milliseconds); several are only checked to exist, so a
    long list does not wait for every probe before the first result.
    """
    from videovlm.errors import InputError
    from videovlm.probe import probe

    if len(videos) == 1:
        probe(videos[0])
        return
    for v in videos:
        if not Path(v).is_file():
            raise InputError(f"{v}: no such file")


@cli.command()
@click.argument("videos", nargs=-1, required=True)
@output_option("Write DIR/<video name>.<format> files instead of printing JSON.")
@formats_option
@click.option("--mode", type=click.Choice(["scenes", "timeline"]), default=None,
              help="scenes (default): find the cuts, describe each scene with its frames; "
                   "timeline: one prompt with all frames.")
@click.option("--sheet", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write a contact sheet of the frames the model saw (.jpg or .png).")
@backend_option
@recipe_option("describe for scenes, timeline for timeline mode")
@quiet_option
@model_options
def describe(videos: tuple[str, ...], out_dir: Path | None, formats: str | None, mode: str | None,
             sheet: Path | None, backend: str | None, recipe: str | None, quiet: bool,
             model_id: str | None, device: str | None, dtype: str | None, n: int | None) -> None:
    """Describe what happens in each VIDEO, with timestamps.

    Without -o the result JSON goes to stdout (one line per video when there are several).
    """
    from videovlm.api import _MODE_RECIPE, run_recipe
    from videovlm.pipelines import load_recipe
    from videovlm.sheet import sheet_format

    setup_logging(quiet)
    rec = load_recipe(recipe or _MODE_RECIPE[mode or "scenes"])
    if rec.task not in ("describe", "timeline"):
        raise VideoVLMError(f"recipe {rec.name!r} is a {rec.task!r} recipe: run it with "
                            "`videovlm ask` or `videovlm run`")
    run_mode = mode or ("timeline" if rec.task == "timeline" else "scenes")
    names = output_formats(formats, out_dir, rec.outputs)
    if sheet is not None:
        sheet_format(sheet)  # a bad name fails now, not after the model ran
    _check_inputs(list(videos))
    model = load_model(model_id, device, dtype, quiet)
    code = run_videos(
        videos, lambda video: run_recipe(rec, video, model=model, n=n, backend=backend,
                                         mode=run_mode),
        desc="describe", quiet=quiet, out_dir=out_dir, formats=names, sheet=sheet)
    if code:
        sys.exit(code)


def _print_answers(result: Result) -> None:
    """Answers as text for a person: ``Q:``, ``A:`` and the chosen option, blank-line apart."""
    for i, a in enumerate(result.answers):
        if i:
            click.echo()
        click.echo(f"Q: {a.question}")
        click.echo(f"A: {a.answer}")
        if a.choice:
            option = a.choices["ABCDEFGHIJKLMNOPQRSTUVWXYZ".index(a.choice)] if a.choices else ""
            click.echo(f"Choice: {a.choice}. {option}".rstrip())


@cli.command()
@click.argument("video")
@click.option("-q", "--question", "questions", multiple=True, required=True,
              help="A question about the video; repeat for several (the video is encoded once).")
@click.option("--choices", multiple=True, metavar="TEXT",
              help="An option for multiple choice; repeat for each (lettered A, B, C...).")
@click.option("--json", "as_json", is_flag=True, help="Print the result JSON instead of text.")
@backend_option
@recipe_option("mcq with --choices, else qa")
@quiet_option
@model_options
def ask(video: str, questions: tuple[str, ...], choices: tuple[str, ...], as_json: bool,
        backend: str | None, recipe: str | None, quiet: bool, model_id: str | None,
        device: str | None, dtype: str | None, n: int | None) -> None:
    """Answer questions about VIDEO (multiple choice with --choices)."""
    from videovlm.api import ask as ask_api
    from videovlm.pipelines import load_recipe

    setup_logging(quiet)
    rec = load_recipe(recipe or ("mcq" if choices else "qa"))
    if choices and len(choices) < 2:
        raise VideoVLMError("multiple choice needs at least two --choices")
    if any(not q.strip() for q in questions):
        raise VideoVLMError("a question (-q) is empty: give the question's text")
    _check_inputs([video])
    model = load_model(model_id, device, dtype, quiet)
    run_videos(
        [video], lambda v: ask_api(v, list(questions), choices=list(choices) or None,
                                   model=model, n=n, backend=backend, recipe=rec),
        desc="ask", quiet=quiet, show=None if as_json else _print_answers)
