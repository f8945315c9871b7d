"""Decoding planned frames, behind one small backend interface.

Every backend returns, for the same plan, the same frames: upright RGB uint8 arrays at decoded
resolution, each with its index in presentation order and its real presentation time. A backend
that cannot guarantee that for a file refuses with a BackendError instead of guessing.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from videovlm.errors import BackendError
from videovlm.plan import FrameRef
from videovlm.probe import VideoInfo


@dataclass(frozen=True, eq=False)
class Frame:
    """A decoded frame that never travels without its place and time in the video."""

    index: int
    time_s: float
    image: np.ndarray  # H x W x 3, uint8, RGB, upright


class Backend(Protocol):
    """What a decoder must do: decode exactly these frames of this file."""

    name: str

    def decode(self, info: VideoInfo, refs: Sequence[FrameRef]) -> list[Frame]: ...


# name -> module implementing ``make() -> Backend`` (imported lazily: a missing library is simply
# an absent backend). Order is the ``auto`` preference.
_REGISTRY: dict[str, str] = {
    "av": "videovlm.decode._av",
    "decord": "videovlm.decode._decord",
    "opencv": "videovlm.decode._opencv",
    "torchcodec": "videovlm.decode._torchcodec",
}
BACKEND_NAMES: tuple[str, ...] = ("auto", *_REGISTRY)
