"""``videovlm run RECIPE INPUT...`` and ``videovlm pipelines``: any recipe, by name or file.

The options that override a recipe are generated from :data:`videovlm.pipelines.SCHEMA`, so
their choices, bounds and help are the ones a recipe file is checked against; an option left
out keeps the recipe's value. A folder input runs as a batch (``results.jsonl``, resumable), the
same engine as ``videovlm batch``.
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
from videovlm.cli.model_cmds import (
    _load_model,
    _progress,
    _setup_logging,
    _stems,
    model_options,
)
from videovlm.errors import InputError, VideoVLMError


def schema_options(*keys: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Click options for recipe keys, derived from the schema (``--max-new-tokens`` ...).

    Defaults are ``None`` ("the recipe's value"); the schema's default is shown in the help.
    """
    from videovlm.pipelines import KEY_SECTION, SCHEMA

    def decorate(f: Callable[..., Any]) -> Callable[..., Any]:
        for key in reversed(keys):
            opt = SCHEMA[KEY_SECTION[key]][key]
            kind: Any
            if opt.choices is not None:
                kind = click.Choice(opt.choices)
            elif opt.type is int:
                kind = click.IntRange(min=opt.min, max=opt.max)
            elif opt.type is float:
                kind = click.FloatRange(min=opt.min, max=opt.max)
            else:
                kind = opt.type
            shown = "" if opt.default is None else f", {opt.default}"
            f = click.option(f"--{key.replace('_', '-')}", key, type=kind, default=None,
                             help=f"{opt.help[:1].upper()}{opt.help[1:]} [default: the "
                                  f"recipe's{shown}].")(f)
        return f

    return decorate


@cli.command("run")
@click.argument("recipe", metavar="RECIPE")
@click.argument("inputs", nargs=-1, required=True, metavar="VIDEO_OR_DIR...")
@click.option("-o", "--output", "out_dir", type=click.Path(file_okay=False, path_type=Path),
              default=None, help="Write DIR/<video name>.<format> files (needed for a folder).")
@click.option("-f", "--format", "formats", default=None, metavar="json,srt,vtt,md,html",
              help="Output formats, comma-separated, or all [default: the recipe's outputs].")
@click.option("-q", "--question", "questions", multiple=True,
              help="A question (qa and mcq recipes); repeat for several.")
@click.option("--choices", multiple=True, metavar="TEXT",
              help="An option for multiple choice (mcq recipes); repeat for each.")
@schema_options("backend", "seek", "fit", "max_new_tokens")
@click.option("--resume/--no-resume", default=True, show_default=True,
              help="For a folder: skip videos already recorded in OUTDIR/results.jsonl.")
@click.option("--quiet", is_flag=True, help="No progress or notes on stderr (warnings stay).")
@model_options
def run(recipe: str, inputs: tuple[str, ...], out_dir: Path | None, formats: str | None,
        questions: tuple[str, ...], choices: tuple[str, ...], backend: str | None,
        seek: str | None, fit: str | None, max_new_tokens: int | None, resume: bool,
        quiet: bool, model_id: str | None, device: str | None, dtype: str | None,
        n: int | None) -> None:
    """Run RECIPE (a built-in name, see `videovlm pipelines`, or a .toml file) on videos.

    Files: without -o the result JSON goes to stdout (one line per video when there are
    several). A folder: every video in it, one record each in OUTDIR/results.jsonl.
    """
    from videovlm.pipelines import load_recipe
    from videovlm.writers import parse_formats

    _setup_logging(quiet)
    rec = load_recipe(recipe).with_overrides(
        n=n, backend=backend, seek=seek, fit=fit, max_new_tokens=max_new_tokens,
        formats=parse_formats(formats) if formats is not None else None,
    )
    _check_questions(rec, questions, choices)
    folders = [p for p in inputs if Path(p).is_dir()]
    if folders and len(inputs) > 1:
        raise VideoVLMError("give either one folder or video files, not both: "
                            f"{folders[0]} is a folder")
    if folders and out_dir is None:
        raise VideoVLMError(f"{folders[0]} is a folder: add -o OUTDIR for its results")
    if formats is not None and out_dir is None:
        raise VideoVLMError("-f/--format needs an output folder: add -o DIR")
    if len(inputs) == 1 and not Path(inputs[0]).exists():  # fail before the model loads
        raise InputError(f"{inputs[0]}: no such file or folder")
    model = _load_model(model_id, device, dtype)
    if folders:
        assert out_dir is not None
        code = _run_folder(rec, Path(folders[0]), out_dir, model, questions, choices, resume,
                           quiet)
    else:
        code = _run_files(rec, list(inputs), out_dir, model, questions, choices, quiet)
    if code:
        sys.exit(code)


def _check_questions(rec: Any, questions: tuple[str, ...], choices: tuple[str, ...]) -> None:
    """Mismatches between a recipe's task and the questions given, before any model loads."""
    asks = rec.task in ("qa", "mcq")
    if asks and not questions:
        raise VideoVLMError(f"recipe {rec.name!r} ({rec.task}) answers questions: add -q QUESTION")
    if questions and not asks:
        raise VideoVLMError(f"recipe {rec.name!r} ({rec.task}) takes no questions: drop -q, or "
                            "run the qa or mcq recipe")
    if any(not q.strip() for q in questions):
        raise VideoVLMError("a question (-q) is empty: give the question's text")
    if rec.task == "mcq" and len(choices) < 2:
        raise VideoVLMError(f"recipe {rec.name!r} is multiple choice: give at least two "
                            "--choices")
    if choices and rec.task != "mcq":
        raise VideoVLMError(f"--choices needs a multiple-choice recipe; {rec.name!r} is "
                            f"{rec.task!r}: run mcq")


def _run_files(rec: Any, videos: list[str], out_dir: Path | None, model: Any,
               questions: tuple[str, ...], choices: tuple[str, ...], quiet: bool) -> int:
    from videovlm.api import run_recipe
    from videovlm.writers import write

    log = logging.getLogger("videovlm")
    failed = 0
    for video, stem in zip(_progress(videos, quiet, rec.name), _stems(videos), strict=True):
        try:
            result = run_recipe(rec, video, model=model, questions=list(questions) or None,
                                choices=list(choices) or None)
        except VideoVLMError as exc:
            if len(videos) == 1:
                raise
            failed += 1
            log.error("%s", exc if video in str(exc) else f"{video}: {exc}")
            continue
        if out_dir is not None:
            for path in write(result, out_dir, rec.outputs, stem):
                log.info("wrote %s", path)
        else:
            indent = 2 if len(videos) == 1 else None
            click.echo(json.dumps(result.to_dict(), indent=indent, ensure_ascii=False))
    if failed:
        log.error("%d of %d videos failed", failed, len(videos))
    return 1 if failed else 0


def _run_folder(rec: Any, root: Path, out_dir: Path, model: Any, questions: tuple[str, ...],
                choices: tuple[str, ...], resume: bool, quiet: bool) -> int:
    from videovlm.batch import Question, Questions, VideoStages, find_videos, run_local

    log = logging.getLogger("videovlm")
    found = find_videos(root, skip=[out_dir])
    for rel in found.not_video:
        log.warning("%s: not a video, skipped", rel)
    if not found.jobs:
        raise VideoVLMError(f"no videos found in {root}")
    asked = Questions(common=[Question(q, tuple(choices) or None) for q in questions]) \
        if questions else None
    stages = VideoStages(recipe=rec, image_size=model.image_size, questions=asked,
                         choice_recipe=rec if choices else None)
    settings = {"recipe": rec.to_dict(), "model": model.info(), "questions": list(questions),
                "choices": list(choices)}
    report = run_local(found.jobs, stages.cpu, lambda job, x: stages.model(model, job, x),
                       out_dir, formats=rec.outputs, resume=resume, settings=settings,
                       progress=not quiet)
    click.echo(report.summary(), err=True)
    return report.exit_code


@cli.command("pipelines")
@click.option("--show", "show", metavar="NAME", default=None,
              help="Print a recipe's TOML (copy it to start your own: --show describe > my.toml).")
@click.option("--json", "as_json", is_flag=True, help="List the recipes as JSON.")
def pipelines(show: str | None, as_json: bool) -> None:
    """List the built-in recipes, one line each (run one with `videovlm run NAME VIDEO`)."""
    from videovlm.pipelines import list_recipes, load_recipe

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
