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
waits for frames that never come), and a C++ loop cannot be interrupted from Python. So decord
runs in a child process with a time limit proportional to the file's length; the frames come back
through shared memory (no copy through a pipe), and a child that overruns is killed.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import subprocess
import sys
from collections.abc import Sequence
from multiprocessing import resource_tracker, shared_memory

import numpy as np

import videovlm
from videovlm.decode import Frame, get_backend, turn
from videovlm.errors import BackendError
from videovlm.plan import TIME_TOLERANCE_S, FrameRef
from videovlm.probe import VideoInfo

# Bound on a decode: a fixed start-up allowance plus a per-frame allowance for every frame of the
# file (decord may decode up to all of them), scaled by frame size; ~10x what it takes here.
_BASE_TIMEOUT_S = 30.0
_PER_FRAME_S_720P = 0.01
# decord keeps timestamps as float32 seconds: agreement within a quarter of the smallest frame
# interval (capped at 1 ms) identifies the frame; float32 rounding stays far below that
_MAX_TIME_TOLERANCE_S = 1e-3
# FFmpeg demuxers with no seek index: decord's timestamp seeks land on other frames there
_UNINDEXED_FORMATS = frozenset({"mpegts", "mpeg", "mpegvideo", "h264", "hevc", "m4v"})
# the same frame through decord's and PyAV's FFmpeg differs by rounding (a few levels at most);
# a different frame of real footage or of the test clips differs far more
_SAME_FRAME_MAX_DIFF = 6.0


class DecordBackend:
    """Decode planned frames with decord in a time-limited child process."""

    name = "decord"

    def decode(self, info: VideoInfo, refs: Sequence[FrameRef]) -> list[Frame]:
        """Frames for ``refs`` via one ``get_batch``, or BackendError; never hangs."""
        if not refs:
            return []
        _check_stream(info)
        h, w = info.height, info.width
        shm = shared_memory.SharedMemory(create=True, size=len(refs) * h * w * 3)
        # a fresh interpreter, not multiprocessing: spawn would re-run the caller's main script
        # and fork would copy a process that may hold threads (torch)
        proc = subprocess.Popen(
            [sys.executable, "-m", __name__],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env=_child_env(),
        )
        limit = _timeout_s(info)
        try:
            job = pickle.dumps((shm.name, info, [r.index for r in refs]))
            try:
                out, err = proc.communicate(job, timeout=limit)
            except subprocess.TimeoutExpired:
                raise BackendError(
                    f"decord did not finish {info.path} within {limit:.0f} s (it loops forever "
                    "on some damaged files); use --backend av"
                ) from None
            lines = out.decode(errors="replace").strip().splitlines()
            if proc.returncode != 0 or not lines:
                last = err.decode(errors="replace").strip().splitlines()[-1:] or ["no output"]
                error = f"the decord process failed ({last[0][-200:]})"
            else:
                error = json.loads(lines[-1])["error"]
            if error:
                raise BackendError(f"decord cannot decode {info.path}: {error}; use --backend av")
            data = np.ndarray((len(refs), h, w, 3), dtype=np.uint8, buffer=shm.buf)
            images = data.copy()
            del data  # the shared memory cannot close while a view of it exists
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            shm.close()
            shm.unlink()
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


def _child_env() -> dict[str, str]:
    """This process's environment, with videovlm importable however this process found it."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(videovlm.__file__)))
    path = os.environ.get("PYTHONPATH")
    return {**os.environ, "PYTHONPATH": root if not path else root + os.pathsep + path}


def _timeout_s(info: VideoInfo) -> float:
    scale = max(1.0, info.width * info.height / (1280 * 720))
    return _BASE_TIMEOUT_S + _PER_FRAME_S_720P * scale * info.frame_count


def _child_main() -> None:
    """In the child: check decord's table against the timeline, decode, write into shared memory.

    The job comes pickled on stdin; the last stdout line is ``{"error": null}`` on success or a
    one-line reason. The frames travel through shared memory.
    """
    shm_name, info, indices = pickle.load(sys.stdin.buffer)
    try:
        error = _decode_into(shm_name, info, indices)
    except Exception as exc:  # decord raises its own DECORDError and others: all one line
        error = _decord_reason(exc, info) or type(exc).__name__
    print(json.dumps({"error": error}), flush=True)


def _decode_into(shm_name: str, info: VideoInfo, indices: list[int]) -> str | None:
    import decord

    try:
        reader = decord.VideoReader(info.path, ctx=decord.cpu(0), num_threads=0)
    except decord.DECORDError as exc:
        return _decord_reason(exc, info)
    error = _check_table(reader, info)
    if error:
        return error
    batch = reader.get_batch(indices).asnumpy()
    shm = _attach(shm_name)
    try:
        out = np.ndarray((len(indices), info.height, info.width, 3), np.uint8, buffer=shm.buf)
        if batch.shape[1:3] == (info.height, info.width):
            out[:] = batch
        elif batch.shape[1:3] == (info.width, info.height) and info.rotation in (90, 270):
            out[:] = turn(batch, info.rotation, axes=(1, 2))  # decord did not turn it
        else:
            return (f"decord returned {batch.shape[2]}x{batch.shape[1]} frames, the display "
                    f"size is {info.width}x{info.height}")
        del out
    finally:
        shm.close()
    return None


def _decord_reason(exc: Exception, info: VideoInfo) -> str:
    """decord's error without its C++ source locations, in one line."""
    text = " ".join(str(exc).split())
    if "cannot find video stream" in text:
        return f"decord's FFmpeg build has no decoder for {info.codec}"
    text = re.sub(r"\[[0-9:]+\] |\S+\.(?:cc|h|cpp):\d+: |Check failed: ", "", text)
    return text.strip()[:160]


def _attach(name: str) -> shared_memory.SharedMemory:
    """Open the parent's shared memory without letting this process's tracker unlink it."""
    if sys.version_info >= (3, 13):
        return shared_memory.SharedMemory(name=name, track=False)
    shm = shared_memory.SharedMemory(name=name)
    resource_tracker.unregister(shm._name, "shared_memory")  # the parent owns and unlinks it
    return shm


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


if __name__ == "__main__":
    _child_main()
