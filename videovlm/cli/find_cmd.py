"""``videovlm find VIDEO "QUERY"``: when is something visible, as time ranges.

Options in, one library call (:func:`videovlm.api.find`), results out: the ranges as lines a
person reads on stdout (or the result JSON with ``--json``), files with ``-o``. Bad options and
an empty query fail before the model loads; logs stay on stderr.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import click

from videovlm.api import find as find_api
from videovlm.api import find_recipe
from videovlm.cli import cli
from videovlm.cli.common import (
    Watch,
    backend_option,
    formats_option,
    load_model,
    model_options_for,
    output_formats,
    output_option,
    quiet_option,
    recipe_option,
    setup_logging,
)
from videovlm.errors import VideoVLMError
from videovlm.files import format_time
from videovlm.pipelines import load_recipe
from videovlm.probe import probe
from videovlm.result import Result
from videovlm.tasks import FIND_TASK, check_query, get
from videovlm.writers import write

_DEFAULT = load_recipe(get(FIND_TASK).recipe)  # its values are the options' shown defaults


def ranges_text(result: Result) -> list[str]:
    """The ranges as lines for a person (``00:12.0 – 00:31.0  peak 93% at ...``), or one line
    saying that no range reached the threshold, with the best window's score."""
    found = result.relevance
    if found is None:
        return []
    if not found.ranges:
        best = max(found.windows, key=lambda w: w.score, default=None)
        where = (f": the highest window scored {best.score:.2f} ({format_time(best.start_s)} – "
                 f"{format_time(best.end_s)}); lower --threshold to see weaker matches"
                 if best else "")
        return [f"no range above the threshold {found.threshold:.2f} for "
                f"{found.query!r}{where}"]
    return [f"{format_time(r.start_s)} – {format_time(r.end_s)}  peak {r.peak_score:.2f} at "
            f"{format_time(r.peak_start_s)} – {format_time(r.peak_end_s)}"
            for r in found.ranges]


@cli.command()
@click.argument("video")
@click.argument("query")
@output_option("Write DIR/<video name>.<format> files (json, srt, vtt, html) as well.")
@formats_option
@click.option("--window", "window_s", type=float, default=None, metavar="SECONDS",
              help=f"Length of each scored window [default: the recipe's, "
                   f"{_DEFAULT.windows['length_s']:g}].")
@click.option("--threshold", type=float, default=None, metavar="P",
              help="A window whose score (P(yes), 0..1) reaches this is part of a range "
                   f"[default: the recipe's, {_DEFAULT.windows['score_threshold']:g}].")
@click.option("--batch-size", "per_call", type=click.IntRange(min=1), default=None,
              metavar="N", help="Windows answered together in one batched call [default: the "
                                f"recipe's, {_DEFAULT.windows['windows_per_call']}; an int8 "
                                "model answers one at a time].")
@click.option("--json", "as_json", is_flag=True, help="Print the result JSON instead of lines.")
@backend_option
@recipe_option(get(FIND_TASK).recipe)
@quiet_option
@model_options_for(f"Frames per window [default: the recipe's, {_DEFAULT.sampling['n']}].")
def find(video: str, query: str, out_dir: Path | None, formats: str | None,
         window_s: float | None, threshold: float | None, per_call: int | None, as_json: bool,
         backend: str | None, recipe: str | None, quiet: bool, model_id: str | None,
         device: str | None, dtype: str | None, n: int | None, no_cache: bool,
         quantize: str | None) -> None:
    """When is QUERY visible in VIDEO: every short window scored, the high ones as ranges.

    Each window's score is the model's P(yes) for "Is QUERY visible in these frames?", read
    from its answer's first token. Prints one line per range (start – end, peak score).
    """
    setup_logging(quiet)
    text = check_query(None, query)
    if window_s is not None and not window_s > 0:
        raise VideoVLMError(f"--window must be a positive number of seconds, got {window_s:g}: "
                            "e.g. --window 10")
    if threshold is not None and not 0 <= threshold <= 1:
        raise VideoVLMError(f"--threshold is a probability, between 0 and 1, got "
                            f"{threshold:g}: e.g. --threshold 0.5")
    rec = find_recipe(recipe, window_s=window_s, threshold=threshold, per_call=per_call)
    names = output_formats(formats, out_dir, rec.outputs)
    probe(video)  # an unreadable video fails now, not after the model loaded
    model = load_model(model_id, device, dtype, quiet, no_cache, quantize)
    check_query(model, text)
    bar = Watch(video, Path(), quiet, stream=False, several=False)  # windows done / duration
    result = find_api(video, text, model=model, n=n, backend=backend, recipe=rec,
                      on_start=bar.start, on_window=bar.window)
    bar.close()
    if out_dir is not None:
        for path in write(result, out_dir, names, Path(video).stem or "video"):
            logging.getLogger("videovlm").info("wrote %s", path)
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2, ensure_ascii=False))
    else:
        for line in ranges_text(result):
            click.echo(line)
