"""Every installed backend returns the planned frames, checked from the pixels.

Each synthetic frame shows its own index (tests/media.py), so a frame's identity comes from its
pixels, not from the decoder's word; times are checked against the generator's numbers.
A backend other than the default may refuse a file it cannot decode exactly (BackendError, one
line): the issue allows refusing, never a wrong frame.
"""

from __future__ import annotations

import itertools

import pytest

import videovlm
from tests.conftest import CLIPS, SAMPLES
from tests.media import read_index
from videovlm.decode import available_backends, decode, decode_with_backend, get_backend
from videovlm.errors import BackendError
from videovlm.plan import plan
from videovlm.probe import probe

BACKENDS = available_backends()
# the plain H.264 files every backend must decode, not merely refuse
MUST_DECODE = ("long_gop_bframes", "fewer_than_n", "odd_size")


def tolerance(clip) -> float:
    return 1.5e-3 if clip.filename.endswith((".mkv", ".webm")) else 1e-6


def decode_or_refusal(info, refs, backend: str, clip_name: str):
    """The frames, or None when a non-default backend refuses in one clear line."""
    try:
        return decode(info, refs, backend)
    except BackendError as exc:
        if backend == "av" or clip_name in MUST_DECODE:
            raise
        assert "\n" not in str(exc) and str(exc)
        return None


def check_frames(clip, info, refs, frames) -> None:
    assert [f.index for f in frames] == [r.index for r in refs]
    assert [read_index(f.image) for f in frames] == [r.index for r in refs]  # from the pixels
    for f in frames:
        assert f.time_s == pytest.approx(clip.time_s(f.index), abs=tolerance(clip))
        assert f.image.shape == (info.height, info.width, 3)  # upright, decoded resolution
        assert f.image.dtype.name == "uint8"


def test_the_default_backend_is_always_there():
    assert BACKENDS[0] == "av"


@pytest.mark.parametrize("n", [7, 50])
@pytest.mark.parametrize("name", sorted(CLIPS))
@pytest.mark.parametrize("backend", BACKENDS)
def test_exact_frames_from_pixels(clip_path, backend, name, n):
    clip = CLIPS[name]
    info = probe(clip_path(name))
    refs = plan(info, n)
    assert len(refs) == min(n, clip.n_frames) or name == "vfr_gap"
    frames = decode_or_refusal(info, refs, backend, name)
    if frames is not None:
        check_frames(clip, info, refs, frames)


@pytest.mark.parametrize("name", ["long_gop_bframes", "vfr_gap", "rot90", "hevc_10bit", "av1",
                                  "start_offset", "video_not_stream_0"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_keyframe_mode_gives_real_keyframes(clip_path, backend, name):
    clip = CLIPS[name]
    info = probe(clip_path(name))
    refs = plan(info, 10, seek="keyframe")
    assert all(info.timeline.keyframe[r.index] for r in refs)
    frames = decode_or_refusal(info, refs, backend, name)
    if frames is not None:
        check_frames(clip, info, refs, frames)


def test_frozen_gap_gives_fewer_frames_with_real_times(clip_path):
    clip = CLIPS["vfr_gap"]
    info = probe(clip_path("vfr_gap"))
    refs = plan(info, 50)
    assert len(refs) < 40  # frame 19 is on screen for 10 s: taken once
    frames = decode(info, refs, "av")
    check_frames(clip, info, refs, frames)
    times = [f.time_s for f in frames]
    assert 19 in [f.index for f in frames]
    assert any(b - a > 9.9 for a, b in itertools.pairwise(times))


def test_auto_takes_the_default_and_says_so(clip_path):
    info = probe(clip_path("rot270"))
    refs = plan(info, 5)
    frames, used = decode_with_backend(info, refs, "auto")
    assert used == "av"
    check_frames(CLIPS["rot270"], info, refs, frames)


def test_sample_frames_api(clip_path):
    path = clip_path("long_gop_bframes")
    frames = videovlm.sample_frames(str(path), n=6)
    assert [read_index(f.image) for f in frames] == [25, 75, 125, 175, 225, 275]
    assert [f.time_s for f in frames] == pytest.approx([i / 30 for i in (25, 75, 125, 175, 225,
                                                                          275)])
    keyframes = videovlm.sample_frames(path, n=6, seek="keyframe")
    assert [read_index(f.image) for f in keyframes] == [0, 250]


def test_decode_takes_a_path_too(clip_path):
    path = clip_path("fewer_than_n")
    refs = plan(probe(path), 3)
    assert [read_index(f.image) for f in decode(path, refs)] == [r.index for r in refs]


@pytest.mark.parametrize("name", ["mp4_37", "mp4_61", "ts_61", "ts_83", "mkv_61"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_cut_off_file_decodes_what_is_there(truncated_playable, backend, name):
    path, _ = truncated_playable[name]
    info = probe(path)
    refs = plan(info, 50)
    frames = decode_or_refusal(info, refs, backend, name)
    if frames is not None:
        assert [read_index(f.image) for f in frames] == [r.index for r in refs]


@pytest.mark.parametrize("name", ["bikes.mp4", "world.mp4"])
def test_backends_agree_on_real_footage(name):
    info = probe(SAMPLES / name)
    refs = plan(info, 8)
    reference = decode(info, refs, "av")
    for backend in BACKENDS[1:]:
        try:
            other = decode(info, refs, backend)
        except BackendError:
            continue
        for a, b in zip(reference, other, strict=True):
            assert a.index == b.index
            # same frame, maybe another colour conversion: close, not necessarily identical
            diff = abs(a.image.astype(int) - b.image.astype(int)).mean()
            assert diff < 6, (backend, a.index, diff)


def test_unknown_backend_is_one_clear_line(clip_path):
    with pytest.raises(BackendError, match="unknown backend 'ffmpeg'"):
        get_backend("ffmpeg")
    with pytest.raises(BackendError):
        decode(clip_path("fewer_than_n"), [], "nonesuch")


def test_empty_plan_decodes_nothing(clip_path):
    assert decode(clip_path("fewer_than_n"), [], "av") == []


@pytest.mark.parametrize("workers", [2, 3])
@pytest.mark.parametrize("name", ["long_gop_bframes", "vp9_webm", "hevc_10bit", "mpeg4_avi",
                                  "start_offset_ts", "vfr_gap", "av1"])
def test_gop_parallel_decoding_gives_the_same_frames(clip_path, name, workers):
    """The PyAV backend's concurrent path (used on machines with several cores), forced on."""
    from videovlm.decode._av import AvBackend

    clip = CLIPS[name]
    info = probe(clip_path(name))
    for seek in ("exact", "keyframe"):
        refs = plan(info, 50, seek=seek)
        frames = AvBackend(workers=workers).decode(info, refs)
        check_frames(clip, info, refs, frames)


@pytest.mark.parametrize("name", ["long_gop_bframes", "rot90", "rot270", "odd_size", "hevc_10bit"])
@pytest.mark.parametrize("seek", ["exact", "keyframe"])
def test_av_images_are_pyav_own_conversion_byte_for_byte(clip_path, name, seek):
    """The backend converts through one reused swscale context into one block per run; each
    image must still equal PyAV's own per-frame ``to_ndarray(format="rgb24")``, turned upright,
    and be a frame of its own (writing one leaves the others as they were)."""
    import av
    import numpy as np

    path = str(clip_path(name))
    info = probe(path)
    refs = plan(info, 7, seek=seek)
    frames = decode(info, refs, "av")
    wanted = {r.pts: r for r in refs}
    oracle = {}
    with av.open(path) as container:
        for frame in container.decode(video=0):
            if frame.pts in wanted:
                image = frame.to_ndarray(format="rgb24")
                oracle[frame.pts] = np.rot90(image, k=-info.rotation // 90)
    for ref, got in zip(refs, frames, strict=True):
        assert np.array_equal(got.image, oracle[ref.pts])
    if len(frames) > 1:
        before = frames[1].image.copy()
        frames[0].image[...] = 0
        assert np.array_equal(frames[1].image, before)
