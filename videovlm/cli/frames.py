"""``videovlm frames``: sample frames by the selection rule and show, save or sheet them.

Light on purpose: this path imports PyAV, numpy and Pillow, never torch or transformers.
"""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import click
from PIL import Image
from tqdm import tqdm

from videovlm.cli import cli
from videovlm.decode import BACKEND_NAMES, Frame, decode_with_backend, isolation
from videovlm.errors import VideoVLMError
from videovlm.files import atomic_write, check_output_file, check_output_folder
from videovlm.plan import SEEK_MODES, plan
from videovlm.probe import probe
from videovlm.sheet import contact_sheet, sheet_format


@cli.command()
@click.argument("video")
@click.option("-n", "n", type=int, default=50, show_default=True,
              help="How many frames to take (fewer when the video has fewer distinct frames).")
@click.option("--backend", type=click.Choice(BACKEND_NAMES), default="auto", show_default=True,
              help="Decoder; auto takes the first installed one that decodes this file.")
@click.option("--seek", type=click.Choice(SEEK_MODES), default="exact", show_default=True,
              help="exact: the frame on screen at each slice centre; keyframe: the nearest "
                   "keyframe (much faster on long files).")
@click.option("--json", "as_json", is_flag=True,
              help="Print one JSON object with the video's facts and the sampled frames.")
@click.option("--save", "save_dir", type=click.Path(), metavar="DIR",
              help="Write each frame, upright, as DIR/frame_{index:06d}.png.")
@click.option("--sheet", "sheet_path", type=click.Path(), metavar="FILE",
              help="Write a contact sheet (.jpg or .png): thumbnails labelled with their times.")
@click.option("--quiet", is_flag=True, help="No progress bar and no notes on stderr.")
def frames(
    video: str,
    n: int,
    backend: str,
    seek: str,
    as_json: bool,
    save_dir: str | None,
    sheet_path: str | None,
    quiet: bool,
) -> None:
    """Sample N frames of VIDEO by the selection rule: centres of N equal slices."""
    if n < 1:
        raise VideoVLMError(f"-n must be at least 1, got {n}")
    if sheet_path:
        sheet_format(sheet_path)  # refuse a bad name before any work
        check_output_file(sheet_path)
    if save_dir:
        check_output_folder(save_dir)
    isolation.warm_up()  # the decoding process starts while the file is probed
    info = probe(video)
    refs = plan(info, n, seek=seek)  # type: ignore[arg-type]
    with _progress(len(refs), quiet) as bar:
        got, used = decode_with_backend(info, refs, backend, on_frame=lambda _f: bar.update(1))
    if save_dir:
        _save_pngs(got, Path(save_dir))
    if sheet_path:
        contact_sheet(got, sheet_path)
    sampling = {
        "backend": used,
        "requested": n,
        "seek": seek,
        "frames": [{"index": f.index, "time_s": round(f.time_s, 6)} for f in got],
    }
    if not quiet:
        for warning in info.warnings:
            click.echo(f"videovlm: warning: {warning}", err=True)
    if as_json:
        click.echo(json.dumps({"video": info.to_dict(), "sampling": sampling}, ensure_ascii=False))
        return
    click.echo(
        f"{info.path}: {info.width}x{info.height} {info.codec}, {info.duration_s:.3f} s, "
        f"{info.frame_count} frames ({info.fps:.3f} fps); {len(got)} of {n} requested, "
        f"backend {used}, seek {seek}"
    )
    for f in got:
        click.echo(f"{f.index:8d}  {f.time_s:12.6f} s")
    if quiet:
        return
    if save_dir:
        click.echo(f"saved {len(got)} frames to {save_dir}", err=True)
    if sheet_path:
        click.echo(f"contact sheet: {sheet_path}", err=True)


def _progress(total: int, quiet: bool):
    """A progress bar on stderr when a person is watching it, else a silent counter."""
    return tqdm(total=total, unit="frame", desc="decoding", file=sys.stderr, leave=False,
                disable=quiet or not sys.stderr.isatty())


def _save_pngs(frames: list[Frame], folder: Path) -> None:
    """Each frame as ``frame_{index:06d}.png``, each file written whole or not at all."""
    folder.mkdir(parents=True, exist_ok=True)
    for f in frames:
        buf = io.BytesIO()
        Image.fromarray(f.image).save(buf, format="PNG")
        atomic_write(folder / f"frame_{f.index:06d}.png", buf.getvalue())
