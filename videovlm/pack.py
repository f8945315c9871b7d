"""Packing frames and a task into one chat prompt, with its exact token count.

Layout: an optional intro, then for each frame ``Frame from MM:SS:`` followed by the image,
then a blank line and the task, all in one user turn of the checkpoint's chat template. Every
image expands to ``<fake_token_around_image><global-img>`` + ``tokens_per_image`` ``<image>``
tokens + ``<fake_token_around_image>``. This is SmolVLM2's video layout (transformers'
``processing_smolvlm``: intro, ``\\nFrame from MM:SS:`` + image per frame, ``\\n\\n``, the
user's text), which SmolVLM v1 reads just as well; the families differ only in the frame labels
past an hour (:func:`frame_time_text`) and in the intro their recipes give them. A frame whose
slice of the video has dialogue is followed by ``\n`` and that dialogue's text (the recipe's
``prompts.dialogue``, filled by :mod:`videovlm.run`; which cues go after which frame is
:func:`videovlm.dialogue.assign_cues`).

The count is never estimated: it is the length of the ``input_ids`` that will be fed, made by
the model's own tokenizer with the processor's image expansion (:meth:`Model.count_tokens`,
tested equal to the stock processor's), and :func:`frames_that_fit` counts candidate prompts the
same way, dialogue included. A prompt over the budget (the model's positions minus the tokens
reserved for the answer) raises :class:`OverBudget`; callers re-plan with fewer frames
(:func:`frames_that_fit`) or shorten the dialogue (:func:`words_that_fit`) and say so, never
truncate.

The prompt's ``head`` (what an encoded prefix holds, and what ``serve`` keeps it under) ends at
the last image, so it holds every frame's dialogue but the last one's, which opens the tail: a
head ending at a special token tokenizes the same alone as inside the whole prompt.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from videovlm.decode import Frame
from videovlm.errors import VideoVLMError
from videovlm.model import DEFAULT_MAX_NEW_TOKENS, IMAGE_TOKEN, Model

_SENTINEL = "\x00videovlm-task\x00"


class OverBudget(VideoVLMError):
    """The prompt needs more tokens than the model has room for (with the answer's share)."""

    def __init__(self, tokens: int, budget: int, tokens_per_frame: int) -> None:
        self.tokens = tokens
        self.budget = budget
        self.tokens_per_frame = tokens_per_frame
        super().__init__(
            f"the prompt needs {tokens} tokens but the model has room for {budget} "
            f"(~{tokens_per_frame} per frame): ask for fewer frames with -n"
        )


def timestamp_text(time_s: float) -> str:
    """``MM:SS``, ``H:MM:SS`` from one hour on: the time format of prompts and placeholders."""
    total = max(0, int(time_s))
    hours, rest = divmod(total, 3600)
    minutes, seconds = divmod(rest, 60)
    if hours:
        return f"{hours}:{minutes:02d}:{seconds:02d}"
    return f"{minutes:02d}:{seconds:02d}"


def frame_time_text(time_s: float, family: str) -> str:
    """A frame's label time for ``family``: SmolVLM2 was trained on ``MM:SS`` with the minutes
    never wrapped into hours (``75:03``, as its processor writes them); SmolVLM v1 reads
    :func:`timestamp_text`."""
    if family == "smolvlm":
        total = max(0, int(time_s))
        return f"{total // 60:02d}:{total % 60:02d}"
    return timestamp_text(time_s)


@dataclass
class Prompt:
    """A chat-templated prompt, its images, and how many tokens it costs (exactly)."""

    text: str
    images: list[np.ndarray]
    frames: list[tuple[int, float]]
    tokens: int
    budget: int
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS  # the answer's share of the context
    head: str = ""  # the text up to and including the last image (what answer() caches)
    suffix: tuple[str, str] = ("", "")  # the text around the task after ``head``

    @property
    def tail(self) -> str:
        """The text after ``head``: this prompt's task and the turn's end."""
        return self.text[len(self.head):]

    def tail_for(self, task: str) -> str:
        """The text after ``head`` with ``task`` in place of this prompt's task."""
        return self.suffix[0] + task + self.suffix[1]


Dialogue = Sequence[str | None]
"""Per frame, the text shown after it (its dialogue, final), or None."""


def _content(family: str, times: Sequence[float], intro: str | None,
             dialogue: Dialogue | None = None) -> list[dict[str, Any]]:
    content: list[dict[str, Any]] = []
    if intro:
        content.append({"type": "text", "text": intro})
    for i, t in enumerate(times):
        lead = "" if i == 0 and not intro else "\n"
        content.append({"type": "text",
                        "text": f"{lead}Frame from {frame_time_text(t, family)}:"})
        content.append({"type": "image"})
        if dialogue is not None and dialogue[i]:
            content.append({"type": "text", "text": f"\n{dialogue[i]}"})
    content.append({"type": "text", "text": ("\n\n" if times or intro else "") + _SENTINEL})
    return content


def _template(model: Model, times: Sequence[float], intro: str | None,
              dialogue: Dialogue | None = None) -> str:
    """The chat text with a placeholder for the task."""
    return model.render(_content(model.family, times, intro, dialogue))


def _per_frame(model: Model, tokens: int, empty: int, n: int) -> int:
    return -(-(tokens - empty) // n) if n else model.tokens_per_image + 3


def build_prompt(model: Model, frames: Sequence[Frame], images: Sequence[np.ndarray], task: str,
                 *, intro: str | None = None, dialogue: Dialogue | None = None,
                 max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS) -> Prompt:
    """The prompt for these frames and task, with its exact token count; OverBudget if too long.

    ``images`` are the prepared frames (same order as ``frames``); ``intro``, ``task`` and
    ``dialogue`` (per frame, the text after it, or None) are final strings. Pixels are not
    turned into tensors here: the model encodes each frame when (and only if) the frame cache
    does not already hold it (:meth:`Model.image_features`); :meth:`Model.encode` makes the
    whole-prompt inputs for callers that want them.
    """
    if len(frames) != len(images):
        raise ValueError(f"{len(frames)} frames but {len(images)} images")
    if not frames:
        raise ValueError("a prompt needs at least one frame")
    if dialogue is not None and len(dialogue) != len(frames):
        raise ValueError(f"{len(frames)} frames but dialogue for {len(dialogue)}")
    budget = model.context - max_new_tokens
    template = _template(model, [f.time_s for f in frames], intro, dialogue)
    text = template.replace(_SENTINEL, task)
    tokens = model.count_tokens(text)
    if tokens > budget:
        empty = model.count_tokens(_template(model, [], intro).replace(_SENTINEL, task))
        raise OverBudget(tokens, budget, _per_frame(model, tokens, empty, len(frames)))
    cut = template.rindex(IMAGE_TOKEN) + len(IMAGE_TOKEN)
    before, after = template[cut:].split(_SENTINEL)
    return Prompt(
        text=text,
        images=list(images),
        frames=[(f.index, f.time_s) for f in frames],
        tokens=tokens,
        budget=budget,
        max_new_tokens=max_new_tokens,
        head=template[:cut],
        suffix=(before, after),
    )


def text_tokens(model: Model, text: str) -> int:
    """Tokens of a text-only prompt (a summary) as one user turn of the chat template: what
    :meth:`Model.generate_text` feeds, counted the same way as every prompt with frames."""
    return model.count_tokens(model.render([{"type": "text", "text": text}]))


Layout = Callable[[int], tuple[Sequence[float], Dialogue | None]]
"""For a candidate frame count, the frames' times and their dialogue (what the selection rule
and the cue assignment would give)."""


def frames_that_fit(model: Model, n: int, *, task: str, intro: str | None,
                    max_new_tokens: int, duration_s: float | None = None,
                    layout: Layout | None = None) -> int:
    """The largest frame count <= ``n`` whose prompt fits the budget, counted exactly.

    Timestamps change a frame's cost by a token or so; with ``layout`` the candidate prompts
    are the ones a re-plan would make (the planned frames' times and their dialogue: no
    decoding needed), with ``duration_s`` they use the slice centres, otherwise the
    longest-reading ``MM:SS`` for the duration-less case. ``intro`` is used as given.
    """
    budget = model.context - max_new_tokens

    def fits(k: int) -> bool:
        dialogue = None
        if layout is not None and k:
            times, dialogue = layout(k)
        elif duration_s is not None and k:
            times = [(i + 0.5) * duration_s / k for i in range(k)]
        else:
            times = [59 * 60 + 59.0] * k
        text = _template(model, times, intro, dialogue).replace(_SENTINEL, task)
        return model.count_tokens(text) <= budget

    return _largest(max(0, n), fits)


def words_that_fit(model: Model, frames: Sequence[Frame], task: str, *, intro: str | None,
                   dialogue: Callable[[int], Dialogue], most: int,
                   max_new_tokens: int) -> int | None:
    """The most words of dialogue per frame (<= ``most``) with which these frames' prompt
    fits, counted exactly; None when it does not fit even without dialogue.

    ``dialogue(w)`` is the frames' dialogue cut to ``w`` words each (0: none).
    """
    budget = model.context - max_new_tokens
    times = [f.time_s for f in frames]

    def fits(w: int) -> bool:
        text = _template(model, times, intro, dialogue(w)).replace(_SENTINEL, task)
        return model.count_tokens(text) <= budget

    if not fits(0):
        return None
    return _largest(most, fits)


def _largest(n: int, fits: Callable[[int], bool]) -> int:
    """The largest ``k`` in ``0..n`` with ``fits(k)``, for a ``fits`` true up to some point
    (0 when none, unchecked): a binary search, ``log2(n)`` exact counts."""
    lo, hi = 0, n
    if fits(hi):
        return hi
    while hi - lo > 1:  # invariant: fits(lo) or lo == 0; not fits(hi)
        mid = (lo + hi) // 2
        if fits(mid):
            lo = mid
        else:
            hi = mid
    return lo
