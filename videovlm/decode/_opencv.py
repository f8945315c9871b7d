"""The OpenCV backend (``cv2.VideoCapture``), opt-in with ``--backend opencv``.

OpenCV numbers frames as ``time x fps``, which is only right on constant-frame-rate files, and its
``CAP_PROP_POS_FRAMES`` seek lands near, not on, the asked frame. So this backend never trusts a
frame number: after every ``grab()`` it reads the frame's presentation time
(``CAP_PROP_POS_MSEC``), finds that time in the probed timeline, and decodes forward (``grab()``,
cheap: no colour conversion) until the planned frame, converting only that one (``retrieve()``).
It seeks only when that is cheaper than decoding forward, and backs off when a seek overshoots.
OpenCV's own auto-rotation is switched off and the probed rotation applied here, so frames are
turned exactly once; OpenCV's BGR becomes RGB.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from videovlm.decode import Frame, turn
from videovlm.errors import BackendError
from videovlm.plan import TIME_TOLERANCE_S, FrameRef
from videovlm.probe import VideoInfo

# OpenCV's seek asks FFmpeg for a point this many frames before the target (cap_ffmpeg_impl.hpp)
_CV_SEEK_BACKOFF = 16
_MAX_SEEK_TRIES = 4
# OpenCV reports times in milliseconds as doubles
_TIME_TOLERANCE_MS = TIME_TOLERANCE_S * 1000


class OpenCVBackend:
    """Decode planned frames with ``cv2.VideoCapture``, each one verified by its time."""

    name = "opencv"

    def decode(self, info: VideoInfo, refs: Sequence[FrameRef]) -> list[Frame]:
        """Frames for ``refs`` (sorted by index), decoding forward and seeking where it pays."""
        if not refs:
            return []
        reader = _Reader(info)
        try:
            return [reader.frame(ref) for ref in refs]
        finally:
            reader.close()


class _Reader:
    """One ``VideoCapture`` and where it stands: the index of the frame grabbed last."""

    def __init__(self, info: VideoInfo) -> None:
        import cv2

        self.cv2 = cv2
        self.info = info
        tl = info.timeline
        self.keys = tl.entry_points()
        origin = _stream_start(info)
        # each frame's time as OpenCV reports it: ms from the stream's start_time
        self.ms = (tl.pts - origin).astype(np.float64) * float(tl.time_base) * 1000.0
        self.cap = None
        self.fps = 0.0
        self.pos = -1
        self._open()

    def _open(self) -> None:
        cv2 = self.cv2
        if self.cap is not None:
            self.cap.release()
        self.cap = cv2.VideoCapture(self.info.path, cv2.CAP_FFMPEG)
        if not self.cap.isOpened():
            raise BackendError(
                f"OpenCV cannot open {self.info.path} (its FFmpeg build may lack the "
                f"{self.info.codec} decoder); use --backend av"
            )
        self.cap.set(cv2.CAP_PROP_ORIENTATION_AUTO, 0)  # turned here, from the probe, once
        self.fps = self.cap.get(cv2.CAP_PROP_FPS) or self.info.fps
        self.pos = -1

    def close(self) -> None:
        if self.cap is not None:
            self.cap.release()
            self.cap = None

    def frame(self, ref: FrameRef) -> Frame:
        """Grab up to ``ref``'s frame, seeking first when the jump is long; convert only it."""
        target = ref.index
        if target <= self.pos or self._seek_pays(target):
            self._seek_before(target)
        while self.pos < target:
            self._grab(target)
        if self.pos != target:  # decoding forward skipped over the target: start over
            self._open()
            while self.pos < target:
                self._grab(target)
            if self.pos != target:
                raise BackendError(
                    f"OpenCV never returns frame {target} of {self.info.path} (it jumps from "
                    f"an earlier frame to frame {self.pos}); use --backend av"
                )
        ok, bgr = self.cap.retrieve()
        if not ok or bgr is None:
            raise BackendError(f"OpenCV cannot convert frame {target} of {self.info.path}")
        rgb = self.cv2.cvtColor(bgr, self.cv2.COLOR_BGR2RGB)
        if self.info.rotation:
            rgb = np.ascontiguousarray(turn(rgb, self.info.rotation))
        return Frame(ref.index, ref.time_s, rgb)

    def _grab(self, target: int) -> None:
        if not self.cap.grab():
            if self.pos < 0:
                raise BackendError(
                    f"OpenCV cannot decode the {self.info.codec} video of {self.info.path} "
                    "(its FFmpeg build may lack that decoder); use --backend av"
                )
            raise BackendError(
                f"OpenCV stopped after frame {self.pos} of {self.info.path} before frame "
                f"{target} (of {self.info.frame_count}); use --backend av"
            )
        self.pos = self._where()

    def _where(self) -> int:
        """The timeline index of the frame grabbed last, from its reported time."""
        ms = self.cap.get(self.cv2.CAP_PROP_POS_MSEC)
        i = int(np.clip(np.searchsorted(self.ms, ms), 0, len(self.ms) - 1))
        for j in (i, i - 1):
            if 0 <= j < len(self.ms) and abs(self.ms[j] - ms) <= _TIME_TOLERANCE_MS:
                return j
        raise BackendError(
            f"OpenCV returned a frame at {ms:.3f} ms that is not in {self.info.path}'s "
            "timeline (it cannot be identified); use --backend av"
        )

    def _key_before(self, index: int) -> int:
        return int(self.keys[max(0, np.searchsorted(self.keys, index, side="right") - 1)])

    def _seek_pays(self, target: int) -> bool:
        """Whether seeking decodes fewer frames than grabbing forward from where we stand.

        OpenCV seeks to the keyframe before ``target - 16`` frames and decodes forward from it,
        so a target just after a keyframe costs a whole previous GOP: count that honestly.
        """
        if self._key_before(target) <= self.pos:
            return False  # the target's keyframe is behind us: forward is never worse
        landing = self._key_before(max(0, target - _CV_SEEK_BACKOFF))
        return target - landing < target - self.pos

    def _seek_before(self, target: int) -> None:
        """Seek so the next grab is at or before ``target``; start over when seeks overshoot."""
        cv2 = self.cv2
        ask = round(float(self.ms[target]) / 1000.0 * self.fps)  # OpenCV's number for that time
        for _ in range(_MAX_SEEK_TRIES):
            self.cap.set(cv2.CAP_PROP_POS_FRAMES, max(0, ask))
            if not self.cap.grab():
                break
            self.pos = self._where()
            if self.pos <= target:
                return
            ask -= (self.pos - target) + _CV_SEEK_BACKOFF
            if ask <= 0:
                break
        self._open()


def _stream_start(info: VideoInfo) -> int:
    """The stream's ``start_time`` (OpenCV's zero for CAP_PROP_POS_MSEC), in time-base units.

    Usually the first frame's time; it differs on files with edit lists or negative timestamps,
    so it is read from the container rather than assumed. OpenCV decodes the first video stream
    and cannot be told otherwise here: a file whose probed stream is another one is refused.
    """
    import av

    try:
        with av.open(info.path, metadata_errors="ignore") as container:
            first_video = container.streams.video[0].index
            start = container.streams[info.stream_index].start_time
    except (av.FFmpegError, OSError, IndexError):
        first_video, start = info.stream_index, None
    if first_video != info.stream_index:
        raise BackendError(
            f"OpenCV would decode video stream {first_video} of {info.path}, not stream "
            f"{info.stream_index} (the one sampled); use --backend av"
        )
    return int(info.timeline.pts[0]) if start is None else int(start)


def make() -> OpenCVBackend:
    """The backend, once ``cv2`` imports (opencv-python-headless)."""
    import cv2  # noqa: F401

    return OpenCVBackend()
