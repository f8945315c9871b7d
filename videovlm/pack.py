"""Packing frames and a task into one chat prompt, with its exact token count.

Layout (SmolVLM2's video format, which SmolVLM v1 reads just as well): an optional intro, then
for each frame ``Frame from MM:SS:`` followed by the image, then a blank line and the task, all in
one user turn of the checkpoint's chat template. Every image expands to ``<fake_token_around_image>
<global-img>`` + ``tokens_per_image`` ``<image>`` tokens + ``<fake_token_around_image>``.

The count is never estimated: it is the length of the ``input_ids`` that will be fed, made by
the model's own tokenizer with the processor's image expansion (tests check it equals the stock
processor's), and :func:`frames_that_fit` counts candidate prompts the same way. A prompt over
the budget (the model's positions minus the tokens reserved for the answer) raises
:class:`OverBudget`; callers re-plan with fewer frames and say so, never truncate.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from videovlm.decode import Frame
from videovlm.errors import VideoVLMError

if TYPE_CHECKING:
    from videovlm.model import Model

_SENTINEL = "\x00videovlm-task\x00"
IMAGE_TOKEN = "<image>"


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
    """``MM:SS`` (the format SmolVLM2 was trained on), ``H:MM:SS`` from one hour on."""
    total = max(0, int(time_s))
    hours, rest = divmod(total, 3600)
    minutes, seconds = divmod(rest, 60)
    if hours:
        return f"{hours}:{minutes:02d}:{seconds:02d}"
    return f"{minutes:02d}:{seconds:02d}"


@dataclass
class Prompt:
    """A chat-templated prompt, its images, and how many tokens it costs (exactly)."""

    text: str
    images: list[np.ndarray]
    frames: list[tuple[int, float]]
    tokens: int
    budget: int
    max_new_tokens: int = 512
    head: str = ""  # the text up to and including the last image (what answer() caches)
    suffix: tuple[str, str] = ("", "")  # the text around the task after ``head``
    inputs: Any = field(default=None, repr=False, compare=False)  # the processor's output

    def tail_for(self, task: str) -> str:
        """The text after ``head`` with ``task`` in place of this prompt's task."""
        return self.suffix[0] + task + self.suffix[1]


def _content(times: Sequence[float], intro: str | None) -> list[dict[str, Any]]:
    content: list[dict[str, Any]] = []
    if intro:
        content.append({"type": "text", "text": intro})
    for i, t in enumerate(times):
        lead = "" if i == 0 and not intro else "\n"
        content.append({"type": "text", "text": f"{lead}Frame from {timestamp_text(t)}:"})
        content.append({"type": "image"})
    content.append({"type": "text", "text": ("\n\n" if times or intro else "") + _SENTINEL})
    return content


def _template(model: Model, times: Sequence[float], intro: str | None) -> str:
    """The chat text with a placeholder for the task."""
    return model.render(_content(times, intro))


def _expanded(model: Model, text: str) -> str:
    """``text`` with each image placeholder expanded the way the processor expands a whole image."""
    proc = model.processor
    image = (proc.fake_image_token + proc.global_image_tag
             + proc.image_token * model.tokens_per_image + proc.fake_image_token)
    return text.replace(IMAGE_TOKEN, image)


def count_tokens(model: Model, text: str) -> int:
    """Tokens of a chat text whose images are still ``<image>`` placeholders (no pixels needed)."""
    return len(model.tokenizer(_expanded(model, text), verbose=False)["input_ids"])


def encode(model: Model, text: str, images: Sequence[np.ndarray]) -> dict[str, Any]:
    """The model inputs for prepared images: what the processor gives, without its overhead.

    With ``do_resize=False, do_image_splitting=False`` the processor only expands each
    ``<image>``, tokenizes, rescales, normalises and pads equal-sized images, one image at a time
    in float64 numpy (0.75 s for 50 frames here). We do the same in one vectorised pass with the
    checkpoint's own settings; tests check the result equals :func:`encode_with_processor`.
    """
    import torch

    size = model.image_size
    for image in images:
        if image.shape != (size, size, 3) or image.dtype != np.uint8:
            raise ValueError(
                f"images must be prepared to {size}x{size}x3 uint8 (videovlm.prepare), "
                f"got {image.shape} {image.dtype}"
            )
    if text.count(IMAGE_TOKEN) != len(images):
        raise ValueError(f"{text.count(IMAGE_TOKEN)} image placeholders but {len(images)} images")
    encoded = model.tokenizer([_expanded(model, text)], return_tensors="pt", verbose=False)
    ip = model.processor.image_processor
    # rescale then normalise, (x * r - mean) / std, folded into one multiply-add per channel
    scale = float(ip.rescale_factor) if ip.do_rescale else 1.0
    mean = np.asarray(ip.image_mean if ip.do_normalize else [0.0] * 3, dtype=np.float64)
    std = np.asarray(ip.image_std if ip.do_normalize else [1.0] * 3, dtype=np.float64)
    pixels = torch.from_numpy(np.stack(images)).to(torch.float32)  # N, H, W, 3
    pixels.mul_(torch.from_numpy(scale / std).float()).add_(torch.from_numpy(-mean / std).float())
    return {
        "input_ids": encoded["input_ids"],
        "attention_mask": encoded["attention_mask"],
        "pixel_values": pixels.permute(0, 3, 1, 2).unsqueeze(0).contiguous(),
    }


def encode_with_processor(model: Model, text: str, images: Sequence[np.ndarray]) -> Any:
    """The stock processor's inputs for prepared images (the reference :func:`encode` matches)."""
    return model.processor(
        text=[text], images=[list(images)], return_tensors="pt",
        do_resize=False, do_image_splitting=False,
    )


def _per_frame(model: Model, tokens: int, empty: int, n: int) -> int:
    return -(-(tokens - empty) // n) if n else model.tokens_per_image + 3


def build_prompt(model: Model, frames: Sequence[Frame], images: Sequence[np.ndarray], task: str,
                 *, intro: str | None = None, max_new_tokens: int = 512) -> Prompt:
    """The prompt for these frames and task, with its exact token count; OverBudget if too long.

    ``images`` are the prepared frames (same order as ``frames``); ``intro`` and ``task`` are
    final strings. The model inputs are made here, once, and travel in the prompt.
    """
    if len(frames) != len(images):
        raise ValueError(f"{len(frames)} frames but {len(images)} images")
    if not frames:
        raise ValueError("a prompt needs at least one frame")
    budget = model.context - max_new_tokens
    template = _template(model, [f.time_s for f in frames], intro)
    text = template.replace(_SENTINEL, task)
    tokens = count_tokens(model, text)
    if tokens > budget:
        empty = count_tokens(model, _template(model, [], intro).replace(_SENTINEL, task))
        raise OverBudget(tokens, budget, _per_frame(model, tokens, empty, len(frames)))
    inputs = encode(model, text, images)
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
        inputs=inputs,
    )


def frames_that_fit(model: Model, n: int, *, task: str, intro: str | None,
                    max_new_tokens: int, duration_s: float | None = None) -> int:
    """The largest frame count <= ``n`` whose prompt fits the budget, counted exactly.

    Timestamps change a frame's cost by a token or so; with ``duration_s`` the candidate
    prompts use the times the selection rule will ask for (slice centres), otherwise the
    longest-reading ``MM:SS`` for the duration-less case. ``intro`` is used as given.
    """
    budget = model.context - max_new_tokens

    def fits(k: int) -> bool:
        if duration_s is not None and k:
            times = [(i + 0.5) * duration_s / k for i in range(k)]
        else:
            times = [59 * 60 + 59.0] * k
        text = _template(model, times, intro).replace(_SENTINEL, task)
        return count_tokens(model, text) <= budget

    lo, hi = 0, max(0, n)
    if fits(hi):
        return hi
    while hi - lo > 1:  # invariant: fits(lo) or lo == 0; not fits(hi)
        mid = (lo + hi) // 2
        if fits(mid):
            lo = mid
        else:
            hi = mid
    return lo
