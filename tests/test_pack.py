"""Prompts: the right layout, token counts equal to the processor's, and the budget enforced."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from videovlm.decode import Frame
from videovlm.model import Model
from videovlm.pack import OverBudget, build_prompt, frames_that_fit, timestamp_text
from videovlm.prepare import prepare
from videovlm.testing import make_checkpoint

INTRO = "You are provided the following series of frames from a 0:01:00 [H:MM:SS] video.\n"


@pytest.mark.parametrize(("t", "text"), [
    (0.0, "00:00"), (4.999, "00:04"), (61.5, "01:01"), (599.0, "09:59"), (3599.9, "59:59"),
    (3600.0, "1:00:00"), (3725.0, "1:02:05"), (36000.0, "10:00:00"), (-0.2, "00:00"),
])
def test_timestamp_text(t, text):
    assert timestamp_text(t) == text


def clip(n: int, spacing: float = 2.5, seed: int = 0) -> list[Frame]:
    rng = np.random.default_rng(seed)
    return [Frame(i * 7, i * spacing, rng.integers(0, 255, (90, 160, 3), dtype=np.uint8))
            for i in range(n)]


@pytest.fixture(scope="module", params=["tiny_idefics3", "tiny_smolvlm"])
def model(request) -> Model:
    return Model.load(str(request.getfixturevalue(request.param)))


def test_layout_timestamps_and_images(model):
    frames = clip(3, spacing=30.0)
    prompt = build_prompt(model, frames, prepare(frames, model.image_size), "Describe it.",
                          intro=INTRO, max_new_tokens=100)
    text = prompt.text
    assert text.startswith("<|im_start|>User: " + INTRO)
    assert text.index("Frame from 00:00:<image>") < text.index("Frame from 00:30:<image>") \
        < text.index("Frame from 01:00:<image>")
    assert text.endswith("<image>\n\nDescribe it.<end_of_utterance>\nAssistant:")
    assert prompt.frames == [(0, 0.0), (7, 30.0), (14, 60.0)]
    assert prompt.budget == model.context - 100
    assert prompt.head + prompt.tail_for("Describe it.") == text


def test_token_count_is_the_processors(model):
    frames = clip(6)
    images = prepare(frames, model.image_size)
    prompt = build_prompt(model, frames, images, "What happens?", intro=INTRO)
    stock = model.encode_with_processor(prompt.text, images)
    assert prompt.tokens == stock["input_ids"].shape[1] == model.count_tokens(prompt.text)
    ours = model.encode(prompt.text, images)
    assert torch.equal(ours["input_ids"], stock["input_ids"])
    assert ours["pixel_values"].shape == (1, 6, 3, model.image_size, model.image_size)
    assert torch.allclose(ours["pixel_values"], stock["pixel_values"], atol=1e-6)
    assert bool(stock["pixel_attention_mask"].all())  # no padding: the mask we omit is all ones
    per_image = (stock["input_ids"] == model.processor.image_token_id).sum().item()
    assert per_image == 6 * model.tokens_per_image


def test_encode_refuses_unprepared_images(model):
    frames = clip(1)
    with pytest.raises(ValueError, match="prepared"):
        model.encode("<image>", [frames[0].image])


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> Model:
    """A tiny SmolVLM2 with 1024 positions: a dozen frames overflow it."""
    path = make_checkpoint(tmp_path_factory.mktemp("small"), "smolvlm", "tiny", context=1024)
    return Model.load(str(path))


def test_over_budget_raises_with_the_numbers(small):
    frames = clip(20)
    with pytest.raises(OverBudget) as err:
        build_prompt(small, frames, prepare(frames, small.image_size), "Describe.",
                     max_new_tokens=128)
    exc = err.value
    assert exc.budget == 1024 - 128 and exc.tokens > exc.budget
    assert small.tokens_per_image + 3 < exc.tokens_per_frame < small.tokens_per_image + 20
    assert "\n" not in str(exc) and "-n" in str(exc)


def test_frames_that_fit_is_the_largest_that_fits(small):
    duration = 40.0
    k = frames_that_fit(small, 50, task="Describe.", intro=INTRO, max_new_tokens=128,
                        duration_s=duration)
    assert 0 < k < 50

    def frames_at(n):
        return [Frame(i, (i + 0.5) * duration / n, np.zeros((8, 8, 3), np.uint8))
                for i in range(n)]

    fit = frames_at(k)
    prompt = build_prompt(small, fit, prepare(fit, small.image_size), "Describe.",
                          intro=INTRO, max_new_tokens=128)
    assert prompt.tokens <= prompt.budget
    over = frames_at(k + 1)
    with pytest.raises(OverBudget):
        build_prompt(small, over, prepare(over, small.image_size), "Describe.", intro=INTRO,
                     max_new_tokens=128)
    assert frames_that_fit(small, 3, task="Describe.", intro=INTRO, max_new_tokens=128) == 3
    assert frames_that_fit(small, 50, task="x", intro=None, max_new_tokens=1024) == 0
