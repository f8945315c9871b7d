"""videovlm: understand video files with small open vision-language models.

The public API is what this module exports; everything else is private.

Lazy imports, in one place: these libraries are imported only inside the functions that need
them, so ``import videovlm`` and ``videovlm frames`` never load a deep-learning stack and a
missing optional one is simply absent: ``torch``, ``transformers`` and ``huggingface_hub`` (the
model stage), ``av``, ``cv2``, ``decord`` and ``torchcodec`` (each decoding backend, when it
runs), ``scenedetect`` (scene mode), ``ray`` (the Ray engine). ``Model``, ``describe``,
``ask``, ``SpeechModel`` and ``transcribe`` below load on first use for the same reason, and
``Answer``, ``Result`` and ``Segment`` so that the decoding child process imports no more than
decoding needs (no subtitle or language libraries). Every
other import, every videovlm module included, sits at the top of its file. The map of the
modules is ``docs/ARCHITECTURE.md``.
"""

from __future__ import annotations

from videovlm._version import __version__
from videovlm.decode import Frame, decode, sample_frames
from videovlm.plan import FrameRef, plan
from videovlm.probe import VideoInfo, probe

__all__ = [
    "Answer",
    "Frame",
    "FrameRef",
    "Model",
    "Result",
    "Segment",
    "SpeechModel",
    "VideoInfo",
    "__version__",
    "ask",
    "decode",
    "describe",
    "find",
    "plan",
    "probe",
    "sample_frames",
    "transcribe",
]

# Loaded on first use, so ``import videovlm`` (and ``videovlm frames``) never imports torch, and
# the decoding child process (``python -m videovlm.decode``) imports no more than decoding needs.
_LAZY = {"Model": "videovlm.model", "describe": "videovlm.api", "ask": "videovlm.api",
         "find": "videovlm.api", "Answer": "videovlm.result", "Result": "videovlm.result",
         "Segment": "videovlm.result",
         "SpeechModel": "videovlm.speech", "transcribe": "videovlm.speech"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'videovlm' has no attribute {name!r}")
