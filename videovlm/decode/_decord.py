"""The decord backend (``decord.VideoReader.get_batch``), opt-in with ``--backend decord``.

decord numbers frames by its own table of packet timestamps and cannot be pointed at a stream, so
its indices are trusted only after its table is checked, frame by frame, against the probed
timeline (same count, same times): otherwise it refuses. It cannot say which frame it decoded,
and its seeks miss in files without an index (MPEG-TS: other pictures under the right
timestamps), so such containers are refused and the first and last frames are compared with
PyAV's. decord 0.6 turns frames upright only where its own older FFmpeg sees the display matrix
(MP4/MOV, not Matroska; measured): 90/270 show in the frame's shape and are finished here, 180 is
settled by the same comparison.

decord spins forever in ``get_batch`` on files whose packets do not all decode (its decode loop
waits for frames that never come), and a C++ loop cannot be interrupted from Python: the time
limit of the decoding child process (:mod:`videovlm.isolation`) stops it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

from videovlm.decode import Frame, get_backend, turn
from videovlm.errors import BackendError
from videovlm.plan import TIME_TOLERANCE_S, FrameRef
from videovlm.probe import VideoInfo

# decord keeps timestamps as float32 seconds: agreement within a quarter of the smallest frame
# interval (capped at 1 ms) identifies the frame; float32 rounding stays far below that
_MAX_TIME_TOLERANCE_S = 1e-3
# FFmpeg demuxers with no seek index: decord's timestamp seeks land on other frames there
_UNINDEXED_FORMATS = frozenset({"mpegts", "mpeg", "mpegvideo", "h264", "hevc", "m4v"})
# the same frame through decord's and PyAV's FFmpeg differs by rounding (a few levels at most);
# a different frame of real footage or of the test clips differs far more
_SAME_FRAME_MAX_DIFF = 6.0


class DecordBackend:
    """Decode planned frames with decord, its table checked first and two frames after."""

    name = "decord"

    def decode(self, info: VideoInfo, refs: Sequence[FrameRef]) -> list[Frame]:
        """Frames for ``refs`` via one ``get_batch``, or BackendError."""
        if not refs:
            return []
        _check_stream(info)
        try:
            images = _decode(info, [r.index for r in refs])
        except BackendError:
            raise
        except Exception as exc:  # decord raises its own DECORDError and others: all one line
            reason = _decord_reason(exc, info) or type(exc).__name__
            raise BackendError(f"decord cannot decode {info.path}: {reason}; use --backend av"
                               ) from None
        images = _spot_check(info, refs, images)
        return [Frame(r.index, r.time_s, images[k]) for k, r in enumerate(refs)]


def _check_stream(info: VideoInfo) -> None:
    """Refuse files decord is known to get wrong before spending a process on them.

    decord decodes FFmpeg's "best" video stream and cannot be told otherwise: it must be the
    stream the probe chose (they differ when the best one is cover art). And decord seeks by
    timestamp and trusts where it lands: in containers without an index (MPEG-TS/PS, raw
    streams) it lands elsewhere and returns other frames under the right timestamps (measured:
    frame 18 for frame 3 on a TS file with a start offset).
    """
    import av

    try:
        with av.open(info.path, metadata_errors="ignore") as container:
            best = container.streams.best("video")
            best_index = info.stream_index if best is None else best.index
            formats = set(container.format.name.split(","))
    except (av.FFmpegError, OSError):
        return  # decord's own open will say what is wrong
    if best_index != info.stream_index:
        raise BackendError(
            f"decord would decode video stream {best_index} of {info.path}, not stream "
            f"{info.stream_index} (the one sampled); use --backend av"
        )
    unindexed = formats & _UNINDEXED_FORMATS
    if unindexed:
        raise BackendError(
            f"decord seeks inexactly in {sorted(unindexed)[0]} files like {info.path} (no "
            "index: it returns other frames); use --backend av"
        )


def _spot_check(info: VideoInfo, refs: Sequence[FrameRef], images: np.ndarray) -> np.ndarray:
    """Compare the first and last frames with PyAV's decode of them; turn 180 if decord did not.

    decord gives no way to see which frame it decoded, so a wrong seek would pass unseen; two
    frames checked against the default backend catch a shifted batch (its errors shift every
    frame after a bad seek). It also settles the one rotation a frame's shape cannot show:
    decord turns frames only when its own (older) FFmpeg sees the display matrix, which it does
    for MP4/MOV, not for Matroska (measured). A picture that looks the same both ways is right
    either way.
    """
    picks = sorted({0, len(refs) - 1})
    truth = get_backend("av").decode(info, [refs[k] for k in picks])
    flip = False
    for k, want in zip(picks, truth, strict=True):
        if want.image.shape != images[k].shape:  # a damaged frame PyAV decodes at another size
            raise BackendError(
                f"decord's frame {refs[k].index} of {info.path} cannot be checked against "
                f"PyAV's ({images[k].shape[1]}x{images[k].shape[0]} against "
                f"{want.image.shape[1]}x{want.image.shape[0]}: a damaged file?); use --backend av")
        want_img = want.image.astype(np.int16)
        as_is = float(np.abs(images[k].astype(np.int16) - want_img).mean())
        turned = float(np.abs(images[k][::-1, ::-1].astype(np.int16) - want_img).mean())
        if info.rotation == 180 and turned < as_is:
            flip, as_is = True, turned
        if as_is > _SAME_FRAME_MAX_DIFF:
            raise BackendError(
                f"decord returned another picture than frame {refs[k].index} of {info.path} "
                f"(mean difference {as_is:.0f}/255 from PyAV's); use --backend av"
            )
    return np.ascontiguousarray(images[:, ::-1, ::-1]) if flip else images


def _decode(info: VideoInfo, indices: list[int]) -> np.ndarray:
    """decord's frames at ``indices``, upright at the display size, once its table is checked."""
    import decord

    reader = decord.VideoReader(info.path, ctx=decord.cpu(0), num_threads=0)
    error = _check_table(reader, info)
    if error:
        raise BackendError(f"decord cannot decode {info.path}: {error}; use --backend av")
    batch = reader.get_batch(indices).asnumpy()
    if batch.shape[1:3] == (info.height, info.width):
        return batch
    if batch.shape[1:3] == (info.width, info.height) and info.rotation in (90, 270):
        return np.ascontiguousarray(turn(batch, info.rotation, axes=(1, 2)))  # decord did not
    raise BackendError(f"decord cannot decode {info.path}: it returned {batch.shape[2]}x"
                       f"{batch.shape[1]} frames, the display size is {info.width}x{info.height}; "
                       "use --backend av")


def _decord_reason(exc: Exception, info: VideoInfo) -> str:
    """decord's error without its C++ source locations, in one line."""
    text = " ".join(str(exc).split())
    if "cannot find video stream" in text:
        return f"decord's FFmpeg build has no decoder for {info.codec}"
    text = re.sub(r"\[[0-9:]+\] |\S+\.(?:cc|h|cpp):\d+: |Check failed: ", "", text)
    return text.strip()[:160]


def _check_table(reader, info: VideoInfo) -> str | None:
    """Why decord's frame indices are not the timeline's, or None when they are.

    decord's frame ``i`` is its ``i``-th packet by timestamp, its times in seconds from the
    stream's start; the timeline's are from the first frame. Same count and the same times, frame
    by frame, up to a constant offset, mean the same indices.
    """
    count = len(reader)
    if count != info.frame_count:
        return (f"decord counts {count} frames, the file's packets {info.frame_count} "
                "(its indices would point at other frames)")
    tl = info.timeline
    got = reader.get_frame_timestamp(np.arange(count))[:, 0].astype(np.float64)
    want = (tl.pts - tl.pts[0]).astype(np.float64) * float(tl.time_base)
    got = got - got[0]
    gaps = np.diff(want)
    tol = min(_MAX_TIME_TOLERANCE_S, float(gaps.min()) / 4) if len(gaps) else _MAX_TIME_TOLERANCE_S
    # never finer than the contract's tolerance, scaled: float32 resolution at this length
    tol = max(tol, TIME_TOLERANCE_S * (1 + float(np.abs(want).max())))
    bad = np.flatnonzero(np.abs(got - want) > tol)
    if len(bad):
        i = int(bad[0])
        return (f"decord's frame {i} is at {got[i]:.6f} s, the file's at {want[i]:.6f} s "
                "(its timestamp table disagrees with the packets)")
    return None


def make() -> DecordBackend:
    """The backend, once decord imports (``pip install 'videovlm[decord]'`` or eva-decord)."""
    import decord  # noqa: F401

    return DecordBackend()
