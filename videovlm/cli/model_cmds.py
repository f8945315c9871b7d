"""``videovlm describe`` and ``videovlm ask``: options in, library calls, results out.

Results go to stdout (JSON) or to files (``-o``); logs, warnings and progress go to stderr, so
``videovlm describe a.mp4 > a.json`` is always clean JSON. The model is loaded once per command,
before any video is decoded, so a missing model fails in seconds with one line.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from videovlm.api import ask as ask_api
from videovlm.api import ask_recipe, describe_recipe, run_recipe, windowed_recipe
from videovlm.cli import cli
from videovlm.cli.common import (
    backend_option,
    dialogue_options,
    dialogue_overrides,
    formats_option,
    load_model,
    model_options,
    output_formats,
    output_option,
    quiet_option,
    recipe_option,
    run_videos,
    setup_logging,
    stream_option,
    window_option,
)
from videovlm.errors import InputError, VideoVLMError
from videovlm.files import check_output_file
from videovlm.probe import probe
from videovlm.sheet import sheet_format
from videovlm.tasks import DEFAULT_TASK, DESCRIBE_MODES, TASKS, for_questions
from videovlm.text import LETTERS

if TYPE_CHECKING:
    from videovlm.result import Result


def _check_inputs(videos: list[str]) -> None:
    """Refuse unreadable inputs before the model loads (seconds) rather than after.

    One video is probed (a demux pass, milliseconds); several are only checked to exist, so a
    long list does not wait for every probe before the first result.
    """
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
@click.option("--mode", type=click.Choice(DESCRIBE_MODES), default=None,
              help="; ".join(f"{t.mode}{' (default)' if t.name == DEFAULT_TASK else ''}: "
                             f"{t.help}" for t in TASKS.values() if t.describes) + ".")
@click.option("--sheet", type=click.Path(path_type=Path), default=None, metavar="FILE",
              help="Also write a contact sheet of the frames the model saw (.jpg or .png).")
@window_option
@stream_option
@backend_option
@recipe_option(", ".join(f"{t.recipe} for {t.mode}" for t in TASKS.values() if t.describes))
@dialogue_options
@quiet_option
@model_options
def describe(videos: tuple[str, ...], out_dir: Path | None, formats: str | None, mode: str | None,
             sheet: Path | None, window: float | None, stream: bool, backend: str | None,
             recipe: str | None, dialogue: dict[str, Any], quiet: bool,
             model_id: str | None, device: str | None, dtype: str | None, n: int | None,
             no_cache: bool, quantize: str | None) -> None:
    """Describe what happens in each VIDEO, with timestamps.

    Without -o the result JSON goes to stdout (one line per video when there are several).
    A video over ten minutes is described in five-minute windows, each from its own -n frames
    (--window changes that); killed, the same command resumes after the last finished window.
    Ctrl-C or SIGTERM finishes the current video or window, then stops (exit 130/143).
    Subtitles next to a video (clip.srt, clip.en.vtt) or inside it go with the frames
    (--subtitles none: frames only).
    """
    setup_logging(quiet)
    rec = windowed_recipe(describe_recipe(mode, recipe), window).with_overrides(
        **dialogue_overrides(dialogue, one_video=len(videos) == 1))
    names = output_formats(formats, out_dir, rec.outputs)
    if sheet is not None:
        sheet_format(sheet)  # a bad name fails now, not after the model ran
        check_output_file(sheet)
    _check_inputs(list(videos))
    model = load_model(model_id, device, dtype, quiet, no_cache, quantize)
    code = run_videos(
        videos, lambda video, watch: run_recipe(rec, video, model=model, n=n, backend=backend,
                                                **watch.kwargs()),
        desc=rec.name, quiet=quiet, out_dir=out_dir, formats=names, sheet=sheet, stream=stream)
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
            option = a.choices[LETTERS.index(a.choice)] if a.choices else ""
            click.echo(f"Choice: {a.choice}. {option}".rstrip())


@cli.command()
@click.argument("video")
@click.option("-q", "--question", "questions", multiple=True, required=True,
              help="A question about the video; repeat for several (the video is encoded once).")
@click.option("--choices", multiple=True, metavar="TEXT",
              help="An option for multiple choice; repeat for each (lettered A, B, C...).")
@click.option("--json", "as_json", is_flag=True, help="Print the result JSON instead of text.")
@backend_option
@recipe_option(f"{for_questions(True).recipe} with --choices, else "
               f"{for_questions(False).recipe}")
@dialogue_options
@quiet_option
@model_options
def ask(video: str, questions: tuple[str, ...], choices: tuple[str, ...], as_json: bool,
        backend: str | None, recipe: str | None,
        dialogue: dict[str, Any], quiet: bool, model_id: str | None,
        device: str | None, dtype: str | None, n: int | None, no_cache: bool,
        quantize: str | None) -> None:
    """Answer questions about VIDEO (multiple choice with --choices), from its frames and its
    subtitles when it has some."""
    setup_logging(quiet)
    rec = ask_recipe(choices, recipe).with_overrides(
        **dialogue_overrides(dialogue))
    if choices and len(choices) < 2:
        raise VideoVLMError("multiple choice needs at least two --choices")
    if any(not q.strip() for q in questions):
        raise VideoVLMError("a question (-q) is empty: give the question's text")
    _check_inputs([video])
    model = load_model(model_id, device, dtype, quiet, no_cache, quantize)
    code = run_videos(
        [video], lambda v, _: ask_api(v, list(questions), choices=list(choices) or None,
                                      model=model, n=n, backend=backend, recipe=rec),
        desc="ask", quiet=quiet, show=None if as_json else _print_answers)
    if code:
        sys.exit(code)
