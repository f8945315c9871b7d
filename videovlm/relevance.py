"""Finding when something is visible: every window scored by the model, then the ranges (``find``).

The video is cut into short windows (:func:`~videovlm.windows.window_spans`, boundaries on
frame starts); each window's frames are decoded when it is reached and the model is asked
whether the query is visible in them. The window's score is P(yes) at the answer's first token,
read from the same pass that writes the answer, by the rule multiple choice reads its letter
with (:class:`~videovlm.model.Reply`'s ``scores``, over the words of :data:`ANSWER_WORDS`).
Windows share nothing but the query, so ``windows_per_call`` of them are decoded, encoded and
then answered together in one batched call; nothing of a batch outlives it except its scores,
so memory stays one batch's whatever the video's length.

Then the windows whose score reaches the threshold are merged, adjacent ones into one range
(:func:`merge_ranges`, a pure function of the scores).
"""

from __future__ import annotations

from collections.abc import Sequence

from videovlm.decode import Frame
from videovlm.errors import VideoVLMError
from videovlm.model import Ask, Reply
from videovlm.pack import timestamp_text
from videovlm.result import Range, Window
from videovlm.run import ModelRun
from videovlm.windows import Span

ANSWER_WORDS: tuple[str, str] = ("yes", "no")
"""The answers a window's score is read from; the score is the first one's probability."""


def score_windows(run: ModelRun, spans: Sequence[Span], query: str) -> list[Window]:
    """Every window's score for ``query``, in time order: the per-window loop.

    Per batch of ``windows_per_call`` spans: each window on its own (:func:`_ask`: decode its
    frames, build and encode its prompt), then the batch's prompts answered together, then
    each answer read into its :class:`Window` (:func:`_window`).
    """
    per_call = int(run.recipe.windows["windows_per_call"])
    windows: list[Window] = []
    if run.on_start is not None:
        run.on_start(spans)
    for start in range(0, len(spans), per_call):
        batch = spans[start:start + per_call]
        asked = [_ask(run, span, query) for span in batch]
        replies = run.answer_together([ask for ask, _ in asked], per_call)
        windows += [_window(run, span, frames, reply) for span, (_, frames), (reply,)
                    in zip(batch, asked, replies, strict=True)]
        if run.on_window is not None:
            for i, span in enumerate(batch, start):
                run.on_window(i, span, {"segments": []})
    return windows


def _ask(run: ModelRun, span: Span, query: str) -> tuple[Ask, list[Frame]]:
    """One window's prompt, encoded: its frames (the selection rule inside the span), the
    recipe's query prompt, the prefix run through the model; the frames' pixels are dropped
    once encoded (the run records their times)."""
    inputs = run.window(span)
    (group,) = inputs.groups
    task = run.fill("query", len(group.frames), query=query, start=timestamp_text(span[0]),
                    end=timestamp_text(span[1]))
    prompt, frames = run.prompt(group, task, inputs=inputs, keep=False)
    return Ask(run.encode(prompt), (prompt.tail,), ANSWER_WORDS), frames


def _window(run: ModelRun, span: Span, frames: Sequence[Frame], reply: Reply) -> Window:
    scores = reply.scores or {}
    if set(scores) != set(ANSWER_WORDS):
        raise VideoVLMError(f"{run.model.id}'s tokenizer has no token that begins "
                            f"{' or '.join(w for w in ANSWER_WORDS if w not in scores)}: find "
                            "cannot score windows with this model")
    return Window(span[0], span[1], scores[ANSWER_WORDS[0]], reply.text,
                  [f.index for f in frames])


def merge_ranges(windows: Sequence[Window], threshold: float) -> list[Range]:
    """The ranges of ``windows`` (in time order) whose score is at least ``threshold``: each run
    of adjacent such windows (one ends where the next starts) becomes one range from the first
    one's start to the last one's end, with its peak window (the first of equal peaks)."""
    ranges: list[Range] = []
    last: Window | None = None  # the previous window, when it is inside the open range
    for w in windows:
        if w.score < threshold:
            last = None
            continue
        if last is not None and last.end_s == w.start_s:
            r = ranges[-1]
            r.end_s = w.end_s
            if w.score > r.peak_score:
                r.peak_score, r.peak_start_s, r.peak_end_s = w.score, w.start_s, w.end_s
        else:
            ranges.append(Range(w.start_s, w.end_s, w.score, w.start_s, w.end_s))
        last = w
    return ranges


def best_frames(run: ModelRun, ranges: Sequence[Range]) -> None:
    """Each range's picture: the frame on screen at the middle of its peak window, decoded
    alone now (the windows' frames are long gone) and carried in the result."""
    for r in ranges:
        (frame,) = run.window((r.peak_start_s, r.peak_end_s), 1).frames
        r.best_frame, r.best_time_s = frame.index, round(frame.time_s, 6)
        run.keep([frame])
