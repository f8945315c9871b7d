"""What a video file is: its facts as the header claims them and as its packets show them.

The header and the content disagree on real files (edit lists, variable frame rate, truncated
files), so both are kept; the selection rule works on the content's timeline.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

import numpy as np


@dataclass(frozen=True, eq=False)
class Timeline:
    """Every frame's presentation time, in presentation order, from one demux pass (no decoding).

    ``pts`` are integers in ``time_base`` units, sorted ascending; ``keyframe[i]`` says whether
    frame ``i`` can be decoded without earlier frames; ``end_pts`` is the last frame's time plus
    its display duration, so ``end_pts - pts[0]`` is the duration the selection rule slices.
    """

    pts: np.ndarray  # int64, sorted
    keyframe: np.ndarray  # bool, same length
    end_pts: int
    time_base: Fraction

    def time_s(self, i: int) -> float:
        """Seconds from the first frame to frame ``i``."""
        return float((int(self.pts[i]) - int(self.pts[0])) * self.time_base)


@dataclass(frozen=True, eq=False)
class VideoInfo:
    """Facts about one video stream. Sizes are display sizes, after rotation."""

    path: str
    stream_index: int
    codec: str
    width: int
    height: int
    rotation: int  # degrees clockwise to apply to decoded frames to make them upright: 0/90/180/270
    fps: float  # average, from the content (frames / duration)
    frame_count: int  # from the content (packets with a timestamp)
    duration_s: float  # from the content: last frame's time + its display duration
    start_s: float  # presentation time of the first frame in the container, seconds
    has_audio: bool
    frame_count_header: int | None  # what the header claims (None when it claims nothing)
    duration_s_header: float | None
    fps_header: float | None
    timeline: Timeline

    def to_dict(self) -> dict:
        """The ``video`` object of the result JSON."""
        return {
            "path": self.path,
            "duration_s": round(self.duration_s, 6),
            "fps": round(self.fps, 6),
            "frame_count": self.frame_count,
            "frame_count_header": self.frame_count_header,
            "duration_s_header": (
                None if self.duration_s_header is None else round(self.duration_s_header, 6)
            ),
            "width": self.width,
            "height": self.height,
            "rotation": self.rotation,
            "codec": self.codec,
            "start_s": round(self.start_s, 6),
            "has_audio": self.has_audio,
            "stream_index": self.stream_index,
        }


def probe(path: str) -> VideoInfo:
    """Read a video's facts and its frame timeline; raise InputError for anything unreadable."""
    raise NotImplementedError("implemented by the sampler work (issue 2)")
