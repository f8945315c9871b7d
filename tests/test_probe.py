"""probe: the facts of every kind of file, from the generator's numbers; clear refusals."""

from __future__ import annotations

import av
import numpy as np
import pytest

from tests import media
from tests.conftest import CLIPS, SAMPLES
from videovlm.decode import available_backends, decode
from videovlm.errors import BackendError, InputError
from videovlm.isolation import IN_PROCESS_ENV
from videovlm.plan import FrameRef
from videovlm.probe import probe


def tolerance(clip) -> float:
    """Matroska/WebM store times in whole milliseconds; the others exactly."""
    return 1.5e-3 if clip.filename.endswith((".mkv", ".webm")) else 1e-6


@pytest.mark.parametrize("name", sorted(CLIPS))
def test_facts_match_what_was_written(clip_path, name):
    clip = CLIPS[name]
    info = probe(clip_path(name))
    assert info.frame_count == clip.n_frames
    assert info.duration_s == pytest.approx(clip.duration_s, abs=tolerance(clip))
    assert info.fps == pytest.approx(clip.n_frames / clip.duration_s, rel=2e-3)
    assert (info.width, info.height) == clip.size  # display size, after rotation
    assert info.rotation == clip.rotation
    assert info.codec == clip.codec
    assert info.stream_index == clip.stream_index
    assert info.has_audio == clip.has_audio
    tl = info.timeline
    assert len(tl.pts) == clip.n_frames and bool(tl.keyframe[0])
    assert all(tl.pts[1:] > tl.pts[:-1])
    for i in range(clip.n_frames):
        assert tl.time_s(i) == pytest.approx(clip.time_s(i), abs=tolerance(clip))
    # MPEG-TS adds its mux delay to every timestamp; AVI stores no pts, and FFmpeg derives them
    # one frame after the dts when B-frames delay output: only times from the first frame count
    if name not in ("start_offset_ts", "mpeg4_bframes_avi"):
        assert info.start_s == pytest.approx(clip.get("start_pts_s", 0.0), abs=tolerance(clip))
    assert info.warnings == ()


def test_start_offset_in_mpeg_ts_is_reported(clip_path):
    info = probe(clip_path("start_offset_ts"))
    assert info.start_s >= 3.0 - 1e-6


def test_variable_frame_rate_keeps_the_frozen_gap(clip_path):
    info = probe(clip_path("vfr_gap"))
    gaps = [info.timeline.time_s(i + 1) - info.timeline.time_s(i) for i in range(39)]
    assert max(gaps) == pytest.approx(10.0, abs=1e-6)
    assert gaps.index(max(gaps)) == 19
    assert info.duration_s == pytest.approx(19 / 30 + 10 + 20 / 30, abs=1e-6)


def test_keyframes_are_where_the_encoder_put_them(clip_path):
    info = probe(clip_path("long_gop_bframes"))
    assert info.timeline.keyframe.nonzero()[0].tolist() == [0, 250]


def test_header_facts_are_kept_apart_from_the_content(clip_path):
    info = probe(clip_path("vfr_gap"))
    assert info.frame_count_header == 40
    assert info.duration_s_header == pytest.approx(info.duration_s, abs=1e-3)
    webm = probe(clip_path("vp9_webm"))
    assert webm.frame_count_header is None  # WebM headers do not count frames
    assert webm.frame_count == 60


def test_to_dict_carries_the_contract_fields(clip_path):
    d = probe(clip_path("rot90")).to_dict()
    for key in ("path", "duration_s", "fps", "frame_count", "width", "height", "rotation",
                "codec"):
        assert key in d
    assert (d["width"], d["height"], d["rotation"]) == (64, 48, 90)


SAMPLE_FACTS = {
    # file: (frames, duration_s, width, height, fps, audio)
    "bikes.mp4": (250, 10.0, 640, 272, 25.0, False),
    "bigbuckbunny.mp4": (132, 5.28, 1280, 720, 25.0, True),
    "world.mp4": (901, 30.033333, 480, 270, 30.0, True),
}


@pytest.mark.parametrize("name", sorted(SAMPLE_FACTS))
def test_samples_probe_to_their_known_facts(name):
    frames, duration, w, h, fps, audio = SAMPLE_FACTS[name]
    info = probe(SAMPLES / name)
    assert info.frame_count == frames == info.frame_count_header
    assert info.duration_s == pytest.approx(duration, abs=1e-5)
    assert (info.width, info.height, info.rotation) == (w, h, 0)
    assert info.fps == pytest.approx(fps, rel=1e-3)
    assert info.codec == "h264" and info.has_audio is audio and info.start_s == 0.0


@pytest.mark.parametrize(
    "kind",
    ["missing", "empty", "directory", "text", "random_bytes", "audio_only",
     "truncated_moov_at_end"],
)
def test_unreadable_inputs_get_one_clear_line(bad_inputs, kind):
    path = bad_inputs[kind]
    with pytest.raises(InputError) as err:
        probe(path)
    message = str(err.value)
    assert str(path) in message and "\n" not in message
    assert len(message) < 300


@pytest.mark.parametrize("name", ["mp4_37", "mp4_61", "ts_61", "ts_83", "mkv_61"])
def test_cut_off_file_keeps_only_frames_it_can_name(truncated_playable, name):
    path, full = truncated_playable[name]
    info = probe(path)
    assert 0 < info.frame_count < full
    # indices are display-order positions: the kept frames must be exactly 0..count-1
    assert info.timeline.time_s(info.frame_count - 1) == pytest.approx(
        (info.frame_count - 1) / 30, abs=1.5e-3)
    if name.startswith(("mp4", "ts_61", "mkv")):  # Matroska: its segment's size says so
        assert info.warnings  # said, not hidden


MOV_CLIPS = sorted(n for n, c in CLIPS.items() if c.filename.endswith((".mp4", ".mov")))


def _probe_by(monkeypatch, path, index_from_frames: int):
    """Probe with the sample-table path taken from this many frames on (huge: never)."""
    import importlib

    probe_module = importlib.import_module("videovlm.probe")
    monkeypatch.setattr(probe_module, "_INDEX_MIN_FRAMES", index_from_frames)
    monkeypatch.setenv(IN_PROCESS_ENV, "1")  # the constant is this process's
    return probe(path)


def _same_info(a, b) -> None:
    assert a.to_dict() == b.to_dict()
    assert a.timeline.pts.tolist() == b.timeline.pts.tolist()
    assert a.timeline.keyframe.tolist() == b.timeline.keyframe.tolist()
    assert a.timeline.end_pts == b.timeline.end_pts
    assert a.fps_header == b.fps_header


@pytest.mark.parametrize("name", MOV_CLIPS)
def test_mp4_sample_tables_give_the_demux_pass_timeline(clip_path, monkeypatch, name):
    """Long MP4/MOV files skip the demux pass: on every MP4/MOV clip (the threshold lowered so
    short clips take that path too) the result is the demux pass's, field for field."""
    import importlib

    import av

    probe_module = importlib.import_module("videovlm.probe")
    path = str(clip_path(name))
    from_packets = _probe_by(monkeypatch, path, 10**9)
    from_tables = _probe_by(monkeypatch, path, 1)
    _same_info(from_tables, from_packets)
    with av.open(path) as container:  # and the sample-table path really ran, or said why not
        stream = container.streams[from_tables.stream_index]
        table = probe_module._sample_table(container, stream, path)
        if name != "start_offset":  # its edit list makes FFmpeg mark leading samples discard
            assert table is not None
            assert probe_module._read_indexed(container, stream, path, table) is not None


@pytest.mark.parametrize("name", ["bikes.mp4", "world.mp4"])
def test_real_footage_from_sample_tables_equals_the_demux_pass(monkeypatch, name):
    _same_info(_probe_by(monkeypatch, SAMPLES / name, 1),
               _probe_by(monkeypatch, SAMPLES / name, 10**9))


@pytest.mark.parametrize("name", ["mp4_37", "mp4_61"])
def test_cut_off_mp4_takes_the_demux_pass(truncated_playable, monkeypatch, name):
    """A cut-off MP4's tables promise samples the file lacks: the demux pass decides, warns."""
    path, _ = truncated_playable[name]
    from_tables = _probe_by(monkeypatch, path, 1)
    _same_info(from_tables, _probe_by(monkeypatch, path, 10**9))
    assert from_tables.warnings


def test_avi_with_h264_b_frames_is_refused_not_misread(tmp_path):
    """AVI keeps no presentation times: FFmpeg numbers packets in decode order, which is wrong
    once B-frames reorder them (frames would come back one off); MPEG-4 AVIs with packed
    B-frames and H.264 AVIs without B-frames are fine."""
    from tests import media
    from videovlm import sample_frames

    bad = media.make_video(tmp_path / "b.avi", codec="h264", n_frames=40, bframes=2)
    with pytest.raises(InputError, match="B-frames but no presentation times") as err:
        probe(bad)
    assert "\n" not in str(err.value)
    for codec, bframes in (("h264", 0), ("mpeg4", 2)):
        ok = media.make_video(tmp_path / f"{codec}{bframes}.avi", codec=codec, n_frames=40,
                              bframes=bframes)
        frames = sample_frames(ok, n=7)
        assert [f.index for f in frames] == [media.read_index(f.image) for f in frames]


@pytest.mark.parametrize("keep_from", [0.1, 0.3, 0.55])
def test_ts_cut_at_its_head_starts_at_its_first_keyframe(tmp_path, keep_from):
    """A .ts picked up mid-GOP: the frames that need the lost keyframe are no frames of the
    file; the rest decode, each the frame its index says (one constant offset: what was lost)."""
    from pathlib import Path

    from tests import media
    from videovlm import sample_frames

    data = Path(media.make_video(tmp_path / "full.ts", n_frames=120, gop=30, bframes=2))
    data = data.read_bytes()
    clip = tmp_path / "cut.ts"
    clip.write_bytes(data[int(len(data) * keep_from) // 188 * 188:])
    info = probe(clip)
    assert any("starts inside a group of pictures" in w for w in info.warnings)
    assert bool(info.timeline.keyframe[0])
    frames = sample_frames(clip, n=10, backend="av")
    shown = [media.read_index(f.image) for f in frames]
    offset = shown[0] - frames[0].index
    assert shown == [f.index + offset for f in frames]
    assert offset % 30 == 0  # the file now starts on one of the encoder's keyframes


def test_a_b_frame_file_cut_after_its_first_p_frame_keeps_only_what_precedes_it(tmp_path):
    # found by the fuzz corpus: a Matroska file cut after I0 P3 (the B-frames 1 and 2 lost)
    # showed no reordering, and P3 passed as frame 1
    full = media.make_video(tmp_path / "full.mkv", n_frames=30, gop=12, bframes=2)
    with av.open(str(full)) as container:
        packets = [p for p in container.demux(video=0) if p.size]
    assert packets[1].pts > packets[2].pts  # decode order I0 P3 B1 B2 ...
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(full.read_bytes()[: packets[2].pos + 4])  # inside B1: it is lost
    info = probe(cut)
    assert info.frame_count == 1
    assert any("cut off" in w for w in info.warnings)


@pytest.mark.parametrize("bframes", [2, 3])
@pytest.mark.parametrize("cut_before", range(2, 9))
def test_a_b_frame_ts_cut_early_names_only_frames_it_has(tmp_path, bframes, cut_before):
    """An MPEG-TS flags nothing when cut, so only timestamps tell. Found by the fuzz corpus:
    cut in I0 P3 B1 (B2 lost), its packets showed a reorder depth of 1 and a gap the median
    interval hid, and P3 passed as frame 2. Every cut among the first packets of a plain and a
    pyramid B-frame encode keeps only frames that are what their index says."""
    full = media.make_video(tmp_path / "full.ts", n_frames=30, gop=12, bframes=bframes)
    with av.open(str(full)) as container:
        starts = [p.pos for p in container.demux(video=0) if p.size]
    cut = tmp_path / "cut.ts"
    cut.write_bytes(full.read_bytes()[: starts[cut_before]])
    info = probe(cut)
    assert 1 <= info.frame_count <= cut_before
    refs = [FrameRef(i, int(info.timeline.pts[i]), info.timeline.time_s(i))
            for i in range(info.frame_count)]
    frames = decode(info, refs, backend="av")
    assert media.indices_of([f.image for f in frames]) == list(range(info.frame_count))


def test_a_ts_packet_of_a_stream_its_program_table_omits_is_no_traceback(tmp_path):
    """Found by the fuzz corpus: one flipped byte gave a video packet a PID the program table
    does not list; FFmpeg adds a stream mid-file and PyAV 18's demuxer then ends in an
    IndexError. The packets read are kept (frame 30's is lost with its PID, so the file holds 59
    frames): each frame shows the picture of its timestamp, on every installed backend, or the
    backend refuses in one line."""
    full = media.make_video(tmp_path / "full.ts", n_frames=60, gop=12, bframes=2)
    data = bytearray(full.read_bytes())

    def pid(at: int) -> int:
        return (data[at + 1] & 0x1F) << 8 | data[at + 2]

    # FFmpeg's muxer puts the video at PID 0x100; its packets that start a PES (a frame)
    starts = [at for at in range(0, len(data), 188) if data[at + 1] & 0x40 and pid(at) == 0x100]
    assert len(starts) == 60
    at = starts[30]  # frame 30's first packet, given PID 0x125
    data[at + 1], data[at + 2] = (data[at + 1] & 0xE0) | 0x01, 0x25
    damaged = tmp_path / "pid.ts"
    damaged.write_bytes(bytes(data))
    original = {int(pts): i for i, pts in enumerate(probe(full).timeline.pts)}
    info = probe(damaged)
    refs = [FrameRef(i, int(info.timeline.pts[i]), info.timeline.time_s(i))
            for i in range(info.frame_count)]
    for backend in available_backends():
        try:
            frames = decode(info, refs, backend=backend)
        except BackendError as exc:
            assert "\n" not in str(exc)
            continue
        shown = [media.read_index(f.image, check_colour=False) for f in frames]
        assert shown == [original[r.pts] for r in refs], backend
    assert 30 not in [original[r.pts] for r in refs]


def test_a_probe_that_overruns_its_time_limit_is_stopped(tmp_path, monkeypatch):
    # the probe runs in the decoding child under its own limit (20 s + 0.1 s per MB): a file
    # FFmpeg loops on cannot hang a command; with no time allowed the real child is stopped
    import importlib

    from videovlm import isolation

    clip = media.make_video(tmp_path / "c.mp4", n_frames=5)
    monkeypatch.setattr(isolation, "BASE_TIMEOUT_S", 0.0)
    monkeypatch.setattr(importlib.import_module("videovlm.probe"), "_PROBE_S_PER_MB", 0.0)
    with pytest.raises(InputError, match=r"^.*c\.mp4 took over 0 s .*it was stopped$"):
        probe(clip)
    monkeypatch.undo()  # and the next probe starts a fresh child that finishes
    assert probe(clip).frame_count == 5


def _decode_order(display_pts: list[int], run: int) -> list[int]:
    """``display_pts`` in the decode order of an encoder with ``run`` B-frames between
    references (I0 P(run+1) B1 .. Brun, ...), as MPEG-2 and x264 without pyramid write."""
    out = [display_pts[0]]
    for start in range(1, len(display_pts), run + 1):
        group = display_pts[start:start + run + 1]
        out += [group[-1], *group[:-1]]
    return out


def _kept(decode_pts: list[int], tick: float | None = None, depth_hint: int = 0) -> int:
    from videovlm.probe import _complete_prefix

    arr = np.asarray(decode_pts, dtype=np.int64)
    return _complete_prefix(arr, np.argsort(arr, kind="stable"), False, False, depth_hint, tick)


def test_complete_ts_timing_that_looks_like_a_hole_keeps_every_frame():
    # soft 3:2 pulldown alternates 3003 and 4505 ticks (1.5x): no frame is missing
    shown = np.cumsum([0] + [3003, 4505] * 15).tolist()
    assert _kept(_decode_order(shown, 2)) == len(shown)
    # a timestamp jump early on (a broadcast splice) and an 8-frame still before the last frame
    shown = [i * 3000 for i in range(10)] + [90000 + i * 3000 for i in range(19)]
    shown.append(shown[-1] + 8 * 3000)
    assert _kept(_decode_order(shown, 2)) == len(shown)


def test_a_cut_ts_without_frame_durations_is_taken_as_cut():
    # I0 P4 B2 (B1, B3 lost) with no packet durations to tell the interval: nothing vouches
    # for P4's place, so only I0 is kept (the header's rate may be the field rate: not used)
    assert _kept([0, 4 * 3000, 2 * 3000], tick=None, depth_hint=2) == 1
    assert _kept([0, 4 * 3000, 2 * 3000], tick=3000, depth_hint=2) == 1


def test_a_video_stream_with_no_codec_is_one_line(tmp_path):
    # found by the fuzz corpus: an MP4 whose sample entry's type was damaged has a video stream
    # FFmpeg names no codec for (PyAV: no codec context), and the probe ended in a traceback
    full = media.make_video(tmp_path / "full.mp4", n_frames=5)
    data = bytearray(full.read_bytes())
    entry = media.mp4_box(data, "moov/trak/mdia/minf/stbl/stsd") + 8  # version, flags, count
    assert data[entry + 4:entry + 8] == b"avc1"
    data[entry + 4:entry + 8] = b"\0\0\0\0"
    damaged = tmp_path / "nocodec.mp4"
    damaged.write_bytes(bytes(data))
    with pytest.raises(InputError, match=r"its video stream's codec is unknown"):
        probe(damaged)
