"""videovlm: understand video files with small open vision-language models.

The public API is what this module exports; everything else is private. Heavy libraries (torch,
transformers) are imported only by the functions that run the model, so sampling frames stays
light.
"""

from __future__ import annotations

__version__ = "0.1.0"

from videovlm.decode import Frame, decode, sample_frames
from videovlm.plan import FrameRef, plan
from videovlm.probe import VideoInfo, probe
from videovlm.result import Answer, Result, Segment

__all__ = [
    "Answer",
    "Frame",
    "FrameRef",
    "Result",
    "Segment",
    "VideoInfo",
    "__version__",
    "decode",
    "plan",
    "probe",
    "sample_frames",
]
