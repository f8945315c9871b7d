"""What a run produced, with everything needed to reproduce it (the result JSON contract).

One :class:`Result` per video. Writers (``videovlm.write``) turn it into files; the batch engine
writes ``to_dict()`` as one JSON line. ``frames`` travel with the result for the HTML report and
contact sheet but are never serialised.

Dialogue (:mod:`videovlm.dialogue`): when the video had a dialogue source, each segment carries
``transcript``, the cues said during it as a list of ``{start_s, end_s, text}`` (seconds on the
frames' clock; a cue that spans a boundary is in both segments; ``[]``: nothing said), and the
result's ``dialogue`` says where it came from (``kind``: sidecar, file or stream; ``path``,
``stream``, ``language``, ``format``; ``found``: the subtitles it was chosen among) and how it
was used (``cues`` in all, ``in_prompt``: cues some prompt showed, ``over_budget``, ``trimmed``).
Without a source both are absent: ``transcript`` is left out of the segments and ``dialogue``
is null.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass, field
from typing import Any

from videovlm._version import __version__
from videovlm.dialogue import Cue

SCHEMA_VERSION = 1


@dataclass
class Segment:
    """A stretch of video and what happens in it. ``frames`` are the indices of its frames."""

    start_s: float
    end_s: float
    text: str
    frames: list[int] = field(default_factory=list)
    transcript: list[Cue] | None = None  # the dialogue said during it (None: no source)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"start_s": self.start_s, "end_s": self.end_s, "text": self.text,
                               "frames": self.frames}
        if self.transcript is not None:
            out["transcript"] = [c.to_dict() for c in self.transcript]
        return out


@dataclass
class Answer:
    """An answer to one question; ``choice`` is the chosen letter for multiple choice.

    ``choice_source`` says where the letter came from: ``text`` (the answer names it) or
    ``logits`` (the option letter scored highest at the answer's first token). ``choice_logits``
    is that logits letter whatever the text says, so an evaluation can score the text and the
    logits apart (:mod:`videovlm.scoring`). ``recipe`` and ``generation`` are set when one run
    answered questions under several recipes.
    """

    question: str
    answer: str
    choices: list[str] | None = None
    choice: str | None = None
    choice_source: str | None = None
    choice_logits: str | None = None
    recipe: str | None = None
    generation: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"question": self.question, "choices": self.choices,
                               "answer": self.answer, "choice": self.choice}
        if self.choices is not None:
            out["choice_source"] = self.choice_source
            out["choice_logits"] = self.choice_logits
        if self.recipe is not None:
            out.update(recipe=self.recipe, generation=self.generation)
        return out


@dataclass
class Window:
    """One window of ``find``: its span (frame times), the frames the model saw in it, the
    model's answer, and ``score``, P(yes) at the answer's first token, in [0, 1]."""

    start_s: float
    end_s: float
    score: float
    answer: str
    frames: list[int] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"start_s": self.start_s, "end_s": self.end_s, "score": round(self.score, 6),
                "answer": self.answer, "frames": self.frames}


@dataclass
class Range:
    """Consecutive windows whose scores reach the threshold, merged: from the first one's start
    to the last one's end, with the peak window's score and span, and ``best_frame``, the index
    of the frame on screen at the middle of the peak window (the report's picture)."""

    start_s: float
    end_s: float
    peak_score: float
    peak_start_s: float
    peak_end_s: float
    best_frame: int | None = None
    best_time_s: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"start_s": self.start_s, "end_s": self.end_s,
                "peak_score": round(self.peak_score, 6), "peak_start_s": self.peak_start_s,
                "peak_end_s": self.peak_end_s, "best_frame": self.best_frame,
                "best_time_s": self.best_time_s}


@dataclass
class Relevance:
    """What ``find`` found: the query, how the video was windowed and scored, every window's
    score in time order (the relevance curve, covering the video once), and the ranges."""

    query: str
    threshold: float
    window_s: float
    frames_per_window: int
    windows: list[Window] = field(default_factory=list)
    ranges: list[Range] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"query": self.query, "threshold": self.threshold, "window_s": self.window_s,
                "frames_per_window": self.frames_per_window,
                "windows": [w.to_dict() for w in self.windows],
                "ranges": [r.to_dict() for r in self.ranges]}


@dataclass
class Result:
    """One video's outcome: facts, how it was sampled and asked, and what the model said."""

    video: dict[str, Any]
    sampling: dict[str, Any] = field(default_factory=dict)
    model: dict[str, Any] | None = None
    prompt: dict[str, Any] | None = None
    generation: dict[str, Any] | None = None
    segments: list[Segment] = field(default_factory=list)
    summary: str | None = None
    answers: list[Answer] = field(default_factory=list)
    timing_s: dict[str, float] = field(default_factory=dict)
    cache: dict[str, int] | None = None  # frames found in / encoded for the frame cache
    error: dict[str, str] | None = None
    warnings: list[str] = field(default_factory=list)
    mode: str | None = None  # "timeline" | "scenes" | "ask" ...
    segments_parsed: bool = True  # False: the model's text had no times; one segment holds it all
    dialogue: dict[str, Any] | None = None  # its source and use (see the module docstring)
    relevance: Relevance | None = None  # find's windows and ranges (its segments are the ranges)
    created_at: str = field(
        default_factory=lambda: _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    )
    frames: list[Any] = field(default_factory=list, repr=False)  # decoded Frames; not serialised

    def to_dict(self) -> dict[str, Any]:
        """The JSON object of the output contract (frames' pixels are left out); ``relevance``
        only for ``find``."""
        out = {
            "schema_version": SCHEMA_VERSION,
            "videovlm_version": __version__,
            "created_at": self.created_at,
            "video": self.video,
            "sampling": self.sampling,
            "model": self.model,
            "prompt": self.prompt,
            "generation": self.generation,
            "mode": self.mode,
            "segments": [s.to_dict() for s in self.segments],
            "segments_parsed": self.segments_parsed,
            "summary": self.summary,
            "answers": [a.to_dict() for a in self.answers],
            "dialogue": self.dialogue,
            "timing_s": self.timing_s,
            "cache": self.cache,
            "warnings": self.warnings,
            "error": self.error,
        }
        if self.relevance is not None:
            out["relevance"] = self.relevance.to_dict()
        return out
