"""Contact sheets from real decoded frames: every frame in its own cell, upright, whole and in
order; the grid's shape; labels that follow the frame's index and time to the millisecond; the
picture type chosen by the extension; the file written whole, or nothing on a mistake.

Frames that already fit a cell are pasted unscaled, so in a PNG sheet each one can be found pixel
for pixel; scaled thumbnails are checked by the index every synthetic frame carries.
"""

from __future__ import annotations

import dataclasses
import io

import numpy as np
import pytest
from PIL import Image

from tests.conftest import SAMPLES
from tests.media import make_video, read_index
from videovlm import sample_frames
from videovlm.decode import Frame
from videovlm.errors import VideoVLMError
from videovlm.sheet import contact_sheet, render_sheet, sheet_format

THUMB = 64  # the width of the synthetic clips' frames: they go on the sheet unscaled


@pytest.fixture(scope="module")
def frames(clip_path) -> list[Frame]:
    """20 frames, 64x48, of a 300-frame clip, each showing its own index."""
    got = sample_frames(clip_path("long_gop_bframes"), 20)
    assert len(got) == 20
    return got


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[Frame], list[Frame]]:
    """The same 12 frames at 64x48 and at 320x240."""
    d = tmp_path_factory.mktemp("sheet_clips")
    small = sample_frames(make_video(d / "small.mp4", n_frames=12), 12)
    large = sample_frames(make_video(d / "large.mp4", n_frames=12, size=(320, 240)), 12)
    return small, large


@pytest.fixture(scope="module")
def portrait(tmp_path_factory: pytest.TempPathFactory) -> list[Frame]:
    """Frames 48 wide and 64 tall."""
    d = tmp_path_factory.mktemp("sheet_portrait")
    return sample_frames(make_video(d / "portrait.mp4", n_frames=8, size=(48, 64)), 2)


def picture(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im.convert("RGB"))


def find(sheet: np.ndarray, image: np.ndarray) -> list[tuple[int, int]]:
    """Every (x, y) where ``image`` appears in ``sheet`` pixel for pixel."""
    h, w = image.shape[:2]
    windows = np.lib.stride_tricks.sliding_window_view(sheet, w, axis=1)  # (H, W-w+1, 3, w)
    first_row = (windows == image[0].T).all(axis=(2, 3))
    return [(int(x), int(y)) for y, x in zip(*np.nonzero(first_row), strict=True)
            if y + h <= sheet.shape[0] and np.array_equal(sheet[y:y + h, x:x + w], image)]


def places(frames: list[Frame], **kw) -> list[tuple[int, int]]:
    """Where each frame is on a PNG sheet of ``frames`` (each must appear exactly once)."""
    sheet = picture(render_sheet(frames, "PNG", thumb_width=THUMB, **kw))
    found = [find(sheet, f.image) for f in frames]
    assert all(len(spots) == 1 for spots in found), found
    return [spots[0] for spots in found]


def test_each_frame_is_in_its_own_cell_whole_in_row_major_order(frames):
    spots = places(frames[:12])
    xs, ys = sorted({x for x, _ in spots}), sorted({y for _, y in spots})
    assert (len(xs), len(ys)) == (3, 4)  # twelve 4:3 frames: a grid as wide as it is tall
    assert spots == [(xs[k % 3], ys[k // 3]) for k in range(12)]
    assert min(np.diff(xs)) >= THUMB and min(np.diff(ys)) > 48  # room for the labels


@pytest.mark.parametrize(("n", "columns", "shape"), [
    (1, None, (1, 1)),
    (9, None, (3, 3)),
    (12, None, (3, 4)),
    (20, None, (4, 5)),
    (12, 5, (5, 3)),  # the last row holds the two left over
    (3, 20, (3, 1)),  # never more columns than frames
])
def test_grid_shape(frames, n, columns, shape):
    spots = places(frames[:n], columns=columns)
    assert (len({x for x, _ in spots}), len({y for _, y in spots})) == shape


def test_a_frame_of_any_size_fills_the_same_cell(pair):
    small, large = pair
    small_sheet = picture(render_sheet(small, "PNG", thumb_width=THUMB))
    large_sheet = picture(render_sheet(large, "PNG", thumb_width=THUMB))
    assert large_sheet.shape == small_sheet.shape  # cells follow the shape, not the pixel count
    for frame, (x, y) in zip(small, places(small), strict=True):
        thumb = large_sheet[y:y + 48, x:x + THUMB]  # 320x240 shrunk to the cell's 64x48
        assert read_index(thumb) == frame.index  # the right frame, upright, in the same place


def test_mixed_shapes_are_centred_in_cells_for_the_tallest(frames, portrait):
    mixed = [frames[0], portrait[0], frames[1], portrait[1]]
    (l0, p0, l1, p1) = places(mixed)  # all whole: none cropped or squeezed
    centre = [(x + f.image.shape[1] / 2, y + f.image.shape[0] / 2)
              for f, (x, y) in zip(mixed, (l0, p0, l1, p1), strict=True)]
    assert centre[0][1] == centre[1][1] == centre[2][1]  # one row: three cells...
    assert centre[0][0] == centre[3][0]  # ...and the fourth below the first
    assert l0[1] > p0[1]  # a landscape frame sits lower in a cell sized for a portrait one


def test_label_follows_the_index_and_the_time_to_the_millisecond(frames):
    base = [dataclasses.replace(f, time_s=t) for f, t in zip(frames[:3], (0.0, 1.2344, 2.5),
                                                             strict=True)]

    def with_middle(**change) -> bytes:
        return render_sheet([base[0], dataclasses.replace(base[1], **change), base[2]], "PNG",
                            thumb_width=THUMB)

    same = render_sheet(base, "PNG", thumb_width=THUMB)
    assert with_middle(time_s=1.2341) == same  # both 00:01.234
    assert with_middle(image=frames[5].image) != same
    (x0, y0), (x1, y1), (x2, y2) = places(base)
    assert (y0 == y1 < y2) and (x0 == x2 < x1)  # two columns: the middle frame top right
    for change in ({"time_s": 1.2346}, {"index": base[1].index + 1}):
        diff = (picture(with_middle(**change)) != picture(same)).any(axis=2)
        assert diff.any()
        rows, cols = np.nonzero(diff)
        # only the middle frame's label changed: below its picture, above the next row
        assert rows.min() >= y1 + 48 and rows.max() < y2
        assert cols.min() >= x1


@pytest.mark.parametrize(("name", "fmt"), [("s.jpg", "JPEG"), ("s.JPEG", "JPEG"),
                                           ("s.png", "PNG"), ("s.PNG", "PNG")])
def test_picture_type_follows_the_extension(tmp_path, name, fmt):
    shots = sample_frames(SAMPLES / "bikes.mp4", 4)
    target = tmp_path / "new folder" / name
    assert contact_sheet(shots, target) == target
    assert sheet_format(target) == fmt
    with Image.open(target) as im:
        assert im.format == fmt
        assert im.size == Image.open(io.BytesIO(render_sheet(shots, "PNG"))).size
    assert [p.name for p in target.parent.iterdir()] == [name]  # no temp file left


@pytest.mark.parametrize(("name", "shown"), [("sheet.gif", "'.gif'"), ("sheet", "'(none)'")])
def test_unknown_picture_type_is_refused_and_nothing_written(frames, tmp_path, name, shown):
    target = tmp_path / "sub" / name
    with pytest.raises(VideoVLMError) as info:
        contact_sheet(frames[:2], target)
    message = str(info.value)
    assert str(target) in message and shown in message and ".jpg, .jpeg, .png" in message
    assert list(tmp_path.iterdir()) == []


def test_no_frames_is_an_error_and_nothing_written(tmp_path):
    with pytest.raises(VideoVLMError, match="no frames"):
        contact_sheet([], tmp_path / "sub" / "s.png")
    assert list(tmp_path.iterdir()) == []


def test_quality_is_for_jpeg_only(frames):
    assert len(render_sheet(frames, "JPEG", quality=20)) < len(render_sheet(frames, "JPEG",
                                                                            quality=95))
    assert render_sheet(frames, "PNG", quality=20) == render_sheet(frames, "PNG", quality=95)


def test_thumbnails_are_at_least_16_pixels_wide(frames):
    assert render_sheet(frames[:4], "PNG", thumb_width=1) == render_sheet(frames[:4], "PNG",
                                                                         thumb_width=16)


def test_a_real_frame_is_shrunk_to_the_thumbnail_width_keeping_its_shape():
    (shot,) = sample_frames(SAMPLES / "bikes.mp4", 1)
    assert shot.image.shape[:2] == (272, 640)
    sheet = picture(render_sheet([shot], "PNG", thumb_width=240))
    # the picture: the rows that differ from the background (the corner) almost all along;
    # the label's rows hold only a few letters
    painted = (sheet != sheet[0, 0]).any(axis=2)
    rows = np.nonzero(painted.sum(axis=1) > 200)[0]
    cols = np.nonzero(painted[rows].any(axis=0))[0]
    top, left = rows.min(), cols.min()
    height, width = rows.max() - top + 1, cols.max() - left + 1
    assert len(rows) == height  # one block of rows
    assert width == 240 and abs(height - 102) <= 2  # 640x272 at 240 wide: 102 tall
    thumb = sheet[top:top + 102, left:left + 240].astype(int)
    expected = np.asarray(Image.fromarray(shot.image).resize((240, 102))).astype(int)
    assert np.abs(thumb - expected).mean() < 6  # the frame itself, whatever the filter
