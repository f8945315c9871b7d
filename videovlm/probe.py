"""What a video file is: its facts as the header claims them and as its packets show them.

The header and the content disagree on real files (edit lists, variable frame rate, truncated
files), so both are kept; the selection rule works on the content's timeline.
"""

from __future__ import annotations

import itertools
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from fractions import Fraction

import numpy as np

import videovlm.isolation as isolation
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

    def entry_points(self) -> np.ndarray:
        """Indices of the frames a decode may start at: the keyframes, and frame 0 always.

        Frame 0 need not be a keyframe: an MP4 whose edit list starts after its first keyframe
        shows frames whose keyframe is in the file but never shown (decoded, discarded). A
        decode that starts at the file's start reaches them; the probe has already dropped any
        frame that no decode can reach (a file cut at its head).
        """
        keys = np.flatnonzero(self.keyframe)
        return keys if len(keys) and keys[0] == 0 else np.concatenate(([0], keys))


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
_ORDER_CHECK_FRAMES = 8  # AVI: decoded frames whose times must not go back


def probe(path: str | os.PathLike[str]) -> VideoInfo:
    """Read a video's facts and its frame timeline; raise InputError for anything unreadable.

    One demux pass over the video stream's packets gives every frame's timestamp and keyframe
    flag without decoding (long MP4/MOV files: their sample tables give the same, checked
    against packets read at the start, through the file and at the end, see
    ``_read_indexed``); only the first frame is decoded, for its rotation and decoded size
    and to prove that the stream decodes. A truncated file keeps the frames whose packets are
    complete and whose display-order predecessors all survived (with a warning), so every index
    stays true; a file with no complete frame is an InputError.

    It runs in the decoding child process (:mod:`videovlm.isolation`), as every decode
    does: FFmpeg's demuxer and decoder read the file here first, and a native crash on a
    damaged one must end there, as one line, not take the command down.
    """
    path = os.fspath(path)
    _check_file(path)  # the mistakes the OS can name, without a child
    if isolation.isolated():
        return isolation.call_isolated(
            "videovlm.probe:probe_in_process", (path,), path=path, doing=f"reading {path}",
            limit=isolation.BASE_TIMEOUT_S + _PROBE_S_PER_MB * os.path.getsize(path) / 1e6,
            tag="probe")
    return probe_in_process(path)


def probe_in_process(path: str) -> VideoInfo:
    """:func:`probe` in this process, once its file checks are done (what the decoding child
    runs)."""
    import av

    try:
        container = _open(path)
    except (av.FFmpegError, OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: not a readable video file ({_reason(exc)})") from None
    with container:
        stream = _video_stream(container, path)
        if stream.codec_context is None:  # FFmpeg names no codec for it (found by the fuzz corpus)
            raise InputError(f"{path}: its video stream's codec is unknown (a damaged header, or "
                             "a codec FFmpeg lacks); nothing can decode it")
        _refuse_elementary(container, stream, path)
        has_audio = len(container.streams.audio) > 0
        stream_index = stream.index  # read while open: PyAV's stream is gone after close
        tb = stream.time_base
        if tb is None or tb <= 0:
            raise InputError(
                f"{path}: the video stream has no time base; remux it (ffmpeg -c copy)"
            )
        header = _header_facts(container, stream)
        depth_hint = _reorder_depth(stream.codec_context)
        table = _sample_table(container, stream, path)
        read = None if table is None else _read_indexed(container, stream, path, table)
        if read is None and table is None:
            read = _demux(container, stream, path)
    if read is None:  # the index did not hold up: the plain pass, from a fresh start
        with _open(path) as container:
            read = _demux(container, container.streams[stream_index], path)
    pts, keys, durations, first, notes, cut = read
    read_count = len(pts) + cut.discarded  # every sample the demuxer gave, shown or not
    pts, keys, durations = _from_first_keyframe(pts, keys, durations, notes, cut.lead_key)

    if len(pts) == 0:
        raise InputError(f"{path}: the video stream holds no complete frame")
    decode_pts = np.asarray(pts, dtype=np.int64)
    order = np.argsort(decode_pts, kind="stable")
    claimed = header["index"] or header["frames"]
    whole_bytes = _matroska_whole(path) if header["matroska"] else None
    if (claimed is not None and claimed > read_count) or whole_bytes is False:
        cut.cut = True
    # positive evidence that nothing is missing: every sample the index lists was read, or
    # every byte the Matroska segment declares is in the file
    whole = not cut.cut and (claimed == read_count or whole_bytes is True)
    # one frame's length where a cut file shows too few gaps to tell: the packets' own durations
    # (an MPEG-TS parser's, from the codec header); not the header's rate, which for H.264 in
    # MPEG-TS may be the field rate, twice the frame rate
    timed = [d for d in durations if d > 0]
    tick = float(min(timed)) if timed else None
    keep = _complete_prefix(decode_pts, order, cut.cut, whole, depth_hint, tick)
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
    check_frame_size(path, w, h)
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


# The largest picture any level of H.264, HEVC, VP9 or AV1 allows (AV1 level 6.x: 35,651,584
# luma samples, 8192x4352). A frame beyond it is a header's claim, not a video anyone encoded
# to be played, and each one costs width x height x 3 bytes as RGB: it is refused, not decoded.
MAX_PIXELS = 8192 * 4352


def check_frame_size(path: str, width: int, height: int) -> None:
    """InputError for a decoded picture larger than :data:`MAX_PIXELS` (a decompression bomb:
    a few bytes of header can make a decoder produce gigabytes)."""
    if width * height > MAX_PIXELS:
        raise InputError(
            f"{path}: its frames are {width}x{height}, {width * height:,} pixels, more than any "
            f"codec level allows ({MAX_PIXELS:,}: 8192x4352); downscale it first "
            "(ffmpeg -i IN -vf scale=-2:2160 OUT.mp4)"
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


# The first box of an ISO-BMFF / QuickTime file (bytes 4-8: ``ftyp``, or an atom a QuickTime
# file may start with instead; public, a batch sniffs for them too), and FFmpeg's name for the
# demuxer
MOV_BOXES = frozenset({b"ftyp", b"moov", b"mdat", b"free", b"skip", b"wide", b"pnot"})
_MOV_FORMAT = "mov,mp4,m4a,3gp,3g2,mj2"
# a probe's time limit on top of the decode process's base: the demux pass reads every byte of
# most files, at 10 MB/s at the least (a slow network disk)
_PROBE_S_PER_MB = 0.1
# B-frames between two references a cut MPEG-TS may have lost where it shows no run of its own:
# x264's and FFmpeg's default is 3, x265's 4
_B_RUN = 4


def _open(path: str):
    """Open ``path`` for the demux pass, without FFmpeg's parser where packets need none.

    In MP4/MOV every packet is one whole frame whose timestamps, duration and sync flag come
    from the sample tables, yet FFmpeg runs its H.264/HEVC/AV1/VP9 header parser over each one
    (for field order, which the probe does not read): about 15% of the pass over a long file.
    Without it the sync flag is the file's own (``stss``), which is what a seek lands on.
    MPEG-TS, AVI and raw streams need the parser to cut and time frames, so they keep it; a
    file that looks like MP4 but is not is reopened the ordinary way.
    """
    import av

    with open(path, "rb") as f:
        head = f.read(8)
    if head[4:8] in MOV_BOXES:
        container = av.open(path, metadata_errors="ignore", options={"fflags": "+noparse"})
        if container.format.name == _MOV_FORMAT:
            return container
        container.close()
    return av.open(path, metadata_errors="ignore")


def packets(container, stream) -> Iterator:
    """``container.demux(stream)``, ended cleanly where PyAV loses count of the streams.

    A stream may appear mid-file (an MPEG-TS whose damaged program table announces a new one);
    FFmpeg then knows more streams than PyAV's table, and PyAV 18 fails with an IndexError in
    its end-of-file flush, after every packet was read and this stream's empty end-of-stream
    packet given. Here the packets simply end there; an IndexError anywhere else is raised.
    """
    it = container.demux(stream)
    last = None
    while True:
        try:
            packet = next(it)
        except StopIteration:
            return
        except IndexError:
            if last is not None and last.size == 0:
                return  # in the flush, after this stream's own end-of-stream packet
            raise
        yield packet
        last = packet


def decoded(container, stream) -> Iterator:
    """The frames of ``stream`` in presentation order, the decoder drained at the end; as
    ``container.decode(stream)``, but through :func:`packets`."""
    for packet in packets(container, stream):
        if packet.size:
            yield from stream.decode(packet)
    yield from stream.decode(None)


def _reason(exc: BaseException) -> str:
    text = getattr(exc, "strerror", None) or str(exc)
    return " ".join(str(text).split())


# FFmpeg's demuxers for raw elementary streams whose packets carry no timestamps at all (its
# m4v and obu demuxers give timestamps from their parsers, and those files are read as usual)
_ELEMENTARY_FORMATS = {"h264": "H.264", "hevc": "HEVC", "vvc": "H.266"}


def _refuse_elementary(container, stream, path: str) -> None:
    """Say what is true of a raw ``.h264``/``.hevc`` stream: it has no timestamps.

    Only the decoder knows such a stream's presentation order (B-frames), and nothing knows its
    frames' times; giving it a container at a stated rate fixes both. The advice re-encodes:
    FFmpeg 5.1's ``-c copy`` from a raw stream with B-frames writes every pts equal to its dts
    (measured: frames out of order), while decoding restores the order.
    """
    kind = _ELEMENTARY_FORMATS.get(container.format.name)
    if kind is None:
        return
    rate = stream.codec_context.framerate  # the stream's own (SPS/VPS timing), if it says
    fps = f"{float(rate):g}" if rate else "FPS"
    said = f" (its header says {fps} fps)" if rate else ""
    raise InputError(
        f"{path}: a raw {kind} elementary stream stores no timestamps, so no frame's time is "
        f"known; put it in a container at its frame rate{said}, e.g. "
        f"ffmpeg -r {fps} -i IN -c:v libx264 -crf 18 OUT.mp4"
    )


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


def _demux(container, stream, path: str, stop: int | None = None):
    """One pass over the video packets: timestamps, keyframe flags, durations, first frame.

    ``stop``: return after that many frames (the start of the file, to check the index against).
    """
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
    # AVI stores no presentation times: FFmpeg numbers its packets in decode order, which is
    # only right without B-frames. Decoding a few frames shows it: their times must not go back.
    check_order = container.format.name == "avi"
    shown: list[int] = []
    seen_key = False  # a file cut at its head: feed the decoder from its first keyframe
    # bound once: this loop runs once per frame of the file (18,000 for 10 minutes at 30 fps)
    add_pts, add_key, add_duration = pts.append, keys.append, durations.append
    try:
        for packet in packets(container, stream):
            if packet.size == 0:
                continue  # the demuxer's end-of-stream marker
            if packet.is_corrupt or packet.is_discard:
                dropped += packet.is_corrupt
                cut.discarded += packet.is_discard
                cut.lead_key = cut.lead_key or (not pts and packet.is_discard
                                                and packet.is_keyframe)
                continue
            ts = packet.pts
            if ts is None:
                ts = packet.dts
                if ts is None:
                    dropped += 1
                    continue
            seen_key = seen_key or packet.is_keyframe or len(pts) >= _FIRST_FRAME_PACKETS
            if seen_key and fed < _FIRST_FRAME_PACKETS and (
                    first is None or (check_order and len(shown) < _ORDER_CHECK_FRAMES)):
                fed += 1
                try:
                    frames = stream.decode(packet)
                except av.FFmpegError as exc:
                    frames, decode_error = [], _reason(exc)
                if frames:
                    first = first or frames[0]
                    shown.extend(f.pts for f in frames if f.pts is not None)
            add_pts(ts)
            add_key(packet.is_keyframe)
            add_duration(packet.duration or 0)
            if len(pts) == stop:
                break
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
    if check_order and any(b < a for a, b in itertools.pairwise(shown)):
        raise InputError(
            f"{path}: this AVI has B-frames but no presentation times, so no frame's time can be "
            "known; convert it to MKV or MP4 with new timestamps (e.g. ffmpeg -i IN -c:v libx264 "
            "OUT.mp4)"
        )
    if dropped:
        notes.append(f"{dropped} incomplete or untimed packets skipped (truncated file?)")
        cut.cut = True
    return pts, keys, durations, first, notes, cut


# Long MP4/MOV files take their timeline from the sample tables instead of the demux pass, which
# reads every byte of the file (230 MB for the 10-minute 720p benchmark clip) only to learn what
# those tables already say. Shorter files take the plain pass: cheap there, and the path every
# other kind of file takes.
_INDEX_MIN_FRAMES = 2000
_AVINDEX_KEYFRAME, _AVINDEX_DISCARD = 1, 2  # FFmpeg's index entry flags
# what is read for real and compared with the tables: the first frames, a few keyframes' worth
# through the file, and everything from the last keyframe to the end
_CHECK_HEAD = _FIRST_FRAME_PACKETS  # no fewer: the first frame comes out as in the plain pass
_CHECK_SPOTS = 4
_CHECK_SPOT_FRAMES = 32


@dataclass(frozen=True, eq=False)
class _SampleTable:
    """One MP4/MOV video track, in decode order, from FFmpeg's index and the ``ctts`` box."""

    dts: np.ndarray  # int64, strictly increasing
    key: np.ndarray  # bool: a sync sample
    offset: np.ndarray  # int64: composition offset, pts = dts + offset + one constant shift


def _sample_table(container, stream, path: str) -> _SampleTable | None:
    """The sample table of a long MP4/MOV video track, when it alone gives every timestamp.

    Only the plain case is taken: one edit at most (FFmpeg rebuilds its index around more),
    not fragmented, every sample complete inside the file, none marked discard, decode times
    strictly increasing. Anything else (None) takes the demux pass.
    """
    if container.format.name != _MOV_FORMAT:
        return None
    entries = stream.index_entries
    n = len(entries)
    if n < _INDEX_MIN_FRAMES:
        return None
    rows = np.array([(e.timestamp, e.flags, e.pos, e.size) for e in entries], dtype=np.int64)
    dts, flags, pos, size = rows.T
    if (flags & _AVINDEX_DISCARD).any() or (size <= 0).any() or (np.diff(dts) <= 0).any():
        return None
    if int((pos + size).max()) > os.path.getsize(path):
        return None  # cut off: the demux pass finds where
    offset = _composition_offsets(path, stream.id, n)
    if offset is None:
        return None
    return _SampleTable(dts=dts, key=(flags & _AVINDEX_KEYFRAME) > 0, offset=offset)


def _read_indexed(container, stream, path: str, table: _SampleTable):
    """``_demux``'s result from the sample table, checked against packets read for real.

    The constant shift (edit list, negative offsets) is taken from the first packet; the first
    frames, a few spots through the file and everything from the last keyframe to the end are
    read and must match exactly, the last frame's duration comes from its packet. None when
    anything differs: the caller then takes the demux pass.
    """
    import av

    dts, key = table.dts, table.key
    h = min(_CHECK_HEAD, len(dts))
    pts, keys, _, first, notes, cut = _demux(container, stream, path, stop=h)
    if notes or cut.cut or cut.discarded or len(pts) < h:
        return None
    calc = dts + table.offset
    calc += int(pts[0]) - int(calc[0])
    if not (np.array_equal(pts, calc[:h]) and np.array_equal(keys, key[:h])):
        return None
    key_idx = np.flatnonzero(key)
    spots = [int(key_idx[len(key_idx) * k // (_CHECK_SPOTS + 1)])
             for k in range(1, _CHECK_SPOTS + 1)]
    durations = np.zeros(len(dts), dtype=np.int64)
    try:
        for at in spots:
            if _check_from(container, stream, table, calc, at, at + _CHECK_SPOT_FRAMES) is None:
                return None
        tail = _check_from(container, stream, table, calc, int(key_idx[-1]), len(dts))
    except av.FFmpegError:
        return None
    if tail is None:
        return None
    start, tail_durations = tail
    if int(np.argmax(calc)) < start:
        return None  # the last frame shown must be one whose duration was read
    durations[start:] = tail_durations
    return calc, key, durations, first, [], _Cut()


def _check_from(container, stream, table: _SampleTable, calc: np.ndarray, at: int, until: int):
    """Seek to sample ``at``, read packets up to sample ``until`` and compare each with the
    table; (index of the first sample read, durations of those read) or None on a mismatch."""
    dts = table.dts
    # by the keyframe's pts: FFmpeg's MP4 seek steps back past keyframes shown after the target
    container.seek(int(calc[at]), stream=stream, backward=True)
    start = None
    expect = None
    durations: list[int] = []
    for packet in packets(container, stream):
        if packet.size == 0:
            break  # end of the stream
        j = int(np.searchsorted(dts, packet.dts)) if packet.dts is not None else -1
        if start is None:
            if j < 0 or j > at:
                return None
            start = expect = j
        if (j != expect or j >= len(dts) or packet.is_corrupt or packet.is_discard
                or packet.dts != dts[j] or packet.pts != calc[j]
                or bool(packet.is_keyframe) != bool(table.key[j])):
            return None
        durations.append(packet.duration or 0)
        expect = j + 1
        if expect >= until:
            break
    if start is None or expect < min(until, len(dts)):
        return None  # the file ended before the table did
    return start, np.asarray(durations, dtype=np.int64)


def _composition_offsets(path: str, track_id: int, n: int) -> np.ndarray | None:
    """Per-sample composition offsets of track ``track_id`` from its ``ctts`` box (zeros without
    one); None unless the file holds one unfragmented track of that id with ``n`` samples and at
    most one edit."""
    with open(path, "rb") as f:
        moov = _top_level_box(f, b"moov")
    if moov is None or any(kind == b"mvex" for kind, _ in _boxes(moov)):
        return None
    for kind, trak in _boxes(moov):
        if kind != b"trak":
            continue
        box = dict(_boxes(trak))
        tkhd = box.get(b"tkhd")
        if tkhd is None or len(tkhd) < 24:
            continue
        tid = struct.unpack_from(">I", tkhd, 20 if tkhd[0] == 1 else 12)[0]
        if tid != track_id:
            continue
        elst = _descend(box, b"edts", b"elst")
        if elst is not None and (len(elst) < 8 or struct.unpack_from(">I", elst, 4)[0] > 1):
            return None
        stbl = _descend(box, b"mdia", b"minf", b"stbl")
        if stbl is None:
            return None
        tables = dict(_boxes(stbl))
        sizes = tables.get(b"stsz", tables.get(b"stz2"))
        if sizes is None or len(sizes) < 12 or struct.unpack_from(">I", sizes, 8)[0] != n:
            return None
        ctts = tables.get(b"ctts")
        if ctts is None:
            return np.zeros(n, dtype=np.int64)
        if len(ctts) < 8:
            return None
        count = struct.unpack_from(">I", ctts, 4)[0]
        if len(ctts) < 8 + 8 * count:
            return None
        pairs = np.frombuffer(ctts, dtype=">i4", count=2 * count, offset=8).reshape(-1, 2)
        runs = pairs[:, 0].astype(np.int64)
        if (runs < 0).any() or int(runs.sum()) != n:
            return None
        return np.repeat(pairs[:, 1].astype(np.int64), runs)
    return None


_EBML_ID, _SEGMENT_ID = b"\x1a\x45\xdf\xa3", b"\x18\x53\x80\x67"


def _matroska_whole(path: str) -> bool | None:
    """Whether every byte the Matroska segment declares is in the file; None when it declares
    no size (a live recording) or the head is not the plain EBML header + segment."""
    with open(path, "rb") as f:
        head = f.read(4096)
    end = os.path.getsize(path)
    at = 0
    for expected in (_EBML_ID, _SEGMENT_ID):
        if head[at:at + 4] != expected:
            return None
        size, width = _ebml_size(head, at + 4)
        if width == 0:
            return None
        at += 4 + width
        if expected == _EBML_ID:
            if size is None:
                return None
            at += size
    return None if size is None else at + size <= end


def _ebml_size(data: bytes, at: int) -> tuple[int | None, int]:
    """An EBML element size at ``at``: (value or None for 'unknown', its width; 0: malformed)."""
    if at >= len(data) or data[at] == 0:
        return None, 0
    width = 9 - data[at].bit_length()
    if at + width > len(data):
        return None, 0
    value = data[at] & (0xFF >> width)
    for b in data[at + 1:at + width]:
        value = (value << 8) | b
    return (None if value == (1 << (7 * width)) - 1 else value), width


def _top_level_box(f, name: bytes) -> memoryview | None:
    """The payload of the file's top-level box ``name``; None if absent or fragmented."""
    end = os.fstat(f.fileno()).st_size
    at = 0
    while at + 8 <= end:
        f.seek(at)
        head = f.read(16)
        size, kind = struct.unpack_from(">I4s", head)
        skip = 8
        if size == 1 and len(head) == 16:
            size, skip = struct.unpack_from(">Q", head, 8)[0], 16
        elif size == 0:
            size = end - at
        if size < skip or kind == b"moof":
            return None
        if kind == name:
            f.seek(at + skip)
            # no more than the file holds: the size is the file's word, read() would allocate it
            return memoryview(f.read(min(size, end - at) - skip))
        at += size
    return None


def _boxes(data: memoryview):
    """(type, payload) of each box in ``data``, up to the first malformed one."""
    at = 0
    while at + 8 <= len(data):
        size, kind = struct.unpack_from(">I4s", data, at)
        skip = 8
        if size == 1 and at + 16 <= len(data):
            size, skip = struct.unpack_from(">Q", data, at + 8)[0], 16
        elif size == 0:
            size = len(data) - at
        if size < skip or at + size > len(data):
            return
        yield bytes(kind), data[at + skip : at + size]
        at += size


def _descend(boxes: dict, *path: bytes) -> memoryview | None:
    """The payload at ``path`` below ``boxes`` (a box's children by type), or None."""
    data = boxes.get(path[0])
    for name in path[1:]:
        if data is None:
            return None
        data = dict(_boxes(data)).get(name)
    return data


@dataclass
class _Cut:
    """What the demux pass saw of a file that ends early."""

    cut: bool = False  # damaged or incomplete packets, or a demux error
    discarded: int = 0  # packets the container says to decode but not show (edit lists)
    lead_key: bool = False  # a keyframe packet came before the first shown one (discarded)


def _from_first_keyframe(pts: list[int], keys: list[bool], durations: list[int],
                         notes: list[str], lead_key: bool = False,
                         ) -> tuple[list[int], list[bool], list[int]]:
    """Drop what a file that starts inside a group of pictures cannot show.

    A stream cut at its head (a recording or broadcast ``.ts`` picked up mid-GOP) starts with
    frames that need a keyframe the file no longer has: those before its first keyframe in
    decode order, and those after it shown before it (B-frames reaching back). No decoder can
    produce them, so they are no frames of this file; keeping them would make every plan that
    lands there fail. A file with no keyframe flag at all keeps everything, and so does one
    whose keyframe is there but not shown (``lead_key``: an MP4 edit list that starts after its
    first keyframe, as ``ffmpeg -ss T -c copy`` writes): decoding from the start reaches them.
    """
    start = next((i for i, k in enumerate(keys) if k), 0)
    if start == 0 or lead_key:
        return pts, keys, durations
    key_pts = pts[start]
    keep = [i for i in range(start, len(pts)) if pts[i] >= key_pts]
    notes.append(f"the file starts inside a group of pictures: its first {len(pts) - len(keep)} "
                 "frames need an earlier keyframe it lacks; skipped")
    return [pts[i] for i in keep], [keys[i] for i in keep], [durations[i] for i in keep]


def _complete_prefix(decode_pts: np.ndarray, order: np.ndarray, cut: bool,
                     whole: bool = False, depth_hint: int = 0, tick: float | None = None
                     ) -> int:
    """How many frames, in display order, are certainly all there.

    A file cut off in decode order loses the frames that would have come after the cut; with
    B-frames some of them display *before* frames that made it (a P-frame whose B-frames are
    lost), and such a frame would get a wrong index. A stream that reorders by ``depth`` frames
    shows a frame at most ``depth`` places before its place in decode order, so whatever is lost
    after the cut displays after the first ``m - depth`` frames that survive: those are kept,
    the rest dropped. ``depth`` is the largest of the codec header's reorder depth
    (``depth_hint``, FFmpeg's ``has_b_frames``) and the reordering the surviving packets show:
    a file cut early may hold too few packets to show it (I0 P4 B2 looks like a depth of 1; the
    fuzz corpus found both this and I0 P3 alone).

    ``whole``: the container vouches that every frame was read (an MP4's sample count, a
    Matroska segment's size), so nothing is dropped however the frames are spaced. MPEG-TS and
    friends vouch for nothing and flag nothing when cut: there a reordering stream counts as cut
    when one of its last ``depth`` gaps in display order is a hole, at least 1.8 frame intervals
    wide (a lost frame makes 2; 3:2 pulldown's long gap is 1.5) yet narrow enough for lost
    B-frames to fill (as many as the stream's longest run of B-frames between two references,
    and at least ``_B_RUN``); a wider gap is a pause (a still held before the last frame), not a
    cut. The interval is the shortest gap before those last ones (pulldown alternates two), or
    the shortest packet duration (``tick``) where a file holds too few frames; with neither, the
    file is taken as cut.
    """
    m = len(decode_pts)
    rank = np.empty(m, dtype=np.int64)
    rank[order] = np.arange(m)
    depth = max(depth_hint, int((np.arange(m) - rank).max()))
    if depth == 0 or m < 2 or whole:
        return m
    # at least the first frame shown, the keyframe every other frame needs (open-GOP heads were
    # dropped before): a stream has no frame before it
    keep = max(m - depth, 1)
    if cut:
        return keep
    gaps = np.diff(decode_pts[order])
    body = gaps[:-depth]
    body = body[body > 0]
    interval = float(body.min()) if len(body) >= 2 else tick
    if not interval or interval <= 0:
        return keep
    # B-frames between two references, counted in frames: those decoded after a reference and
    # shown before it
    run = max(_B_RUN, depth, int((rank - np.arange(m)).max()))
    tail = gaps[-depth:]
    if np.any((tail >= 1.8 * interval) & (tail <= (run + 1.5) * interval)):
        return keep
    return m


def _reorder_depth(cc) -> int:
    """The codec header's reorder depth: how many frames the decoder holds back (B-frames).
    Recent PyAV gives the number (``reorder_depth``), older only a flag: then 2, the depth of
    x264's default B-pyramid (too deep only drops more frames of a cut file; too shallow would
    name a frame wrongly)."""
    depth = getattr(cc, "reorder_depth", None)
    return int(depth) if depth is not None else 2 * bool(cc.has_b_frames)


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
        "matroska": container.format.name.startswith("matroska"),
        # an MP4's sample table as FFmpeg built it: what the file really indexes, where the
        # header's own count (stts) may claim anything
        "index": len(stream.index_entries) if container.format.name == _MOV_FORMAT else None,
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
