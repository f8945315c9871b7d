"""What each non-default backend's library gets wrong, and that videovlm corrects or refuses it.

tests/test_decode.py runs every backend over the common clips; these tests aim at the specific
quirks: decord's own timestamp table, rotation it applies only for some containers, and its
endless loops; OpenCV's frame numbers derived from time x fps (wrong on variable frame rate) and
its approximate seeks; torchcodec's own rotation. Identity always comes from the frame's pixels.
"""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests.media import indices_of, make_video, read_index
from videovlm.decode import available_backends, decode
from videovlm.errors import BackendError
from videovlm.plan import plan
from videovlm.probe import probe

INSTALLED = set(available_backends())
needs = {
    name: pytest.mark.skipif(name not in INSTALLED, reason=f"{name} is not installed")
    for name in ("decord", "opencv", "torchcodec")
}
ROOT = Path(__file__).resolve().parent.parent


def right_or_refused(path: Path, backend: str, n: int = 50, seek: str = "exact") -> bool:
    """True when the backend returned exactly the planned frames (from the pixels); False when
    it refused in one clear line. Anything else fails the test."""
    info = probe(path)
    refs = plan(info, n, seek=seek)
    try:
        frames = decode(info, refs, backend)
    except BackendError as exc:
        message = str(exc)
        assert message and "\n" not in message and "--backend av" in message, message
        return False
    assert indices_of([f.image for f in frames]) == [r.index for r in refs]
    assert [f.time_s for f in frames] == [r.time_s for r in refs]
    assert all(f.image.shape == (info.height, info.width, 3) for f in frames)
    return True


@pytest.fixture(scope="module")
def quirk_clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Files that trip the libraries, made once for this module (small: 96x64)."""
    d = tmp_path_factory.mktemp("quirks")
    size = (96, 64)
    clips = {
        # long GOP, B-frames and a 10 s frozen gap: OpenCV's time x fps frame numbers are wrong
        # after the gap and its seeks land elsewhere; 50 targets force seeks and forward grabs
        "vfr_long_gop": make_video(d / "vfr long gop.mp4", n_frames=900, size=size, gop=250,
                                   bframes=3, vfr_gap=(400, 10.0)),
        # Matroska rotation: decord's FFmpeg does not see it, so decord does not turn these
        "rot180_mkv": make_video(d / "rot180.mkv", n_frames=60, size=size, gop=20, bframes=2,
                                 rotation=180),
        "rot270_mkv": make_video(d / "rot270.mkv", n_frames=60, size=size, gop=20, bframes=2,
                                 rotation=270),
        "rot90_mp4": make_video(d / "rot90.mp4", n_frames=60, size=size, gop=20, bframes=2,
                                rotation=90),
        "avi": make_video(d / "clip.avi", codec="mpeg4", n_frames=60, size=size, gop=12),
        "av1": make_video(d / "clip.mkv", codec="av1", n_frames=30, size=size, gop=10),
    }
    clips["avi_overreported"] = _overreport_avi(clips["avi"], d / "overreported.avi", factor=10)
    return clips


def _overreport_avi(src: Path, dst: Path, factor: int) -> Path:
    """A copy of an AVI whose headers claim ``factor`` times its frames (a lying header)."""
    data = bytearray(src.read_bytes())
    avih = data.index(b"avih")
    total = avih + 8 + 16  # avih: size, then 4 DWORDs before dwTotalFrames
    (frames,) = struct.unpack_from("<I", data, total)
    struct.pack_into("<I", data, total, frames * factor)
    strh = data.index(b"strh")
    length = strh + 8 + 32  # strh: size, fccType, fccHandler, 5 DWORDs/WORDs before dwLength
    struct.pack_into("<I", data, length, struct.unpack_from("<I", data, length)[0] * factor)
    dst.write_bytes(bytes(data))
    return dst


# --- decord ------------------------------------------------------------------------------------


@needs["decord"]
@pytest.mark.parametrize("name", ["rot180_mkv", "rot270_mkv", "rot90_mp4"])
def test_decord_frames_are_upright_exactly_once(quirk_clips, name):
    # decord turns MP4 frames itself but not Matroska ones (180 shows only in the pixels)
    assert right_or_refused(quirk_clips[name], "decord")


@needs["decord"]
def test_decord_on_a_header_that_overreports_frames_is_right_and_bounded(quirk_clips):
    path = quirk_clips["avi_overreported"]
    info = probe(path)
    assert info.frame_count_header == 10 * info.frame_count  # the lie is really there
    start = time.monotonic()
    assert right_or_refused(path, "decord", n=60)
    assert time.monotonic() - start < 60


@needs["decord"]
def test_decord_spot_check_refuses_a_frame_pyav_decodes_at_another_size(quirk_clips):
    # found by the fuzz corpus: in a payload-damaged MPEG-4 AVI, PyAV decoded the last frame at
    # 64x976 and the pixel comparison with decord's 64x48 ended in a traceback
    from videovlm.decode._decord import _spot_check

    info = probe(quirk_clips["avi"])
    refs = plan(info, 3)
    other_size = np.zeros((3, info.height + 16, info.width, 3), np.uint8)
    with pytest.raises(BackendError, match=r"cannot be checked against PyAV's .*--backend av$"):
        _spot_check(info, refs, other_size)


@needs["decord"]
def test_decord_is_refused_where_it_cannot_seek(clip_path):
    # on MPEG-TS decord returned frame 18 for frame 3 (right timestamps, wrong pictures)
    assert not right_or_refused(clip_path("start_offset_ts"), "decord")


@needs["decord"]
def test_decord_that_overruns_its_time_limit_is_killed(quirk_clips, monkeypatch):
    from videovlm import isolation

    # the limit is the bound that keeps decord's endless loops from hanging the CLI: with no
    # time allowed at all, the real decoding child must be stopped and the call refused
    info = probe(quirk_clips["avi"])  # probed first: the probe has its own limit
    monkeypatch.setattr(isolation, "BASE_TIMEOUT_S", 0.0)
    monkeypatch.setattr(isolation, "PER_FRAME_S_720P", 0.0)
    with pytest.raises(BackendError, match="did not finish") as exc:
        decode(info, plan(info, 5), "decord")
    assert "\n" not in str(exc.value)
    monkeypatch.undo()  # and the next decode starts a fresh child that finishes
    assert len(decode(info, plan(info, 5), "av")) == 5


@needs["decord"]
def test_decord_table_check_accepts_a_variable_frame_rate(quirk_clips):
    # decord's timestamps are float32 seconds from the stream start: the check must map them
    # onto the timeline across a 10 s gap without refusing a good file
    assert right_or_refused(quirk_clips["vfr_long_gop"], "decord")


# --- OpenCV ------------------------------------------------------------------------------------


@needs["opencv"]
@pytest.mark.parametrize("n", [7, 50, 200])
def test_opencv_is_exact_where_its_frame_numbers_are_not(quirk_clips, n):
    import cv2

    path = quirk_clips["vfr_long_gop"]
    info = probe(path)
    refs = plan(info, n)
    late = [r for r in refs if r.index > 400][-1]
    # the quirk: after the frozen gap, OpenCV's own frame number for this frame is off
    cap = cv2.VideoCapture(str(path))
    cap.set(cv2.CAP_PROP_POS_FRAMES, late.index)
    ok, bgr = cap.read()
    cap.release()
    assert ok and read_index(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)) != late.index
    # videovlm's OpenCV backend still returns exactly the planned frames
    assert right_or_refused(path, "opencv", n=n)


@needs["opencv"]
@pytest.mark.parametrize("name", ["rot180_mkv", "rot270_mkv", "rot90_mp4"])
def test_opencv_frames_are_upright_exactly_once(quirk_clips, name):
    # OpenCV's own auto-rotation is switched off; the probed rotation is applied once
    assert right_or_refused(quirk_clips[name], "opencv")


@needs["opencv"]
def test_opencv_without_a_decoder_refuses_in_one_line(quirk_clips):
    right_or_refused(quirk_clips["av1"], "opencv")  # its bundled FFmpeg has no AV1 decoder


@needs["opencv"]
def test_opencv_on_an_overreported_header_is_right(quirk_clips):
    assert right_or_refused(quirk_clips["avi_overreported"], "opencv", n=60)


# --- torchcodec --------------------------------------------------------------------------------


@needs["torchcodec"]
@pytest.mark.parametrize("name", ["rot180_mkv", "rot270_mkv", "rot90_mp4"])
def test_torchcodec_turns_frames_itself_and_videovlm_does_not_again(quirk_clips, name):
    from torchcodec.decoders import VideoDecoder

    from videovlm.decode._torchcodec import _applied_rotation

    path = quirk_clips[name]
    info = probe(path)
    assert _applied_rotation(VideoDecoder(str(path))) == info.rotation  # the measured quirk
    assert right_or_refused(path, "torchcodec")


@needs["torchcodec"]
def test_torchcodec_on_variable_frame_rate_and_lying_header(quirk_clips):
    assert right_or_refused(quirk_clips["vfr_long_gop"], "torchcodec")
    assert right_or_refused(quirk_clips["avi_overreported"], "torchcodec", n=60)


# --- all of them -------------------------------------------------------------------------------


@pytest.mark.parametrize(("backend", "module"),
                         [("decord", "decord"), ("opencv", "cv2"), ("torchcodec", "torchcodec")])
def test_a_missing_library_is_one_line_naming_the_extra(quirk_clips, backend, module):
    # the library is made unimportable in a fresh CLI process, as on a machine without it
    code = (f"import sys; sys.modules[{module!r}] = None; from videovlm.cli import main; "
            f"sys.argv = ['videovlm', 'frames', {str(quirk_clips['avi'])!r}, '-n', '3', "
            f"'--backend', {backend!r}]; main()")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            cwd=ROOT, timeout=120)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and f"videovlm[{backend}]" in lines[0], result.stderr
    assert result.stdout == ""


@pytest.mark.parametrize("backend", ["decord", "opencv", "torchcodec"])
def test_truncated_files_are_right_or_one_line(truncated_playable, backend):
    if backend not in INSTALLED:
        pytest.skip(f"{backend} is not installed")
    for path, _ in truncated_playable.values():
        right_or_refused(path, backend)  # exactly the planned frames or one clear line; no hang


@pytest.mark.parametrize("backend", ["decord", "opencv"])
def test_these_backends_never_import_torch(quirk_clips, backend):
    if backend not in INSTALLED:
        pytest.skip(f"{backend} is not installed")
    code = ("import sys; from videovlm import sample_frames; "
            f"frames = sample_frames({str(quirk_clips['avi'])!r}, 5, backend={backend!r}); "
            "print(len(frames), 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=ROOT, timeout=120, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert out.stdout.split() == ["5", "False"], out.stderr
