"""videovlm: understand video files with small open vision-language models.

The public API is what this module exports; everything else is private. Heavy libraries (torch,
transformers) are imported only by the functions that run the model, so sampling frames stays
light.
"""

from __future__ import annotations

from videovlm._version import __version__
from videovlm.decode import Frame, decode, sample_frames
from videovlm.plan import FrameRef, plan
from videovlm.probe import VideoInfo, probe
from videovlm.result import Answer, Result, Segment

__all__ = [
    "Answer",
    "Frame",
    "FrameRef",
    "Model",
    "Result",
    "Segment",
    "VideoInfo",
    "__version__",
    "ask",
    "decode",
    "describe",
    "plan",
    "probe",
    "sample_frames",
]

# Loaded on first use, so ``import videovlm`` (and ``videovlm frames``) never imports torch.
_LAZY = {"Model": "videovlm.model", "describe": "videovlm.api", "ask": "videovlm.api"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'videovlm' has no attribute {name!r}")
