"""Resizing decoded frames to the model's single-image size, ourselves and once.

The stock SmolVLM processor first upscales every frame to 4x the model size (1536 or 2048 px)
with LANCZOS and then, without splitting, resizes it back down: 3.4 s for 50 frames on two cores
to produce what one downscale gives. We resize each frame straight to ``size`` x ``size`` and call
the processor with ``do_resize=False, do_image_splitting=False`` (it then only rescales,
normalises and stacks).

``fit`` says what happens to the aspect ratio: ``squash`` (default) stretches the whole frame to
the square, which is what the processor does without splitting and so what the model saw in
training; ``crop`` keeps the centre square; ``pad`` letterboxes the whole frame on black.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, get_args

import numpy as np
from PIL import Image

from videovlm.decode import Frame

Fit = Literal["squash", "crop", "pad"]
FITS: tuple[str, ...] = get_args(Fit)

# Shrinking (the usual case: decoded frames are larger than 384/512 px) averages the input pixels
# each output pixel covers (PIL's BOX filter, OpenCV's INTER_AREA): no aliasing, and a third of
# LANCZOS's cost, which keeps 50 frames well inside the 0.5 s budget of this stage. Enlarging a
# small frame uses LANCZOS, the checkpoints' own filter (preprocessor_config ``resample`` 1).


def _resize(img: Image.Image, width: int, height: int) -> Image.Image:
    if img.size == (width, height):
        return img
    shrink = width <= img.width and height <= img.height
    return img.resize((width, height), Image.Resampling.BOX if shrink else Image.Resampling.LANCZOS)


def prepare_image(image: np.ndarray, size: int, fit: Fit = "squash") -> np.ndarray:
    """One RGB uint8 image (H x W x 3) as a ``size`` x ``size`` RGB uint8 array."""
    if fit not in FITS:
        raise ValueError(f"unknown fit {fit!r}; choose one of {', '.join(FITS)}")
    if size <= 0:
        raise ValueError(f"size must be positive, got {size}")
    img = Image.fromarray(np.ascontiguousarray(image[..., :3]))
    w, h = img.size
    if fit == "squash":
        out = _resize(img, size, size)
    elif fit == "crop":
        side = min(w, h)
        left, top = (w - side) // 2, (h - side) // 2
        out = _resize(img.crop((left, top, left + side, top + side)), size, size)
    else:
        scale = size / max(w, h)
        nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
        out = Image.new("RGB", (size, size))
        out.paste(_resize(img, nw, nh), ((size - nw) // 2, (size - nh) // 2))
    return np.asarray(out, dtype=np.uint8)


def prepare(frames: Sequence[Frame], size: int, fit: Fit = "squash") -> list[np.ndarray]:
    """Each frame as a ``size`` x ``size`` RGB uint8 image, ready for the processor."""
    return [prepare_image(frame.image, size, fit) for frame in frames]
