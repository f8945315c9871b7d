"""What a video file is: its facts as the header claims them and as its packets show them.

The header and the content disagree on real files (edit lists, variable frame rate, truncated
files), so both are kept; the selection rule works on the content's timeline.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from fractions import Fraction

import numpy as np

from videovlm.errors import InputError


@dataclass(frozen=True, eq=False)
class Timeline:
    """Every frame's presentation time, in presentation order, from one demux pass (no decoding).

    ``pts`` are integers in ``time_base`` units, sorted ascending; ``keyframe[i]`` says whether
    frame ``i`` can be decoded without earlier frames; ``end_pts`` is the last frame's time plus
    its display duration, so ``end_pts - pts[0]`` is the duration the selection rule slices.
    """

    pts: np.ndarray  # int64, sorted
    keyframe: np.ndarray  # bool, same length
    end_pts: int
    time_base: Fraction

    def time_s(self, i: int) -> float:
        """Seconds from the first frame to frame ``i``."""
        return float((int(self.pts[i]) - int(self.pts[0])) * self.time_base)


@dataclass(frozen=True, eq=False)
class VideoInfo:
    """Facts about one video stream. Sizes are display sizes, after rotation."""

    path: str
    stream_index: int
    codec: str
    width: int
    height: int
    rotation: int  # degrees clockwise to apply to decoded frames to make them upright: 0/90/180/270
    fps: float  # average, from the content (frames / duration)
    frame_count: int  # from the content (packets with a timestamp)
    duration_s: float  # from the content: last frame's time + its display duration
    start_s: float  # presentation time of the first frame in the container, seconds
    has_audio: bool
    frame_count_header: int | None  # what the header claims (None when it claims nothing)
    duration_s_header: float | None
    fps_header: float | None
    timeline: Timeline
    # what the probe had to work around (truncated file, duplicate timestamps): said, not hidden
    warnings: tuple[str, ...] = field(default=())

    def to_dict(self) -> dict:
        """The ``video`` object of the result JSON."""
        return {
            "path": self.path,
            "duration_s": round(self.duration_s, 6),
            "fps": round(self.fps, 6),
            "frame_count": self.frame_count,
            "frame_count_header": self.frame_count_header,
            "duration_s_header": (
                None if self.duration_s_header is None else round(self.duration_s_header, 6)
            ),
            "width": self.width,
            "height": self.height,
            "rotation": self.rotation,
            "codec": self.codec,
            "start_s": round(self.start_s, 6),
            "has_audio": self.has_audio,
            "stream_index": self.stream_index,
            "warnings": list(self.warnings),
        }


# Decoding the first frame is the only way PyAV shows the display matrix (rotation) and proves the
# stream decodes at all; it must come out within this many packets or the file is not usable.
_FIRST_FRAME_PACKETS = 300


def probe(path: str | os.PathLike[str]) -> VideoInfo:
    """Read a video's facts and its frame timeline; raise InputError for anything unreadable.

    One demux pass over the video stream's packets gives every frame's timestamp and keyframe
    flag without decoding; only the first frame is decoded, for its rotation and decoded size
    and to prove that the stream decodes. A truncated file keeps the frames whose packets are
    complete and whose display-order predecessors all survived (with a warning), so every index
    stays true; a file with no complete frame is an InputError.
    """
    import av

    path = os.fspath(path)
    _check_file(path)
    try:
        container = av.open(path, metadata_errors="ignore")
    except (av.FFmpegError, OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: not a readable video file ({_reason(exc)})") from None
    with container:
        stream = _video_stream(container, path)
        has_audio = len(container.streams.audio) > 0
        stream_index = stream.index  # read while open: PyAV's stream is gone after close
        tb = stream.time_base
        if tb is None or tb <= 0:
            raise InputError(
                f"{path}: the video stream has no time base; remux it (ffmpeg -c copy)"
            )
        pts, keys, durations, first, notes, cut = _demux(container, stream, path)
        header = _header_facts(container, stream)

    if not pts:
        raise InputError(f"{path}: the video stream holds no complete frame")
    decode_pts = np.asarray(pts, dtype=np.int64)
    order = np.argsort(decode_pts, kind="stable")
    if header["frames"] is not None and header["frames"] > len(pts) + cut.discarded:
        cut.cut = True
    keep = _complete_prefix(decode_pts, order, cut.cut)
    if keep < len(order):
        notes.append(
            f"the file is cut off: its last {len(order) - keep} frames in display order lack "
            f"frames they follow; kept the first {keep}"
        )
        order = order[:keep]
    pts_arr = decode_pts[order]
    key_arr = np.asarray(keys, dtype=bool)[order]
    dur_arr = np.asarray(durations, dtype=np.int64)[order]
    uniq, first_of = np.unique(pts_arr, return_index=True)
    if len(uniq) < len(pts_arr):
        notes.append(f"{len(pts_arr) - len(uniq)} frames share a timestamp with another; kept once")
        key_arr = np.logical_or.reduceat(key_arr, first_of)
        dur_arr = dur_arr[first_of]
        pts_arr = uniq
    end_pts = int(pts_arr[-1]) + _last_duration(pts_arr, dur_arr, header["fps"], tb)
    timeline = Timeline(pts=pts_arr, keyframe=key_arr, end_pts=end_pts, time_base=tb)

    rotation = (-int(first.rotation)) % 360  # PyAV: counter-clockwise; ours: clockwise to apply
    if rotation % 90:
        notes.append(f"rotation {rotation} degrees is not a multiple of 90; ignored")
        rotation = 0
    w, h = first.width, first.height
    if rotation in (90, 270):
        w, h = h, w
    duration_s = float((end_pts - int(pts_arr[0])) * tb)
    count = len(pts_arr)
    return VideoInfo(
        path=path,
        stream_index=stream_index,
        codec=header["codec"],
        width=w,
        height=h,
        rotation=rotation,
        fps=count / duration_s if duration_s > 0 else 0.0,
        frame_count=count,
        duration_s=duration_s,
        start_s=float(int(pts_arr[0]) * tb),
        has_audio=has_audio,
        frame_count_header=header["frames"],
        duration_s_header=header["duration"],
        fps_header=header["fps"],
        timeline=timeline,
        warnings=tuple(notes),
    )


def _check_file(path: str) -> None:
    """The failures the OS can name, said plainly before FFmpeg words them its own way."""
    if not os.path.exists(path):
        raise InputError(f"{path}: no such file")
    if os.path.isdir(path):
        raise InputError(f"{path}: is a directory, not a video file (batch takes folders)")
    if not os.access(path, os.R_OK):
        raise InputError(f"{path}: permission denied")
    if os.path.getsize(path) == 0:
        raise InputError(f"{path}: the file is empty (0 bytes)")


def _reason(exc: BaseException) -> str:
    text = getattr(exc, "strerror", None) or str(exc)
    return " ".join(str(text).split())


def _video_stream(container, path: str):
    """The stream a player would show: the best video stream that is not cover art."""
    videos = [
        s for s in container.streams.video
        if not (s.disposition & s.disposition.__class__.attached_pic)
    ]
    if not videos:
        kinds = sorted({s.type for s in container.streams}) or ["none"]
        raise InputError(
            f"{path}: has no video stream (streams: {', '.join(kinds)}); give a video file"
        )
    best = container.streams.best("video")
    return best if best in videos else videos[0]


def _demux(container, stream, path: str):
    """One pass over the video packets: timestamps, keyframe flags, durations, first frame."""
    import av

    cut = _Cut()
    pts: list[int] = []
    keys: list[bool] = []
    durations: list[int] = []
    notes: list[str] = []
    first = None
    fed = 0
    decode_error: str | None = None
    dropped = 0
    try:
        for packet in container.demux(stream):
            if packet.size == 0:
                continue  # the demuxer's end-of-stream marker
            if packet.is_corrupt or packet.is_discard:
                dropped += packet.is_corrupt
                cut.discarded += packet.is_discard
                continue
            ts = packet.pts if packet.pts is not None else packet.dts
            if ts is None:
                dropped += 1
                continue
            if first is None and fed < _FIRST_FRAME_PACKETS:
                fed += 1
                try:
                    frames = stream.decode(packet)
                except av.FFmpegError as exc:
                    frames, decode_error = [], _reason(exc)
                if frames:
                    first = frames[0]
            pts.append(int(ts))
            keys.append(bool(packet.is_keyframe))
            durations.append(int(packet.duration or 0))
    except av.FFmpegError as exc:
        if not pts:
            raise InputError(f"{path}: not a readable video file ({_reason(exc)})") from None
        notes.append(f"stopped reading at a damaged packet ({_reason(exc)}); later frames skipped")
        cut.cut = True
    if first is None and pts:
        try:
            frames = stream.decode(None)  # drain a decoder that holds frames back (B-frames)
        except av.FFmpegError as exc:
            frames, decode_error = [], _reason(exc)
        first = frames[0] if frames else None
    if first is None and pts:
        why = f" ({decode_error})" if decode_error else ""
        raise InputError(
            f"{path}: the {stream.codec_context.name} video stream does not decode{why}"
        )
    if dropped:
        notes.append(f"{dropped} incomplete or untimed packets skipped (truncated file?)")
        cut.cut = True
    return pts, keys, durations, first, notes, cut


@dataclass
class _Cut:
    """What the demux pass saw of a file that ends early."""

    cut: bool = False  # damaged or incomplete packets, or a demux error
    discarded: int = 0  # packets the container says to decode but not show (edit lists)


def _complete_prefix(decode_pts: np.ndarray, order: np.ndarray, cut: bool) -> int:
    """How many frames, in display order, are certainly all there.

    A file cut off in decode order loses the frames that would have come after the cut; with
    B-frames some of them display *before* frames that made it (a P-frame whose B-frames are
    lost). Such a P-frame would get a wrong index, so frames are kept only up to the reorder
    depth before the cut. MPEG-TS and friends flag nothing when cut: a reordering stream whose
    last decoded frames end in a gap wider than its frame interval is taken as cut too.
    """
    m = len(decode_pts)
    rank = np.empty(m, dtype=np.int64)
    rank[order] = np.arange(m)
    depth = int(max(0, int((np.arange(m) - rank).max())))
    if depth == 0 or m < 3:
        return m
    if not cut:
        last = int(np.argmax(decode_pts))
        ordered = decode_pts[order]
        gaps = np.diff(ordered)
        hole = last >= m - 1 - depth and gaps[-1] > 1.5 * float(np.median(gaps))
        if not hole:
            return m
    return m - depth


def _header_facts(container, stream) -> dict:
    """What the header claims, kept apart from what the packets show."""
    tb = stream.time_base
    frames = int(stream.frames) if stream.frames else None
    if stream.duration:
        duration = float(stream.duration * tb)
    elif container.duration:
        duration = container.duration / 1_000_000
    else:
        duration = None
    rate = stream.average_rate or stream.guessed_rate
    codec = stream.codec_context.codec
    return {
        "frames": frames,
        "duration": duration,
        "fps": float(rate) if rate else None,
        "codec": codec.canonical_name or codec.name,
    }


def _last_duration(pts: np.ndarray, durations: np.ndarray, fps: float | None, tb: Fraction) -> int:
    """How long the last frame stays on screen, in time-base units.

    The packet says so in most containers; otherwise the typical frame interval of this file,
    else the header's frame rate, else one tick (a single frame of unknown length).
    """
    if durations[-1] > 0:
        return int(durations[-1])
    if len(pts) > 1:
        return max(1, int(np.median(np.diff(pts))))
    if fps:
        return max(1, round(1 / (fps * tb)))
    return 1
