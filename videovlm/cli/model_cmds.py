"""``videovlm describe`` and ``videovlm ask``: options in, library calls, results out.

Results go to stdout (JSON) or to files (``-o``); logs, warnings and progress go to stderr, so
``videovlm describe a.mp4 > a.json`` is always clean JSON. The model is loaded once per command,
before any video is decoded, so a missing model fails in seconds with one line.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from videovlm.cli import cli
from videovlm.decode import BACKEND_NAMES
from videovlm.errors import VideoVLMError


def model_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """The options every command that runs the model shares: --model, --device, --dtype, -n."""
    options = [
        click.option("--model", "model_id", metavar="ID|PATH", default=None,
                     help="Hub id or local checkpoint folder [default: $VIDEOVLM_MODEL or "
                          "HuggingFaceTB/SmolVLM-Instruct]."),
        click.option("--device", default=None, metavar="auto|cuda|cuda:N|mps|cpu",
                     help="Where the model runs [default: cuda > mps > cpu]."),
        click.option("--dtype", default=None, metavar="auto|bfloat16|float16|float32",
                     help="Model weights' type [default: bfloat16 on GPU, float32 on CPU]."),
        click.option("-n", "--frames", "n", type=click.IntRange(min=1), default=None,
                     help="Frame budget for the whole video [default: the recipe's, 50]."),
    ]
    for option in reversed(options):
        f = option(f)
    return f


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is now (a test's capture, a redirected stream)."""

    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(logging.Formatter("videovlm: %(levelname)s: %(message)s"))

    @property  # type: ignore[override]
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass


def _setup_logging(quiet: bool) -> None:
    """Warnings (and, unless quiet, progress notes) on stderr, one line each; never stdout."""
    logger = logging.getLogger("videovlm")
    if not any(isinstance(h, _StderrHandler) for h in logger.handlers):
        logger.addHandler(_StderrHandler())
        logger.propagate = False
    logger.setLevel(logging.WARNING if quiet else logging.INFO)


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


def _load_model(model_id: str | None, device: str | None, dtype: str | None,
                quiet: bool = False) -> Any:
    from videovlm.model import Model

    if quiet or not sys.stderr.isatty():
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # its "Loading weights" bar is noise in logs
    log = logging.getLogger("videovlm")
    model = Model.load(model_id, device=device, dtype=dtype)
    log.info("loaded %s on %s (%s)", model.id, model.device, model.dtype)
    return model


def _stems(videos: list[str]) -> list[str]:
    """Output names from the videos' names, made unique (``x``, ``x-2``) so none overwrites."""
    seen: dict[str, int] = {}
    stems = []
    for v in videos:
        stem = Path(v).stem or "video"
        seen[stem] = seen.get(stem, 0) + 1
        stems.append(stem if seen[stem] == 1 else f"{stem}-{seen[stem]}")
    return stems


def _progress(items: list[Any], quiet: bool, desc: str) -> Any:
    from tqdm import tqdm

    return tqdm(items, desc=desc, unit="video", file=sys.stderr,
                disable=quiet or len(items) < 2 or not sys.stderr.isatty())


@cli.command()
@click.argument("videos", nargs=-1, required=True)
@click.option("-o", "--output", "out_dir", type=click.Path(file_okay=False, path_type=Path),
              default=None, help="Write DIR/<video name>.<format> files instead of printing JSON.")
@click.option("-f", "--format", "formats", default=None, metavar="json,srt,vtt,md,html",
              help="Output formats, comma-separated, or all [default: the recipe's outputs].")
@click.option("--mode", type=click.Choice(["scenes", "timeline"]), default=None,
              help="scenes (default): find the cuts, describe each scene with its frames; "
                   "timeline: one prompt with all frames.")
@click.option("--sheet", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write a contact sheet of the frames the model saw (.jpg or .png).")
@click.option("--backend", type=click.Choice(BACKEND_NAMES), default=None,
              help="Decoder [default: the recipe's, auto].")
@click.option("--recipe", default=None, metavar="NAME|FILE.toml",
              help="Recipe to run [default: describe for scenes, timeline for timeline mode].")
@click.option("--quiet", is_flag=True, help="No progress or notes on stderr (warnings stay).")
@model_options
def describe(videos: tuple[str, ...], out_dir: Path | None, formats: str | None, mode: str | None,
             sheet: Path | None, backend: str | None, recipe: str | None, quiet: bool,
             model_id: str | None, device: str | None, dtype: str | None, n: int | None) -> None:
    """Describe what happens in each VIDEO, with timestamps.

    Without -o the result JSON goes to stdout (one line per video when there are several).
    """
    from videovlm.api import _MODE_RECIPE, run_recipe
    from videovlm.pipelines import load_recipe
    from videovlm.sheet import contact_sheet, sheet_format
    from videovlm.writers import parse_formats, write

    _setup_logging(quiet)
    rec = load_recipe(recipe or _MODE_RECIPE[mode or "scenes"])
    if rec.task not in ("describe", "timeline"):
        raise VideoVLMError(f"recipe {rec.name!r} is a {rec.task!r} recipe: run it with "
                            "`videovlm ask` or `videovlm run`")
    mode = mode or ("timeline" if rec.task == "timeline" else "scenes")
    if formats is not None and out_dir is None:
        raise VideoVLMError("-f/--format needs an output folder: add -o DIR")
    if sheet is not None:
        sheet_format(sheet)  # a bad name fails now, not after the model ran
    names = parse_formats(formats if formats is not None else rec.outputs)
    _check_inputs(list(videos))
    model = _load_model(model_id, device, dtype, quiet)

    video_list = list(videos)
    stems = _stems(video_list)
    failed = 0
    log = logging.getLogger("videovlm")
    for video, stem in zip(_progress(video_list, quiet, "describe"), stems, strict=True):
        try:
            result = run_recipe(rec, video, model=model, n=n, backend=backend, mode=mode)
        except VideoVLMError as exc:
            if len(video_list) == 1:
                raise
            failed += 1
            log.error("%s: %s", video, exc)
            continue
        if sheet is not None:
            target = sheet if len(video_list) == 1 else sheet.with_name(
                f"{sheet.stem}_{stem}{sheet.suffix}")
            contact_sheet(result.frames, target)
            log.info("wrote %s", target)
        if out_dir is not None:
            for path in write(result, out_dir, names, stem):
                log.info("wrote %s", path)
        elif len(video_list) == 1:
            click.echo(json.dumps(result.to_dict(), indent=2, ensure_ascii=False))
        else:
            click.echo(json.dumps(result.to_dict(), ensure_ascii=False))
    if failed:
        log.error("%d of %d videos failed", failed, len(video_list))
        sys.exit(1)


@cli.command()
@click.argument("video")
@click.option("-q", "--question", "questions", multiple=True, required=True,
              help="A question about the video; repeat for several (the video is encoded once).")
@click.option("--choices", multiple=True, metavar="TEXT",
              help="An option for multiple choice; repeat for each (lettered A, B, C...).")
@click.option("--json", "as_json", is_flag=True, help="Print the result JSON instead of text.")
@click.option("--backend", type=click.Choice(BACKEND_NAMES), default=None,
              help="Decoder [default: the recipe's, auto].")
@click.option("--recipe", default=None, metavar="NAME|FILE.toml",
              help="Recipe to run [default: mcq with --choices, else qa].")
@click.option("--quiet", is_flag=True, help="No notes on stderr (warnings stay).")
@model_options
def ask(video: str, questions: tuple[str, ...], choices: tuple[str, ...], as_json: bool,
        backend: str | None, recipe: str | None, quiet: bool, model_id: str | None,
        device: str | None, dtype: str | None, n: int | None) -> None:
    """Answer questions about VIDEO (multiple choice with --choices)."""
    from videovlm.api import ask as ask_api
    from videovlm.pipelines import load_recipe

    _setup_logging(quiet)
    rec = load_recipe(recipe or ("mcq" if choices else "qa"))
    if choices and len(choices) < 2:
        raise VideoVLMError("multiple choice needs at least two --choices")
    if any(not q.strip() for q in questions):
        raise VideoVLMError("a question (-q) is empty: give the question's text")
    _check_inputs([video])
    model = _load_model(model_id, device, dtype, quiet)
    result = ask_api(video, list(questions), choices=list(choices) or None, model=model, n=n,
                     backend=backend, recipe=rec)
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2, ensure_ascii=False))
        return
    for i, a in enumerate(result.answers):
        if i:
            click.echo()
        click.echo(f"Q: {a.question}")
        click.echo(f"A: {a.answer}")
        if a.choice:
            option = a.choices["ABCDEFGHIJKLMNOPQRSTUVWXYZ".index(a.choice)] if a.choices else ""
            click.echo(f"Choice: {a.choice}. {option}".rstrip())

