"""Contact sheets: the sampled frames in a grid, each labelled with its time.

The picture a user looks at to trust the sampler, so every thumbnail carries the frame's real
presentation time and index (not ``index / fps``), and the file appears complete or not at all.
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Sequence
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from videovlm.decode import Frame
from videovlm.errors import VideoVLMError
from videovlm.files import atomic_write, format_time, make_folder

_MAX_CELL_ASPECT = 4.0  # height / width of a sheet cell, at most

SHEET_FORMATS: dict[str, str] = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG"}


def sheet_format(path: str | os.PathLike[str]) -> str:
    """The image format for ``path``'s extension; a VideoVLMError names the ones we write.

    Separate from :func:`contact_sheet` so the CLI can refuse a bad name before decoding.
    """
    ext = Path(path).suffix.lower()
    if ext not in SHEET_FORMATS:
        raise VideoVLMError(
            f"--sheet {os.fspath(path)}: unknown picture type {ext or '(none)'!r}; "
            f"use a name ending in {', '.join(SHEET_FORMATS)}"
        )
    return SHEET_FORMATS[ext]


def contact_sheet(
    frames: Sequence[Frame],
    path: str | os.PathLike[str],
    *,
    thumb_width: int = 240,
    columns: int | None = None,
    quality: int = 90,
) -> Path:
    """Write ``frames`` as a labelled grid to ``path`` (JPEG or PNG by extension); return it.

    Written whole or not at all (:func:`videovlm.files.atomic_write`), so an interrupted run
    leaves no half picture.
    """
    data = render_sheet(frames, sheet_format(path), thumb_width=thumb_width, columns=columns,
                        quality=quality)
    path = Path(path)
    make_folder(path.parent)
    return atomic_write(path, data)


def render_sheet(
    frames: Sequence[Frame],
    fmt: str = "JPEG",
    *,
    thumb_width: int = 240,
    columns: int | None = None,
    quality: int = 90,
) -> bytes:
    """``frames`` as a labelled grid, encoded as ``fmt`` ("JPEG" or "PNG").

    Thumbnails keep each frame's aspect ratio inside a cell sized for the largest frame; the
    grid is about as wide as tall unless ``columns`` is given.
    """
    if not frames:
        raise VideoVLMError("no frames to put on a contact sheet")
    thumb_width = max(16, int(thumb_width))
    # a cell no taller than 4:1 (portrait phone video is 16:9): a 16x8192 picture, which any
    # decoder allows, would otherwise make each cell 500 thumbnails tall (GBs of sheet); the
    # thumbnail still keeps its aspect inside the cell
    aspect = min(_MAX_CELL_ASPECT, max(f.image.shape[0] / f.image.shape[1] for f in frames))
    cell_w, cell_h = thumb_width, max(1, round(thumb_width * aspect))
    n = len(frames)
    cols = columns or max(1, math.ceil(math.sqrt(n * cell_h / cell_w)))
    cols = min(cols, n)
    rows = math.ceil(n / cols)
    font_px = max(10, thumb_width // 14)
    font = ImageFont.load_default(size=font_px)
    label_h = font_px + 8
    pad = 4
    sheet = Image.new(
        "RGB", (cols * (cell_w + pad) + pad, rows * (cell_h + label_h + pad) + pad), (24, 24, 24)
    )
    draw = ImageDraw.Draw(sheet)
    for k, frame in enumerate(frames):
        r, c = divmod(k, cols)
        x0, y0 = pad + c * (cell_w + pad), pad + r * (cell_h + label_h + pad)
        img = Image.fromarray(frame.image)
        img.thumbnail((cell_w, cell_h), Image.Resampling.LANCZOS)
        sheet.paste(img, (x0 + (cell_w - img.width) // 2, y0 + (cell_h - img.height) // 2))
        label = f"{format_time(frame.time_s, 3)}  #{frame.index}"
        draw.text((x0 + 3, y0 + cell_h + 4), label, fill=(240, 240, 240), font=font)
    buf = io.BytesIO()
    sheet.save(buf, format=fmt, **({"quality": quality} if fmt == "JPEG" else {}))
    return buf.getvalue()
