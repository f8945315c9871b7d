"""Our resize gives the model what the processor would, at the checkpoint's size, in each fit."""

from __future__ import annotations

import numpy as np
import pytest

from videovlm.decode import Frame
from videovlm.prepare import FITS, prepare, prepare_image

RED, BLUE, GREEN = (255, 0, 0), (0, 0, 255), (0, 255, 0)


def wide_frame() -> np.ndarray:
    """640x240: left quarter red, middle half green, right quarter blue."""
    image = np.zeros((240, 640, 3), np.uint8)
    image[:, :160] = RED
    image[:, 160:480] = GREEN
    image[:, 480:] = BLUE
    return image


@pytest.mark.parametrize("size", [384, 512])
@pytest.mark.parametrize("fit", FITS)
def test_every_fit_gives_square_rgb_uint8(size, fit):
    out = prepare([Frame(0, 0.0, wide_frame()), Frame(5, 1.0, wide_frame()[:100, :50])],
                  size, fit)
    assert [a.shape for a in out] == [(size, size, 3)] * 2
    assert all(a.dtype == np.uint8 for a in out)


def test_squash_keeps_the_whole_frame():
    out = prepare_image(wide_frame(), 384, "squash")
    assert tuple(out[192, 20]) == RED and tuple(out[192, 363]) == BLUE
    assert tuple(out[192, 192]) == GREEN


def test_crop_keeps_the_centre_square():
    out = prepare_image(wide_frame(), 384, "crop")  # centre 240x240 is all green
    assert np.abs(out.astype(int) - GREEN).max() <= 2


def test_pad_letterboxes_on_black():
    out = prepare_image(wide_frame(), 384, "pad")  # 640x240 -> 384x144, bars of 120 rows
    assert out[:110].max() == 0 and out[-110:].max() == 0
    assert tuple(out[192, 10]) == RED and tuple(out[192, 373]) == BLUE


def test_squash_matches_the_processors_own_resize(tiny_idefics3):
    """Without splitting the stock processor squashes to the square too (via a 4x upscale)."""
    from videovlm.model import Model

    model = Model.load(str(tiny_idefics3))
    rng = np.random.default_rng(1)
    image = np.kron(rng.integers(0, 255, (9, 16, 3)), np.ones((40, 40, 1))).astype(np.uint8)
    ours = prepare_image(image, 384, "squash").astype(np.float32) / 127.5 - 1
    stock = model.processor.image_processor(
        [image], do_image_splitting=False, return_tensors="np")["pixel_values"][0, 0]
    diff = np.abs(ours.transpose(2, 0, 1) - stock)
    assert diff.mean() < 0.02  # same picture; filters differ only at block edges


def test_unknown_fit_is_refused():
    with pytest.raises(ValueError, match="fit"):
        prepare_image(wide_frame(), 384, "zoom")  # type: ignore[arg-type]
