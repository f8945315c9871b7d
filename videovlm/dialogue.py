"""What is said in a video: timed lines of dialogue, from subtitles or speech recognition.

SmolVLM sees frames only; the benchmarks its numbers come from give it the dialogue too. Both
sources of dialogue (a subtitle file or stream, and a speech-recognition transcript) become the
same thing, a list of :class:`Cue` on the frames' clock (seconds from the video's first frame),
so the prompt, the results and the reports treat them alike.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Cue:
    """One line of dialogue shown or spoken from ``start_s`` to ``end_s`` (seconds from the
    video's first frame, the clock of :class:`~videovlm.plan.FrameRef.time_s`)."""

    start_s: float
    end_s: float
    text: str
