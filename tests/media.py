"""Synthetic test videos whose frames carry their own index in their pixels.

A test checks the frame it got from the pixels, not from the decoder's word: every frame shows its
index as a grid of big black/white cells (robust to lossy compression at any size from 64x48 up),
framed by a fixed sync row and a checksum so that a frame read in the wrong orientation, or a
frame that is not one of ours, fails loudly instead of yielding a plausible number. A colour band
(red left, blue right) catches RGB/BGR mix-ups.

Everything is encoded with PyAV's bundled encoders (no system ffmpeg): libx264, libx265,
libvpx-vp9, libsvtav1, mpeg4, mjpeg. Subtitle streams are muxed as the packets FFmpeg's own
encoders would write (mov_text: a 2-byte length and UTF-8 text; SubRip and WebVTT in Matroska:
the text; ASS: the events of an .ass script, copied with its header by PyAV's ass demuxer).

Layout of an upright frame (W x H):
    top 3/4: a grid of 4 rows x 6 columns of cells
        row 0        sync pattern 1 0 1 1 0 0 (asymmetric under any rotation or mirror)
        rows 1..3    18 bits, most significant first: 16 bits of index, 2 bits of checksum
    bottom 1/4: left half pure red, right half pure blue
"""

from __future__ import annotations

import os
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

os.environ.setdefault("SVT_LOG", "1")  # SVT-AV1: errors only, not its banner on every encode

GRID_ROWS, GRID_COLS = 4, 6
SYNC = (1, 0, 1, 1, 0, 0)
INDEX_BITS = 16
MAX_INDEX = (1 << INDEX_BITS) - 1

# Short codec name -> (PyAV encoder, default pixel format, encoder options)
ENCODERS: dict[str, tuple[str, str, dict[str, str]]] = {
    "h264": ("libx264", "yuv420p", {"preset": "ultrafast", "crf": "18"}),
    "hevc": ("libx265", "yuv420p", {"preset": "ultrafast", "crf": "18",
                                    "x265-params": "log-level=error"}),
    "vp9": ("libvpx-vp9", "yuv420p", {"deadline": "realtime", "cpu-used": "8", "crf": "20",
                                      "b": "0"}),
    "av1": ("libsvtav1", "yuv420p", {"preset": "12", "crf": "20"}),
    "mpeg4": ("mpeg4", "yuv420p", {"qscale": "2"}),
    "mjpeg": ("mjpeg", "yuvj420p", {}),
}

# Container suffix -> audio encoder used when the file gets an audio stream
_AUDIO = {".mp4": "aac", ".mov": "aac", ".mkv": "aac", ".ts": "aac", ".webm": "libopus",
          ".avi": "pcm_s16le"}


@dataclass(frozen=True)
class Track:
    """A subtitle stream for :func:`make_video`: its codec (``mov_text`` in MP4/MOV; ``subrip``,
    ``webvtt`` or ``ass`` in Matroska), language (ISO 639-2, as containers store it) and cues
    ``(start_s, end_s, text)`` in seconds from the first frame."""

    codec: str
    cues: Sequence[tuple[float, float, str]]
    language: str | None = None
    default: bool = False
    extra: dict[str, str] = field(default_factory=dict)


ASS_HEADER = """[Script Info]
ScriptType: v4.00+
PlayResX: 384
PlayResY: 288

[V4+ Styles]
Format: Name, Fontname, Fontsize, PrimaryColour, SecondaryColour, OutlineColour, BackColour, \
Bold, Italic, Underline, StrikeOut, ScaleX, ScaleY, Spacing, Angle, BorderStyle, Outline, \
Shadow, Alignment, MarginL, MarginR, MarginV, Encoding
Style: Default,Arial,16,&Hffffff,&Hffffff,&H0,&H0,0,0,0,0,100,100,0,0,1,1,0,2,10,10,10,0

[Events]
Format: Layer, Start, End, Style, Name, MarginL, MarginR, MarginV, Effect, Text
""".replace("\\\n", "")


def ass_time(t: float) -> str:
    """``H:MM:SS.cc``, ASS's clock."""
    cs = round(t * 100)
    return f"{cs // 360000}:{cs // 6000 % 60:02d}:{cs // 100 % 60:02d}.{cs % 100:02d}"


def ass_script(cues: Sequence[tuple[float, float, str]]) -> str:
    """An .ass script with ``cues`` as Dialogue events (their text may hold ASS markup)."""
    lines = [f"Dialogue: 0,{ass_time(a)},{ass_time(b)},Default,,0,0,0,,{text}"
             for a, b, text in cues]
    return ASS_HEADER + "\n".join(lines) + "\n"


def _add_subtitle_streams(out, path: Path, tracks: Sequence[Track]) -> list[tuple]:
    """A subtitle stream of ``out`` per track, added before anything is muxed (the header
    names every stream); for ASS, the open script it copies its header and events from."""
    added = []
    for k, track in enumerate(tracks):
        src = None
        if track.codec == "ass":
            script = path.with_name(f".{path.stem}.{k}.ass")
            script.write_text(ass_script(track.cues), encoding="utf-8")
            src = av.open(str(script))
            script.unlink()  # the demuxer has read it whole
            stream = out.add_stream_from_template(src.streams.subtitles[0])
        else:
            stream = out.add_mux_stream(track.codec)
            stream.time_base = Fraction(1, 1000)
        if track.language:
            stream.metadata["language"] = track.language
        for key, value in track.extra.items():
            stream.metadata[key] = value
        if track.default:
            stream.disposition = av.stream.Disposition.default
        added.append((stream, track, src))
    return added


def _mux_subtitles(out, added: Sequence[tuple], start_s: float) -> None:
    """Each track's cues in its stream, ``start_s`` later (the container's clock, on which the
    first frame is at ``start_s``)."""
    ms = Fraction(1, 1000)
    for stream, track, src in added:
        if src is not None:
            shift = round(Fraction(start_s) / src.streams.subtitles[0].time_base)
            for packet in src.demux(src.streams.subtitles[0]):
                if packet.size:
                    packet.pts += shift
                    packet.dts = packet.pts
                    packet.stream = stream
                    out.mux(packet)
            continue
        for a, b, text in track.cues:
            data = text.encode()
            if track.codec == "mov_text":
                data = struct.pack(">H", len(data)) + data
            packet = av.Packet(data)
            packet.stream = stream
            packet.time_base = ms
            packet.pts = packet.dts = round((Fraction(start_s) + Fraction(a)) * 1000)
            packet.duration = round(Fraction(b - a) * 1000)
            out.mux(packet)


def _checksum(index: int) -> int:
    return (bin(index).count("1") + (index >> 3)) & 3


def _bits(index: int) -> list[int]:
    value = (index << 2) | _checksum(index)
    return [(value >> (17 - b)) & 1 for b in range(18)]


def _edges(length: int, parts: int) -> list[int]:
    return [round(length * k / parts) for k in range(parts + 1)]


def draw_frame(index: int, size: tuple[int, int]) -> np.ndarray:
    """The upright RGB picture of frame ``index`` at display ``size`` (width, height)."""
    if not 0 <= index <= MAX_INDEX:
        raise ValueError(f"index {index} outside 0..{MAX_INDEX}")
    w, h = size
    img = np.empty((h, w, 3), dtype=np.uint8)
    grid_h = h * 3 // 4
    ys, xs = _edges(grid_h, GRID_ROWS), _edges(w, GRID_COLS)
    cells = list(SYNC) + _bits(index)
    for r in range(GRID_ROWS):
        for c in range(GRID_COLS):
            img[ys[r]:ys[r + 1], xs[c]:xs[c + 1]] = 255 * cells[r * GRID_COLS + c]
    img[grid_h:, : w // 2] = (255, 0, 0)
    img[grid_h:, w // 2 :] = (0, 0, 255)
    return img


def read_index(image: np.ndarray, *, check_colour: bool = True) -> int:
    """Recover the frame index drawn by :func:`draw_frame` from an upright RGB frame.

    Raises ValueError when the sync row or checksum does not match (wrong orientation, wrong
    picture, corrupt decode) or, with ``check_colour``, when red and blue are swapped.
    """
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected an H x W x 3 uint8 image, got {image.shape} {image.dtype}")
    h, w = image.shape[:2]
    grid_h = h * 3 // 4
    ys, xs = _edges(grid_h, GRID_ROWS), _edges(w, GRID_COLS)
    lum = image.astype(np.float32).mean(axis=2)
    cells = []
    for r in range(GRID_ROWS):
        for c in range(GRID_COLS):
            y0, y1, x0, x1 = ys[r], ys[r + 1], xs[c], xs[c + 1]
            dy, dx = (y1 - y0) // 4, (x1 - x0) // 4
            cells.append(int(lum[y0 + dy : y1 - dy, x0 + dx : x1 - dx].mean() > 127.5))
    if tuple(cells[:GRID_COLS]) != SYNC:
        raise ValueError(f"sync row {cells[:GRID_COLS]} != {list(SYNC)}: not upright or not ours")
    value = 0
    for bit in cells[GRID_COLS:]:
        value = (value << 1) | bit
    index, check = value >> 2, value & 3
    if check != _checksum(index):
        raise ValueError(f"checksum mismatch for index {index}: corrupt or misread frame")
    if check_colour:
        band = image[grid_h + (h - grid_h) // 4 : h - (h - grid_h) // 4].astype(np.int32)
        left = band[:, : w // 4].reshape(-1, 3).mean(axis=0)
        right = band[:, 3 * w // 4 :].reshape(-1, 3).mean(axis=0)
        if not (left[0] > left[2] + 60 and right[2] > right[0] + 60):
            raise ValueError(f"colour band wrong (left {left.round()}, right {right.round()}): "
                             "red/blue swapped or not RGB")
    return index


def frame_times(n_frames: int, fps: float, vfr_gap: tuple[int, float] | None = None,
                start_pts_s: float = 0.0) -> list[Fraction]:
    """Presentation times (seconds, as written) of the frames :func:`make_video` writes."""
    rate = Fraction(fps).limit_denominator(1001)
    tick = 1 / rate
    start = round(Fraction(start_pts_s) / tick) * tick
    times = []
    for i in range(n_frames):
        t = start + i * tick
        if vfr_gap is not None and i > vfr_gap[0]:
            t += round(Fraction(vfr_gap[1]) / tick) * tick - tick
        times.append(t)
    return times


def make_video(
    path: str | Path,
    *,
    codec: str = "h264",
    n_frames: int = 30,
    fps: float = 30,
    size: tuple[int, int] = (64, 48),
    gop: int | None = None,
    bframes: int | None = None,
    rotation: int = 0,
    start_pts_s: float = 0.0,
    vfr_gap: tuple[int, float] | None = None,
    extra_stream_first: bool = False,
    pix_fmt: str | None = None,
    audio: bool = False,
    options: dict[str, str] | None = None,
    faststart: bool = False,
    subtitles: Sequence[Track] = (),
) -> Path:
    """Write a video whose frame ``i`` shows index ``i`` (see :func:`read_index`); return its path.

    ``size`` is the upright display size (width, height); with ``rotation`` (degrees clockwise a
    player must turn the stored picture: 0/90/180/270) the stored picture is turned the other way
    and a display matrix is written, so only a reader that applies the rotation sees the index.
    ``vfr_gap=(i, seconds)`` keeps frame ``i`` on screen for ``seconds`` (a frozen stretch: variable
    frame rate); ``start_pts_s`` makes the first frame's presentation time non-zero (both rounded
    to whole frame intervals). ``extra_stream_first`` puts an audio stream before the video (the
    video is then stream 1); ``audio`` adds one after it. The container is chosen by the suffix
    (.mp4 .mov .mkv .webm .avi .ts). ``options`` override the encoder options. ``faststart`` puts
    an MP4's index (moov) first, so a truncated copy stays partly decodable. ``subtitles``
    are muxed as subtitle streams after the video (and audio), timed from the first frame.
    """
    path = Path(path)
    if codec not in ENCODERS:
        raise ValueError(f"codec {codec!r} not one of {sorted(ENCODERS)}")
    if rotation % 90 or rotation not in (0, 90, 180, 270):
        raise ValueError(f"rotation must be 0, 90, 180 or 270, got {rotation}")
    if n_frames - 1 > MAX_INDEX:
        raise ValueError(f"at most {MAX_INDEX + 1} frames")
    encoder, default_fmt, default_opts = ENCODERS[codec]
    if pix_fmt is None and codec in ("h264", "hevc") and (size[0] % 2 or size[1] % 2):
        default_fmt = "yuv444p"  # x264/x265 refuse odd sizes in 4:2:0
    opts = {**default_opts, **(options or {})}
    if gop is not None and codec in ("h264", "hevc"):
        key = "x264-params" if codec == "h264" else "x265-params"
        extra = "scenecut=0" if codec == "h264" else "scenecut=0:open-gop=0"
        opts[key] = f"{opts[key]}:{extra}" if key in opts else extra
    rate = Fraction(fps).limit_denominator(1001)
    tick = 1 / rate
    times = frame_times(n_frames, fps, vfr_gap, start_pts_s)
    w, h = size
    stored_w, stored_h = (h, w) if rotation in (90, 270) else (w, h)
    suffix = path.suffix.lower()
    container_opts = {"movflags": "faststart"} if faststart else {}
    with av.open(str(path), mode="w", options=container_opts) as out:
        audio_stream = None
        if extra_stream_first:
            audio_stream = _add_audio(out, suffix)
        stream = out.add_stream(encoder, rate=rate, options=opts)
        stream.width, stream.height = stored_w, stored_h
        stream.pix_fmt = pix_fmt or default_fmt
        stream.codec_context.time_base = tick
        if gop is not None:
            stream.codec_context.gop_size = gop
        if bframes is not None:
            stream.codec_context.max_b_frames = bframes
        if rotation:
            # set_display_rotation takes counter-clockwise degrees; the player turns clockwise
            stream.set_display_rotation(-rotation)
        if audio and audio_stream is None:
            audio_stream = _add_audio(out, suffix)
        subtitle_streams = _add_subtitle_streams(out, path, subtitles)
        for i, t in enumerate(times):
            upright = draw_frame(i, size)
            stored = np.ascontiguousarray(np.rot90(upright, k=rotation // 90))
            frame = av.VideoFrame.from_ndarray(stored, format="rgb24")
            frame = frame.reformat(format=stream.pix_fmt)
            frame.pts = round(t / tick)
            frame.time_base = tick
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
        if audio_stream is not None:
            end = times[-1] + tick if times else Fraction(0)
            _write_audio(out, audio_stream, float(times[0]) if times else 0.0, float(end))
        _mux_subtitles(out, subtitle_streams, float(times[0]) if times else 0.0)
    for _, _, src in subtitle_streams:  # after the muxer is done with the streams they lent
        if src is not None:
            src.close()
    return path


SHOT_SIZE = (160, 120)
SHOT_INSET = (48, 36)
SHOT_COLOURS = [(200, 40, 40), (30, 160, 60), (40, 60, 200), (220, 200, 40), (120, 30, 140)]


def make_shots(
    path: Path, cuts: list[int], n_frames: int, fps: int = 25, start_pts_s: float = 0.0,
    slow_after: int | None = None,
) -> Path:
    """A clip of shots starting at ``cuts``: each a coloured, slowly moving gradient with the
    frame's index drawn in a corner (:func:`draw_frame`), so a decoded frame names itself.
    ``slow_after=i``: frames after ``i`` stay three ticks each (variable frame rate)."""
    tick = Fraction(1, fps)
    x = np.arange(SHOT_SIZE[0])[None, :, None]
    y = np.arange(SHOT_SIZE[1])[:, None, None]
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=fps, options={"preset": "ultrafast", "crf": "18"})
        stream.width, stream.height, stream.pix_fmt = *SHOT_SIZE, "yuv420p"
        stream.codec_context.time_base = tick
        for i in range(n_frames):
            shot = sum(1 for c in cuts if c <= i) - 1
            colour = np.array(SHOT_COLOURS[shot % len(SHOT_COLOURS)], dtype=np.float32)
            shade = 0.6 + 0.4 * (((x + y + i) % 80) / 80.0)  # gentle motion inside a shot
            img = (colour * shade).clip(0, 255).astype(np.uint8)
            img[: SHOT_INSET[1], : SHOT_INSET[0]] = draw_frame(i, SHOT_INSET)
            frame = av.VideoFrame.from_ndarray(img, format="rgb24").reformat(format="yuv420p")
            ticks = i if slow_after is None or i <= slow_after else i + 2 * (i - slow_after)
            frame.pts = ticks + round(start_pts_s * fps)
            frame.time_base = tick
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path


def _add_audio(out: av.container.OutputContainer, suffix: str):
    codec = _AUDIO.get(suffix, "aac")
    rate = 48000
    stream = out.add_stream(codec, rate=rate)
    stream.layout = "mono"
    return stream


def _write_audio(out, stream, start_s: float, end_s: float) -> None:
    """A quiet 440 Hz tone covering the video's time span."""
    rate = stream.codec_context.sample_rate
    fmt = stream.codec_context.format.name
    chunk = stream.codec_context.frame_size or 1024
    total = int((end_s - start_s) * rate)
    pts = int(start_s * rate)
    for s in range(0, max(total, chunk), chunk):
        t = (np.arange(s, s + chunk) / rate).astype(np.float32)
        wave = (0.1 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
        data = (wave * 32767).astype(np.int16) if fmt.startswith("s16") else wave
        data = data[None, :]
        frame = av.AudioFrame.from_ndarray(data, format=fmt, layout="mono")
        frame.sample_rate = rate
        frame.pts = pts + s
        frame.time_base = Fraction(1, rate)
        out.mux(stream.encode(frame))
    out.mux(stream.encode(None))


def make_text(path: str | Path, text: str = "this is not a video\n") -> Path:
    """A text file with a video's name: must be refused, not decoded."""
    path = Path(path)
    path.write_text(text, encoding="utf-8")
    return path


def make_random(path: str | Path, n_bytes: int = 20000, seed: int = 0) -> Path:
    """Random bytes with a video's name."""
    path = Path(path)
    path.write_bytes(np.random.default_rng(seed).integers(0, 256, n_bytes, np.uint8).tobytes())
    return path


def make_audio_only(path: str | Path, seconds: float = 1.0) -> Path:
    """A file with an audio stream and no video stream."""
    path = Path(path)
    with av.open(str(path), mode="w") as out:
        stream = _add_audio(out, path.suffix.lower())
        _write_audio(out, stream, 0.0, seconds)
    return path


def truncate(src: str | Path, dst: str | Path, keep: float) -> Path:
    """Copy the first ``keep`` fraction of ``src``'s bytes to ``dst`` (a cut-off download)."""
    data = Path(src).read_bytes()
    dst = Path(dst)
    dst.write_bytes(data[: int(len(data) * keep)])
    return dst


def indices_of(frames: Sequence[np.ndarray]) -> list[int]:
    """The drawn index of each upright frame."""
    return [read_index(f) for f in frames]


def shift_streams(src: str | Path, dst: str | Path, video_s: float, audio_s: float) -> Path:
    """``src``'s pictures and sound in ``dst`` (MKV), the video's packets copied with their
    timestamps moved by ``video_s``, the audio decoded and stored as 16-bit PCM from ``audio_s``
    on: PCM has no encoder delay (AAC's priming samples), so each stream starts exactly where
    the test put it, and two files shifted differently hold the very same samples."""
    dst = Path(dst)
    with av.open(str(src)) as inp, av.open(str(dst), "w") as out:
        video_in = inp.streams.video[0]
        video = out.add_stream_from_template(video_in)
        audio_in = inp.streams.audio[0]
        rate = audio_in.rate
        audio = out.add_stream("pcm_s16le", rate=rate)
        audio.layout = "mono"
        resampler = av.AudioResampler(format="s16", layout="mono", rate=rate)
        written = 0
        for packet in inp.demux(video_in, audio_in):
            if packet.dts is None:
                continue
            if packet.stream.type == "video":
                delta = round(Fraction(video_s).limit_denominator(1000) / packet.time_base)
                packet.pts += delta
                packet.dts += delta
                packet.stream = video
                out.mux(packet)
                continue
            for frame in packet.decode():
                for pcm in resampler.resample(frame):
                    pcm.pts = round(audio_s * rate) + written
                    pcm.time_base = Fraction(1, rate)
                    written += pcm.samples
                    out.mux(audio.encode(pcm))
        out.mux(audio.encode(None))
    return dst


# --- Headers that lie: byte edits of generated clips -------------------------------------------

_MP4_CONTAINERS = frozenset({b"moov", b"trak", b"mdia", b"minf", b"stbl", b"edts"})


def mp4_box(data: bytes | bytearray, path: str, occurrence: int = 0) -> int:
    """Offset of the payload of box ``path`` (``"moov/trak/mdia/mdhd"``) in an MP4's bytes.

    The ``occurrence``-th match in file order (e.g. the second ``trak``); only the boxes an
    edit needs are descended into. Raises KeyError when there is no such box.
    """
    want = [p.encode() for p in path.split("/")]
    found: list[int] = []

    def walk(start: int, end: int, depth: int) -> None:
        at = start
        while at + 8 <= end:
            size, kind = struct.unpack_from(">I4s", data, at)
            head = 8
            if size == 1:
                size, head = struct.unpack_from(">Q", data, at + 8)[0], 16
            elif size == 0:
                size = end - at
            if size < head:
                return
            if kind == want[depth]:
                if depth == len(want) - 1:
                    found.append(at + head)
                elif kind in _MP4_CONTAINERS:
                    walk(at + head, at + size, depth + 1)
            at += size

    walk(0, len(data), 0)
    if len(found) <= occurrence:
        raise KeyError(path)
    return found[occurrence]


def patch_mp4(src: str | Path, dst: str | Path, edits: Sequence[tuple[str, int, str, float]]
              ) -> Path:
    """``src`` with fields overwritten in place: each edit is (box path, byte offset inside the
    box's payload, struct format, value), e.g. ``("moov/mvhd", 16, ">I", 2**32 - 1)``."""
    data = bytearray(Path(src).read_bytes())
    for box, offset, fmt, value in edits:
        struct.pack_into(fmt, data, mp4_box(data, box) + offset, value)
    dst = Path(dst)
    dst.write_bytes(bytes(data))
    return dst


_EBML_MASTERS = frozenset({0x18538067, 0x1654AE6B, 0xAE, 0xE0, 0x1549A966})


def ebml_element(data: bytes | bytearray, path: Sequence[int]) -> tuple[int, int]:
    """(offset of the payload, payload size) of the Matroska element at ``path``, a list of
    element IDs from the top (e.g. Segment, Info, Duration), the first match at each level."""

    def vint(at: int) -> tuple[int, int]:
        width = 9 - data[at].bit_length()
        value = data[at] & (0xFF >> width)
        for b in data[at + 1:at + width]:
            value = (value << 8) | b
        return value, width

    start, end = 0, len(data)
    for depth, want in enumerate(path):
        at = start
        while at < end:
            width = 9 - data[at].bit_length()
            element_id = int.from_bytes(data[at:at + width], "big")
            size, size_width = vint(at + width)
            payload = at + width + size_width
            if size == (1 << (7 * size_width)) - 1:  # unknown size: runs to the parent's end
                size = end - payload
            if element_id == want:
                if depth == len(path) - 1:
                    return payload, size
                if want not in _EBML_MASTERS:
                    raise KeyError(f"{want:x} holds no elements")
                start, end = payload, payload + size
                break
            at = payload + size
        else:
            raise KeyError(f"{want:x}")
    raise KeyError("empty path")


MKV_DURATION = (0x18538067, 0x1549A966, 0x4489)
MKV_PIXEL_WIDTH = (0x18538067, 0x1654AE6B, 0xAE, 0xE0, 0xB0)
MKV_PIXEL_HEIGHT = (0x18538067, 0x1654AE6B, 0xAE, 0xE0, 0xBA)


def patch_mkv(src: str | Path, dst: str | Path, edits: Sequence[tuple[Sequence[int], float]]
              ) -> Path:
    """``src`` with Matroska elements overwritten in place, each at its own size: an unsigned
    integer, or a float (4 or 8 bytes) where the element holds one (Duration)."""
    data = bytearray(Path(src).read_bytes())
    for path, value in edits:
        at, size = ebml_element(data, path)
        if isinstance(value, float):
            struct.pack_into(">f" if size == 4 else ">d", data, at, value)
        else:
            data[at:at + size] = int(value).to_bytes(size, "big")
    dst = Path(dst)
    dst.write_bytes(bytes(data))
    return dst


def remux_mkv(src: str | Path, dst: str | Path, *, shift: int = 0, last_gap: int = 0,
              claim_size: tuple[int, int] | None = None) -> Path:
    """``src``'s video packets copied into Matroska (time base 1 ms) with timestamps it did not
    choose: every one ``shift`` ms later, the last frame a further ``last_gap`` ms on; and with
    ``claim_size`` the header's PixelWidth/PixelHeight say that instead of the real size (the
    decoder still finds the real one in the stream)."""
    dst = Path(dst)
    with av.open(str(src)) as inp, av.open(str(dst), "w", format="matroska") as out:
        video_in = inp.streams.video[0]
        video = out.add_stream_from_template(video_in)
        if claim_size is not None:
            video.codec_context.width, video.codec_context.height = claim_size
        packets = [p for p in inp.demux(video_in) if p.size]  # an MP4's: pts and dts
        last = max(p.pts for p in packets)
        ms = Fraction(1, 1000)
        for packet in packets:
            to_ms = packet.time_base / ms
            later = shift + (last_gap if packet.pts == last else 0)
            packet.pts = round(packet.pts * to_ms) + later
            packet.dts = round(packet.dts * to_ms) + later
            packet.time_base = ms
            packet.stream = video
            out.mux(packet)
    return dst
