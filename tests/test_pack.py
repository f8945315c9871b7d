"""Prompts: the right layout, token counts equal to the processor's, and the budget enforced."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from videovlm.decode import Frame
from videovlm.model import Model
from videovlm.pack import OverBudget, build_prompt, frames_that_fit, timestamp_text
from videovlm.prepare import prepare
from videovlm.testing import make_checkpoint

SAMPLES = Path(__file__).resolve().parent.parent / "samples"

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


# -- SmolVLM2's own video layout ----------------------------------------------------------------
# The stock SmolVLM processor's video path needs torchvision (no CPU build fits this project), so
# its prompt is assembled from transformers' own constants and helper, imported, not copied, the
# way its ``replace_video_token`` does, and our input_ids must equal its tokenization.


def _stock_video_prompt(model: Model, times: list[float], duration_s: float, user: str) -> str:
    from datetime import timedelta

    from num2words import num2words
    from transformers.models.smolvlm import processing_smolvlm as stock

    proc = model.processor
    video = stock.DEFAULT_VIDEO_INTRO.format(
        frame_count=num2words(len(times)), video_duration=str(timedelta(seconds=int(duration_s))))
    for t in times:
        minutes, seconds = int(t // 60), int(t % 60)
        video += stock.FRAME_TIMESTAMP_MESSAGE.format(timestamp=f"{minutes:02d}:{seconds:02d}")
        video += stock._prompt_single_image(
            model.tokens_per_image, fake_token_around_image=proc.fake_image_token,
            image_token=proc.image_token, global_image_token=proc.global_image_tag)
    video += stock.DEFAULT_MEDIA_OUTTRO
    chat = model.tokenizer.apply_chat_template(
        [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": user}]}],
        chat_template=model.chat_template, tokenize=False, add_generation_prompt=True)
    return chat.replace("<video>", video)


@pytest.mark.parametrize("recipe", ["qa", "mcq", "timeline", "describe"])
def test_smolvlm2_gets_the_layout_its_processor_writes(tiny_smolvlm, recipe):
    """Every built-in recipe gives SmolVLM2 exactly its processor's video prompt: the intro with
    the frame count in words and the H:MM:SS duration, ``\\nFrame from MM:SS:`` per frame, a
    blank line, then the user's text (through the real CPU and model stages)."""
    from videovlm.api import load_video
    from videovlm.pipelines import load_recipe
    from videovlm.run import Asked, ModelRun

    model = Model.load(str(tiny_smolvlm))
    rec = load_recipe(recipe)
    inputs = load_video(SAMPLES / "bikes.mp4", rec, n=6, image_size=model.image_size)
    run = ModelRun(model, inputs, rec, [Asked("What moves?", None, rec)])
    group = inputs.groups[0]
    user = "What happens here?"
    prompt, frames = run.prompt(group, user)
    expected = _stock_video_prompt(model, [f.time_s for f in frames], inputs.info.duration_s,
                                   user)
    assert model.expand_images(prompt.text) == expected
    ids = model.tokenizer(expected, return_tensors="pt")["input_ids"]
    assert torch.equal(model.encode(prompt.text, prompt.images)["input_ids"], ids)
    assert prompt.tokens == ids.shape[1]


def test_smolvlm2_frame_labels_do_not_wrap_minutes_into_hours(tiny_smolvlm, tiny_idefics3):
    """Past an hour SmolVLM2's processor writes ``62:05`` (minutes never wrapped); SmolVLM v1
    keeps ``1:02:05``."""
    from datetime import timedelta

    from transformers.models.smolvlm import processing_smolvlm as stock

    times, duration = [0.0, 3725.0], 3726.0
    intro = stock.DEFAULT_VIDEO_INTRO.format(frame_count="two",
                                             video_duration=str(timedelta(seconds=3726)))
    frames = [Frame(i, t, np.zeros((8, 8, 3), np.uint8)) for i, t in enumerate(times)]
    v2 = Model.load(str(tiny_smolvlm))
    p2 = build_prompt(v2, frames, prepare(frames, v2.image_size), "x", intro=intro,
                      max_new_tokens=8)
    assert v2.expand_images(p2.text) == _stock_video_prompt(v2, times, duration, "x")
    assert "Frame from 62:05:<image>" in p2.text
    v1 = Model.load(str(tiny_idefics3))
    p1 = build_prompt(v1, frames, prepare(frames, v1.image_size), "x", max_new_tokens=8)
    assert "Frame from 1:02:05:<image>" in p1.text
