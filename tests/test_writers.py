"""Writers: every format from one Result, subtitles that parse back, atomic files, safe HTML."""

from __future__ import annotations

import html
import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
import srt
import webvtt
from PIL import Image

from videovlm.decode import Frame
from videovlm.errors import VideoVLMError
from videovlm.result import Answer, Result, Segment
from videovlm.writers import WRITERS, format_time, parse_formats, write

TRICKY = [
    "A man walks in & waves <hello> --> then leaves.",
    "Two lines\n\nwith a blank one between, and ünïcödé 漢字 🚲",
    '<script>alert("x")</script> is just text',
]


def _frame(index: int, time_s: float) -> Frame:
    rng = np.random.default_rng(index)
    img = rng.integers(0, 256, size=(90, 160, 3), dtype=np.uint8)
    img[:, :80] = (200, 30, 30)  # a big flat area so JPEG and screenshots have structure
    return Frame(index=index, time_s=time_s, image=img)


def _result(**kw) -> Result:
    frames = [_frame(i * 25, i * 1.0) for i in range(10)]
    segments = [
        Segment(0.0, 3.5, TRICKY[0], frames=[0, 25, 50, 75]),
        Segment(3.5, 7.25, TRICKY[1], frames=[100, 125, 150]),
        Segment(7.25, 10.0, TRICKY[2], frames=[175, 200, 225]),
    ]
    base = dict(
        video={"path": "/videos/bikes.mp4", "duration_s": 10.0, "fps": 25.0,
               "frame_count": 250, "width": 640, "height": 360, "rotation": 0,
               "codec": "h264"},
        sampling={"backend": "av", "requested": 10, "seek": "exact",
                  "frames": [{"index": f.index, "time_s": f.time_s} for f in frames],
                  "image_size": 384, "fit": "squash"},
        model={"id": "tiny", "revision": None, "dtype": "float32", "device": "cpu"},
        prompt={"tokens": 1000, "budget": 8000},
        generation={"max_new_tokens": 64, "do_sample": False},
        segments=segments,
        summary="Bikes & <riders> on a road.",
        answers=[Answer("What colour is the car?", "B) blue", ["red", "blue"], "B")],
        timing_s={"probe": 0.01, "decode": 0.2, "prepare": 0.05, "generate": 1.0,
                  "total": 1.3},
        mode="scenes",
        frames=frames,
    )
    base.update(kw)
    return Result(**base)


def test_parse_formats_all_order_and_errors() -> None:
    assert parse_formats("all") == list(WRITERS)
    assert parse_formats("srt, json,srt") == ["srt", "json"]
    assert parse_formats(["json,vtt", "md"]) == ["json", "vtt", "md"]
    with pytest.raises(VideoVLMError, match="unknown output format 'docx'"):
        parse_formats("json,docx")
    with pytest.raises(VideoVLMError):
        parse_formats("")


def test_srt_parses_back_to_the_same_cues(tmp_path: Path) -> None:
    r = _result()
    (path,) = write(r, tmp_path, ["srt"], "bikes")
    assert path == tmp_path / "bikes.srt"
    cues = list(srt.parse(path.read_text(encoding="utf-8")))
    assert len(cues) == len(r.segments)
    for cue, seg in zip(cues, r.segments, strict=True):
        assert cue.start.total_seconds() == pytest.approx(seg.start_s, abs=1e-3)
        assert cue.end.total_seconds() == pytest.approx(seg.end_s, abs=1e-3)
        assert cue.content.split() == _shown(seg.text).split()


def _shown(text: str) -> str:
    """What a cue shows: "-->" would start a new cue's timing line, so it reads "->"."""
    return text.replace("-->", "->")


@pytest.mark.parametrize("fmt", ["srt", "vtt"])
def test_text_that_looks_like_a_cue_stays_inside_its_cue(tmp_path: Path, fmt: str) -> None:
    fake = "a rider\n00:00:05,000 --> 00:00:06,000\n00:00:05.000 --> 00:00:06.000\nfake cue"
    r = _result(segments=[Segment(0.0, 4.0, fake), Segment(4.0, 10.0, "the end")])
    (path,) = write(r, tmp_path, [fmt], "x")
    text = path.read_text(encoding="utf-8")
    cues = list(srt.parse(text)) if fmt == "srt" else webvtt.read(str(path)).captions
    assert len(cues) == 2
    assert "fake cue" in (cues[0].content if fmt == "srt" else cues[0].text)


def test_vtt_parses_back_to_the_same_cues(tmp_path: Path) -> None:
    r = _result()
    (path,) = write(r, tmp_path, "vtt", "bikes")
    captions = webvtt.read(str(path)).captions
    assert len(captions) == len(r.segments)
    for cap, seg in zip(captions, r.segments, strict=True):
        assert cap.start_time.in_milliseconds() == round(seg.start_s * 1000)
        assert cap.end_time.in_milliseconds() == round(seg.end_s * 1000)
        # cue text is markup: what a player shows is the unescaped text
        assert html.unescape(cap.raw_text).split() == _shown(seg.text).split()
        assert "<" not in cap.raw_text


def test_json_and_jsonl_hold_the_result(tmp_path: Path) -> None:
    r = _result()
    paths = write(r, tmp_path, "json,jsonl", "bikes")
    assert [p.name for p in paths] == ["bikes.json", "bikes.jsonl"]
    assert json.loads(paths[0].read_text()) == r.to_dict()
    lines = paths[1].read_text().splitlines()
    assert len(lines) == 1 and json.loads(lines[0]) == r.to_dict()


def test_all_writes_every_format_and_leaves_no_temp_files(tmp_path: Path) -> None:
    out = tmp_path / "out" / "deeper"
    paths = write(_result(), out, "all", "bikes")
    names = sorted(p.name for p in paths)
    assert names == sorted(["bikes.json", "bikes.jsonl", "bikes.srt", "bikes.vtt", "bikes.md",
                            "bikes_sheet.jpg", "bikes.html"])
    assert sorted(p.name for p in out.iterdir()) == names


def test_stem_with_folders_mirrors_them(tmp_path: Path) -> None:
    (path,) = write(_result(), tmp_path, "json", "a/b/x")
    assert path == tmp_path / "a" / "b" / "x.json"


def test_a_failing_format_writes_nothing(tmp_path: Path) -> None:
    broken = _result()
    broken.frames[0] = Frame(0, 0.0, np.zeros((4, 4, 7), dtype=np.float64))  # not a picture
    with pytest.raises(Exception):  # noqa: B017 - whatever PIL raises; the point is no files
        write(broken, tmp_path, "json,srt,html", "bikes")
    assert list(tmp_path.iterdir()) == []


def test_rewrite_replaces_atomically(tmp_path: Path) -> None:
    write(_result(summary="first"), tmp_path, "json", "v")
    write(_result(summary="second"), tmp_path, "json", "v")
    assert json.loads((tmp_path / "v.json").read_text())["summary"] == "second"
    assert [p.name for p in tmp_path.iterdir()] == ["v.json"]


def test_markdown_report_has_facts_times_text_answers_and_sheet(tmp_path: Path) -> None:
    r = _result()
    paths = write(r, tmp_path, "md", "bikes")
    md = (tmp_path / "bikes.md").read_text(encoding="utf-8")
    assert "# bikes.mp4" in md
    assert "(bikes_sheet.jpg)" in md
    for seg in r.segments:
        assert f"{format_time(seg.start_s)} – {format_time(seg.end_s)}" in md
        assert seg.text.strip() in md
    assert "What colour is the car?" in md and "choice **B**" in md
    assert "640×360" in md and "h264" in md
    sheet = Image.open(tmp_path / "bikes_sheet.jpg")
    assert sheet.format == "JPEG" and sheet.width > 100
    assert tmp_path / "bikes_sheet.jpg" in paths


def test_markdown_without_frames_has_no_sheet(tmp_path: Path) -> None:
    paths = write(_result(frames=[]), tmp_path, "md", "bikes")
    assert [p.name for p in paths] == ["bikes.md"]
    assert "_sheet.jpg" not in (tmp_path / "bikes.md").read_text()


def test_html_is_self_contained_escaped_and_complete(tmp_path: Path) -> None:
    r = _result()
    (path,) = write(r, tmp_path, "html", "bikes")
    page = path.read_text(encoding="utf-8")
    # nothing fetched from anywhere: no http(s) URLs at all, images only as data URIs
    assert not re.search(r"https?://", page)
    srcs = re.findall(r'src="([^"]+)"', page)
    assert srcs and all(s.startswith("data:image/jpeg;base64,") for s in srcs)
    assert len(srcs) == sum(len(s.frames) for s in r.segments)
    # model text is escaped, never markup
    assert "<script>" not in page
    assert html.escape(TRICKY[2]) in page
    for seg in r.segments:
        assert html.escape(seg.text.strip()) in page
        assert f"{format_time(seg.start_s)} – {format_time(seg.end_s)}" in page
    for f in r.frames:
        assert f">{format_time(f.time_s)}</figcaption>" in page
    assert html.escape(r.summary) in page
    assert "What colour is the car?" in page
    assert 'name="viewport"' in page
    # thumbnails decode as JPEGs no larger than the thumbnail size
    import base64

    img = Image.open(io.BytesIO(base64.b64decode(srcs[0].split(",", 1)[1])))
    assert img.format == "JPEG" and max(img.size) <= 320


def test_unparsed_timeline_is_flagged_in_reports(tmp_path: Path) -> None:
    r = _result(segments=[Segment(0.0, 10.0, "no times here", frames=[0])],
                segments_parsed=False)
    write(r, tmp_path, "md,html", "v")
    assert "no usable times" in (tmp_path / "v.md").read_text()
    assert "no usable times" in (tmp_path / "v.html").read_text()
