"""``videovlm eval-convert``: a benchmark's published question file as a questions file for
``videovlm eval``.

Only options in and one line out; reading the tables and mapping their columns live in
:mod:`videovlm.convert`. A source that is not the benchmark's table is one line and exit 2;
rows that do not convert are each said on their own line (exit 2); either way nothing is
written.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from videovlm.cli import cli
from videovlm.cli.common import say_problems
from videovlm.convert import BENCHMARKS, SUBTITLE_FIELD, convert
from videovlm.questions import QuestionsFileError
from videovlm.tasks import VIDEOMME


@cli.command("eval-convert")
@click.argument("benchmark", type=click.Choice(list(BENCHMARKS)))
@click.argument("src", metavar="SRC", type=click.Path(path_type=Path))
@click.option("-o", "--output", "out", required=True, metavar="QUESTIONS.jsonl",
              type=click.Path(dir_okay=False, path_type=Path),
              help="The questions file to write (JSON Lines, for videovlm eval).")
@click.option("--ext", default=".mp4", show_default=True, metavar="EXT",
              help="The videos' file extension: each video is <benchmark id><EXT>.")
@click.option("--split", default=None, metavar="NAME",
              help="Only this split's shards (test, train...) of a folder that holds several.")
@click.option("--subtitle-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              metavar="DIR",
              help=f"Video-MME: the folder of <videoID>.srt files (subtitle.zip); each "
                   f"question whose video has one gets it as {SUBTITLE_FIELD!r}, read by "
                   "--protocol videomme_subtitles.")
def eval_convert(benchmark: str, src: Path, out: Path, ext: str, split: str | None,
                 subtitle_dir: Path | None) -> None:
    """Convert BENCHMARK's question table SRC (a parquet / JSON / JSON Lines file, or a folder
    of shards) into QUESTIONS.jsonl.

    Each line gets video (the benchmark's video id + EXT), question, choices, answer (a
    letter) and id, and keeps the benchmark's other columns (categories, duration, subtitles...)
    under their own names.
    """
    if subtitle_dir is not None and benchmark != VIDEOMME:
        raise click.UsageError("--subtitle-dir is for videomme (CinePile's subtitles are in "
                               "its table)")
    try:
        done = convert(benchmark, src, out, ext=ext, split=split, subtitle_dir=subtitle_dir)
    except QuestionsFileError as exc:
        say_problems(exc)
        sys.exit(exc.exit_code)
    subs = f", {done.subtitles} with a subtitle file" if subtitle_dir is not None else ""
    click.echo(f"videovlm: eval-convert: {done.questions} questions about {done.videos} videos"
               f"{subs} -> {done.path}", err=True)
