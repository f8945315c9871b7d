"""``videovlm eval``: score the model on a multiple-choice benchmark (Video-MME, CinePile...).

Only options in and a report out; reading the questions, answering and scoring live in
:mod:`videovlm.evaluate`. The questions file is checked whole before the model loads, and every
problem in it is said on its own line (exit 2, nothing written): a benchmark file with ten bad
lines is fixed in one pass, not ten runs. ``eval-compare`` reads two runs' outputs back
(:func:`videovlm.scoring.compare`).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from videovlm.cli import cli
from videovlm.cli.common import (
    backend_option,
    batch_size_option,
    dialogue_options,
    dialogue_overrides,
    load_model,
    model_options,
    output_option,
    quiet_option,
    resume_options,
    say_problems,
    setup_logging,
)
from videovlm.evaluate import QuestionsFileError, evaluate, load_eval_questions, missing_videos
from videovlm.scoring import compare, compare_text
from videovlm.tasks import DEFAULT_PROTOCOL, PROTOCOLS


@cli.command("eval")
@click.argument("questions_file", metavar="QUESTIONS.jsonl",
                type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--videos", required=True, metavar="DIR",
              type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Folder the questions' video paths are relative to.")
@output_option("Output folder: report.json, report.md, predictions.jsonl (and results.jsonl, "
               "batch.json for resuming).", required=True)
@click.option("--protocol", type=click.Choice(list(PROTOCOLS)), default=DEFAULT_PROTOCOL,
              show_default=True,
              help="Prompt protocol: " + "; ".join(f"{p.name}: {p.help} (recipe {p.recipe})"
                                                   for p in PROTOCOLS.values()) + ".")
@click.option("--limit", type=click.IntRange(min=1), default=None, metavar="N",
              help="Only the first N questions of the file.")
@click.option("--strict", is_flag=True,
              help="A missing video is an error before the model loads, and one that fails "
                   "to decode makes the exit code 1 (default: their questions are counted as "
                   "missing in the report).")
@resume_options("videos answered")
@click.option("--workers", type=click.IntRange(min=0), default=2, show_default=True,
              help="Background decode workers (0: decode and answer in turn).")
@batch_size_option
@backend_option
@dialogue_options
@quiet_option
@model_options
def eval_(questions_file: Path, videos: Path, out_dir: Path, protocol: str, limit: int | None,
          strict: bool, resume: bool | str, workers: int, batch_size: int, backend: str | None,
          dialogue: dict[str, Any], quiet: bool,
          model_id: str | None,
          device: str | None, dtype: str | None, n: int | None, no_cache: bool,
          quantize: str | None) -> None:
    """Answer every question of QUESTIONS.jsonl about its video and score the letters.

    Lines are {"video": path under DIR, "question", "choices": [...], "answer": letter or
    option text, "id"?, and the benchmark's own keys}. Each video is decoded and encoded once
    for all its questions. Writes OUTDIR/report.json and report.md (accuracy with a 95%
    interval clustered by video, per category and duration) and predictions.jsonl (one line per
    question), and prints the accuracy. A missing or undecodable video's questions are counted
    as missing. Exit code 0: done; 1: with --strict, some video failed; 2: a
    mistake, an unwritable OUTDIR or a full disk; 130/143: stopped by Ctrl-C/SIGTERM after the
    current video (the same command resumes).
    """
    setup_logging(quiet)
    dialogue = dialogue_overrides(dialogue, one_video=False)
    try:
        items = load_eval_questions(questions_file, videos, limit=limit, strict=strict)
    except QuestionsFileError as exc:
        say_problems(exc)
        sys.exit(exc.exit_code)
    missing = missing_videos(items, videos)
    if missing:
        k, q = len(missing), sum(missing.values())
        click.echo(f"videovlm: eval: {k} video{'s' if k != 1 else ''} not found in {videos} "
                   f"({q} question{'s' if q != 1 else ''}): counted as missing (--strict "
                   "refuses them)", err=True)
    # before anything is written
    model = load_model(model_id, device, dtype, quiet, no_cache, quantize)
    report = evaluate(items, videos, out_dir, model, protocol=protocol, n=n, backend=backend,
                      workers=workers, batch_size=batch_size, resume=resume,
                      progress=not quiet, dialogue=dialogue, strict=strict)
    if report.batch.interrupted:
        click.echo("videovlm: interrupted: run the same command again to resume", err=True)
    click.echo(f"videovlm: eval: {report.line()}", err=True)
    sys.exit(report.exit_code)


@cli.command("eval-compare")
@click.argument("run_a", metavar="A", type=click.Path(path_type=Path))
@click.argument("run_b", metavar="B", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the comparison as JSON.")
def eval_compare(run_a: Path, run_b: Path, as_json: bool) -> None:
    """Compare two eval runs (their -o folders) on the questions both answered.

    Prints each run's accuracy there, the difference B - A with a 95% paired interval
    clustered by video, and the questions that flipped (right in A and wrong in B, and the
    other way), for the reply's letter and for the logits letter.
    """
    cmp = compare(run_a, run_b)
    if as_json:
        click.echo(json.dumps(cmp, indent=2, ensure_ascii=False))
    else:
        compare_text(cmp, say=click.echo)
