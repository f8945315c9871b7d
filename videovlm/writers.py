"""Turning a :class:`~videovlm.result.Result` into files: one small writer per format, by name.

Every writer renders to bytes first and :func:`write` only touches the disk once all requested
formats rendered, each file through a temporary file in the same folder and ``os.replace``: a
crash or a bad format never leaves a half-written or stale-mixed set of outputs behind, which the
batch engine's ``--resume`` relies on. Subtitles go through the ``srt`` and ``webvtt-py``
libraries so they are what players accept, not our idea of the format.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import io
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import srt
import webvtt
from PIL import Image
from webvtt.models import Timestamp

from videovlm.dialogue import Cue
from videovlm.errors import VideoVLMError
from videovlm.files import atomic_write, format_time, make_folder
from videovlm.result import Relevance, Result
from videovlm.sheet import render_sheet
from videovlm.text import choice_letters

THUMB_SIZE = 320  # longest side of an HTML thumbnail, px: sharp on a phone, light in the page
THUMB_QUALITY = 80


def _cue_lines(text: str) -> str:
    """Cue text without blank lines (a blank line ends a cue in both SRT and WebVTT)."""
    lines = (ln.strip().replace("-->", "->") for ln in text.splitlines())
    # "-->" would read as a new cue's timing line: neither format has an escape for it
    return "\n".join(ln for ln in lines if ln) or "…"


# --- one renderer per format: (result, stem) -> {file name: bytes} -------------------------------

Renderer = Callable[[Result, str], dict[str, bytes]]


def _json(result: Result, stem: str) -> dict[str, bytes]:
    text = json.dumps(result.to_dict(), indent=2, ensure_ascii=False)
    return {f"{stem}.json": (text + "\n").encode()}


def _jsonl(result: Result, stem: str) -> dict[str, bytes]:
    text = json.dumps(result.to_dict(), ensure_ascii=False)
    return {f"{stem}.jsonl": (text + "\n").encode()}


class Timed(Protocol):
    """Anything shown from ``start_s`` to ``end_s``: a result's segment, a line of dialogue."""

    start_s: float
    end_s: float
    text: str


def srt_bytes(items: Sequence[Timed]) -> bytes:
    """SubRip of timed texts, one cue each: the one home of SRT (segments and transcripts)."""
    subs = [
        srt.Subtitle(
            index=i,
            start=_dt.timedelta(seconds=item.start_s),
            end=_dt.timedelta(seconds=item.end_s),
            content=_cue_lines(item.text),
        )
        for i, item in enumerate(items, 1)
    ]
    return srt.compose(subs).encode()


def vtt_bytes(items: Sequence[Timed]) -> bytes:
    """WebVTT of timed texts, one cue each (segments and transcripts)."""
    captions = [
        webvtt.Caption(
            start=str(Timestamp.from_seconds(item.start_s)),
            end=str(Timestamp.from_seconds(item.end_s)),
            # WebVTT cue text is markup: &, < and > must be escaped to show as written
            text=html.escape(_cue_lines(item.text), quote=False),
        )
        for item in items
    ]
    return webvtt.WebVTT(captions=captions).content.encode()


def _srt(result: Result, stem: str) -> dict[str, bytes]:
    return {f"{stem}.srt": srt_bytes(result.segments)}


def _vtt(result: Result, stem: str) -> dict[str, bytes]:
    return {f"{stem}.vtt": vtt_bytes(result.segments)}


def _facts(result: Result) -> list[tuple[str, str]]:
    """The video's and the run's facts as (label, value) rows, shared by md and html."""
    v, s = result.video, result.sampling
    rows = [
        ("Duration", f"{format_time(v.get('duration_s', 0.0))} ({v.get('duration_s', 0):.2f} s)"),
        ("Size", f"{v.get('width')}×{v.get('height')}"),
        ("Frame rate", f"{v.get('fps', 0):.3f} fps, {v.get('frame_count')} frames"),
        ("Codec", str(v.get("codec"))),
    ]
    if s.get("frames") is not None:
        windows = s.get("windows")
        if result.relevance is not None:
            asked = f"({s.get('requested')} per window)"
        elif windows:
            asked = (f"of {s.get('requested')} requested per window in "
                     f"{len(windows['spans'])} windows of {format_time(windows['length_s'])}")
        else:
            asked = f"of {s.get('requested')} requested"
        rows.append(("Frames shown to the model",
                     f"{len(s['frames'])} {asked}, "
                     f"{s.get('image_size')} px ({s.get('fit')}), {s.get('backend')} decoder"))
    if result.model:
        rows.append(("Model", f"{result.model.get('id')} ({result.model.get('device')}, "
                              f"{result.model.get('dtype')})"))
    if result.prompt:
        p = result.prompt
        calls = (f", largest of {p['calls']} prompts, {p.get('total_tokens')} in all"
                 if p.get("calls") else "")
        rows.append(("Prompt", f"{p.get('tokens')} tokens{calls} (budget {p.get('budget')})"))
    if result.dialogue:
        rows.append(("Dialogue", _dialogue_fact(result.dialogue)))
    if result.mode:
        rows.append(("Mode", result.mode))
    if result.timing_s:
        rows.append(("Time", ", ".join(f"{k} {v:.2f} s" for k, v in result.timing_s.items())))
    return rows


def _dialogue_fact(d: dict[str, Any]) -> str:
    """Where the dialogue came from and how much of it the prompts showed, in one line."""
    kind = d.get("kind")
    where = (f"stream {d.get('stream')}" if kind == "stream"
             else f"speech recognition, {Path(str(d.get('model'))).name}" if kind == "speech"
             else f"{kind} {Path(str(d.get('path'))).name}")
    about = ", ".join(str(x) for x in (d.get("language"), d.get("format")) if x)
    trimmed = ", trimmed to fit" if d.get("trimmed") else ""
    return (f"{where}{f' ({about})' if about else ''}: {d.get('cues')} cues, "
            f"{d.get('in_prompt')} in the prompt{trimmed}")


def _transcript_lines(seg: Any) -> list[tuple[str, str]]:
    """A segment's dialogue as (time, text) rows, for the reports."""
    return [(format_time(c.start_s), c.text) for c in seg.transcript or []]


def _title(result: Result) -> str:
    return Path(str(result.video.get("path", "video"))).name


def _sheet_name(stem: str) -> str:
    return f"{stem}_sheet.jpg"


def _jpeg(image: Any, quality: int = 85) -> bytes:
    buf = io.BytesIO()
    image.convert("RGB").save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def _sheet_jpeg(frames: Sequence[Any]) -> bytes:
    """The contact sheet (videovlm.sheet) as JPEG bytes: md renders before anything is written."""
    return render_sheet(frames, "JPEG")


def _md(result: Result, stem: str) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    lines = [f"# {_title(result)}", ""]
    if result.frames:
        out[_sheet_name(stem)] = _sheet_jpeg(result.frames)
        seen = ("each range's best frame" if result.relevance is not None
                else "the frames the model saw")
        lines += [f"![Contact sheet: {seen}]({_sheet_name(stem)})", ""]
    lines += ["| | |", "|---|---|"]
    lines += [f"| {k} | {val} |" for k, val in _facts(result)]
    lines.append("")
    if result.summary:
        lines += ["## Summary", "", result.summary.strip(), ""]
    if result.relevance is not None:
        lines += ["## Relevance", "", _relevance_line(result.relevance), ""]
    if result.segments:
        lines += ["## Ranges" if result.relevance is not None else "## Segments", ""]
        if not result.segments_parsed:
            lines += ["*The model's text carried no usable times; it is shown whole.*", ""]
        for seg in result.segments:
            lines += [f"### {format_time(seg.start_s)} – {format_time(seg.end_s)}", "",
                      seg.text.strip(), ""]
            said = _transcript_lines(seg)
            if said:
                lines += ["> **Dialogue**  "] + [f"> `{t}` {text}  " for t, text in said] + [""]
    if result.answers:
        lines += ["## Answers", ""]
        for a in result.answers:
            lines.append(f"**Q:** {a.question}  ")
            for letter, choice in zip(_letters(a.choices), a.choices or [], strict=True):
                lines.append(f"{letter}. {choice}  ")
            picked = f" (choice **{a.choice}**)" if a.choice else ""
            lines += [f"**A:** {a.answer.strip()}{picked}", ""]
    if result.warnings:
        lines += ["## Warnings", ""] + [f"- {w}" for w in result.warnings] + [""]
    out[f"{stem}.md"] = "\n".join(lines).encode()
    return out


def _relevance_line(found: Relevance) -> str:
    """What find looked for and how, and what it found, in one sentence (md and html)."""
    ranges = (f"{len(found.ranges)} range{'s' if len(found.ranges) != 1 else ''}"
              if found.ranges else "no range")
    n = len(found.windows)
    each = (found.windows[-1].end_s - found.windows[0].start_s) / n if n else found.window_s
    return (f"Looked for {found.query!r} in {n} windows of {each:.3g} s (asked: "
            f"{found.window_s:g} s; {found.frames_per_window} frames each): {ranges} at or "
            f"above the threshold {found.threshold:.2f}.")


CURVE_SIZE = (960, 180)  # the relevance curve's drawing box, px (it scales to the page)
_TICK_STEPS = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200)  # seconds


def _curve_svg(found: Relevance, duration_s: float) -> str:
    """The relevance curve as inline SVG (the page stays self-contained): each window's score
    as a step over its span, the ranges shaded, the threshold dashed, times along the bottom."""
    w, h = CURVE_SIZE
    left, right, top, bottom = 36, 24, 8, 24
    span = max(duration_s, max((x.end_s for x in found.windows), default=0.0)) or 1.0

    def x(t: float) -> float:
        return round(left + (w - left - right) * t / span, 2)

    def y(score: float) -> float:
        return round(top + (h - top - bottom) * (1 - score), 2)

    steps = " ".join(f"{x(win.start_s)},{y(win.score)} {x(win.end_s)},{y(win.score)}"
                     for win in found.windows)
    parts = [f'<svg class="curve" viewBox="0 0 {w} {h}" role="img" '
             f'aria-label="relevance of each window over time" '
             f'xmlns="http://www.w3.org/2000/svg">']
    parts += [f'<rect x="{x(r.start_s)}" y="{top}" width="{round(x(r.end_s) - x(r.start_s), 2)}"'
              f' height="{h - top - bottom}" class="range"><title>'
              f"{html.escape(format_time(r.start_s))} – {html.escape(format_time(r.end_s))}: "
              f"peak {r.peak_score:.2f}</title></rect>" for r in found.ranges]
    parts += [f'<line x1="{left}" x2="{w - right}" y1="{y(v)}" y2="{y(v)}" class="axis"/>'
              f'<text x="{left - 4}" y="{y(v) + 4}" text-anchor="end">{v:g}</text>'
              for v in (0, 1)]
    parts.append(f'<line x1="{left}" x2="{w - right}" y1="{y(found.threshold)}" '
                 f'y2="{y(found.threshold)}" class="threshold"/>')
    step = next((s for s in _TICK_STEPS if span / s <= 8), _TICK_STEPS[-1])
    parts += [f'<text x="{x(k * step)}" y="{h - 6}" text-anchor="middle">'
              f"{html.escape(format_time(k * step, 0))}</text>"
              for k in range(int(span // step) + 1)]
    parts.append(f'<polyline points="{steps}" class="score"/>')
    parts.append("</svg>")
    return "".join(parts)


def _letters(choices: Sequence[str] | None) -> list[str]:
    return choice_letters(choices or [])


_CSS = """
:root { color-scheme: light dark; --bg: #fafafa; --fg: #1b1b1b; --card: #fff; --muted: #666;
        --accent: #2060c0; }
@media (prefers-color-scheme: dark) {
  :root { --bg: #16181c; --fg: #e8e8e8; --card: #22252b; --muted: #9aa; --accent: #7aa7ff; } }
* { box-sizing: border-box; }
body { margin: 0; background: var(--bg); color: var(--fg);
       font: 16px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; }
main { max-width: 980px; margin: 0 auto; padding: 16px; }
h1 { font-size: 1.6rem; margin: .4em 0; overflow-wrap: anywhere; }
h2 { font-size: 1.25rem; margin-top: 1.6em; }
table.facts { border-collapse: collapse; width: 100%; font-size: .92rem; }
table.facts th { text-align: left; color: var(--muted); font-weight: normal;
                 padding: 3px 12px 3px 0; white-space: nowrap; vertical-align: top; width: 1%; }
table.facts td { padding: 3px 0; overflow-wrap: anywhere; }
.summary { background: var(--card); border-left: 4px solid var(--accent); padding: 12px 16px;
           border-radius: 6px; }
.segment { background: var(--card); border-radius: 8px; padding: 12px 16px; margin: 14px 0;
           box-shadow: 0 1px 3px rgba(0,0,0,.12); }
.segment h3 { margin: 0 0 8px; font-size: 1.05rem; color: var(--accent);
              font-variant-numeric: tabular-nums; }
.thumbs { display: grid; grid-template-columns: repeat(auto-fill, minmax(132px, 1fr));
          gap: 8px; margin: 0 0 10px; }
figure { margin: 0; }
figure img { width: 100%; height: auto; display: block; border-radius: 4px; }
figcaption { font-size: .8rem; color: var(--muted); text-align: center;
             font-variant-numeric: tabular-nums; }
.text { white-space: pre-wrap; overflow-wrap: anywhere; margin: 0; }
.note, .warn { color: var(--muted); font-size: .9rem; }
.warn { color: #b35c00; }
.answer { background: var(--card); border-radius: 8px; padding: 12px 16px; margin: 12px 0; }
.transcript { margin: 10px 0 0; padding: 6px 12px; border-left: 3px solid var(--muted);
              font-size: .92rem; }
.transcript p { margin: 2px 0; overflow-wrap: anywhere; }
.transcript .t { color: var(--muted); font-variant-numeric: tabular-nums; margin-right: 8px; }
svg.curve { width: 100%; height: auto; background: var(--card); border-radius: 8px; }
svg.curve text { font-size: 12px; fill: var(--muted); }
svg.curve .score { fill: none; stroke: var(--accent); stroke-width: 2; }
svg.curve .range { fill: var(--accent); opacity: .18; }
svg.curve .axis { stroke: var(--muted); stroke-width: .5; }
svg.curve .threshold { stroke: #b35c00; stroke-dasharray: 6 4; }
@media (max-width: 520px) {
  main { padding: 10px; } h1 { font-size: 1.3rem; }
  .thumbs { grid-template-columns: repeat(2, 1fr); }
  table.facts th { white-space: normal; } }
"""


@dataclass(frozen=True)
class Thumbnail:
    """A frame as the reports need it: its index, its time and a small JPEG (``THUMB_SIZE``).

    What a long video's result keeps instead of decoded frames, so that a one-hour run holds
    kilobytes per frame, not megabytes; it reads like a :class:`~videovlm.decode.Frame`
    (``index``, ``time_s``, ``image``) wherever a report or a contact sheet takes one, and its
    bytes travel in a window's progress record.
    """

    index: int
    time_s: float
    jpeg: bytes

    @classmethod
    def of(cls, frame: Any) -> Thumbnail:
        if isinstance(frame, Thumbnail):
            return frame
        img = Image.fromarray(frame.image)
        img.thumbnail((THUMB_SIZE, THUMB_SIZE))
        return cls(frame.index, frame.time_s, _jpeg(img, THUMB_QUALITY))

    @property
    def image(self) -> np.ndarray:
        with Image.open(io.BytesIO(self.jpeg)) as img:
            return np.asarray(img.convert("RGB"))

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "time_s": self.time_s,
                "jpeg": base64.b64encode(self.jpeg).decode("ascii")}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Thumbnail:
        return cls(int(d["index"]), float(d["time_s"]), base64.b64decode(d["jpeg"]))


def thumbnail_uri(frame: Any) -> str:
    """A frame as a small JPEG data: URI (the report's thumbnails; the server's too)."""
    jpeg = frame.jpeg if isinstance(frame, Thumbnail) else None
    if jpeg is None:
        img = Image.fromarray(frame.image)
        img.thumbnail((THUMB_SIZE, THUMB_SIZE))
        jpeg = _jpeg(img, THUMB_QUALITY)
    return "data:image/jpeg;base64," + base64.b64encode(jpeg).decode()


def _html(result: Result, stem: str) -> dict[str, bytes]:
    e = html.escape
    by_index = {f.index: f for f in result.frames}
    title = _title(result)
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        # nothing may leave the page: no scripts, fonts, images or styles from anywhere else
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; "
        "img-src data:; style-src 'unsafe-inline'\">",
        f"<title>{e(title)} — videovlm</title>",
        f"<style>{_CSS}</style></head><body><main>",
        f"<h1>{e(title)}</h1>",
        '<table class="facts">',
        *(f"<tr><th>{e(k)}</th><td>{e(str(val))}</td></tr>" for k, val in _facts(result)),
        "</table>",
    ]
    if result.warnings:
        parts += [f'<p class="warn">⚠ {e(w)}</p>' for w in result.warnings]
    if result.summary:
        parts += ["<h2>Summary</h2>", f'<div class="summary"><p class="text">'
                  f"{e(result.summary.strip())}</p></div>"]
    if result.relevance is not None:
        duration = float(result.video.get("duration_s") or 0.0)
        parts += ["<h2>Relevance</h2>", f'<p class="note">{e(_relevance_line(result.relevance))}'
                  "</p>", _curve_svg(result.relevance, duration)]
    if result.segments:
        heading = ("Ranges" if result.relevance is not None
                   else "Scenes" if result.mode == "scenes" else "Timeline")
        parts.append(f"<h2>{heading}</h2>")
        if not result.segments_parsed:
            parts.append('<p class="note">The model\'s text carried no usable times; '
                         "it is shown whole.</p>")
    for seg in result.segments:
        span = f"{format_time(seg.start_s)} – {format_time(seg.end_s)}"
        parts += ['<section class="segment">', f"<h3>{e(span)}</h3>"]
        frames = [by_index[i] for i in seg.frames if i in by_index]
        if frames:
            parts.append('<div class="thumbs">')
            parts += [
                f'<figure><img src="{thumbnail_uri(f)}" alt="frame {f.index} at '
                f'{e(format_time(f.time_s))}" loading="lazy">'
                f"<figcaption>{e(format_time(f.time_s))}</figcaption></figure>"
                for f in frames
            ]
            parts.append("</div>")
        parts.append(f'<p class="text">{e(seg.text.strip())}</p>')
        said = _transcript_lines(seg)
        if said:
            parts += ['<div class="transcript" aria-label="Dialogue">',
                      *(f'<p><span class="t">{e(t)}</span>{e(text)}</p>' for t, text in said),
                      "</div>"]
        parts.append("</section>")
    if result.answers:
        parts.append("<h2>Answers</h2>")
        for a in result.answers:
            parts += ['<div class="answer">', f"<p><strong>Q:</strong> {e(a.question)}</p>"]
            if a.choices:
                parts.append("<ol type=\"A\">" + "".join(f"<li>{e(c)}</li>" for c in a.choices)
                             + "</ol>")
            picked = f" <em>(choice {e(a.choice)})</em>" if a.choice else ""
            parts += [f'<p class="text"><strong>A:</strong> {e(a.answer.strip())}{picked}</p>',
                      "</div>"]
    parts.append("</main></body></html>\n")
    return {f"{stem}.html": "\n".join(parts).encode()}


@dataclass(frozen=True)
class Writer:
    """One output format: its name (as given to ``-f``) and how it renders a result."""

    name: str
    render: Renderer
    description: str


WRITERS: dict[str, Writer] = {
    w.name: w
    for w in (
        Writer("json", _json, "the result JSON, indented"),
        Writer("jsonl", _jsonl, "the result JSON on one line"),
        Writer("srt", _srt, "SubRip subtitles, one cue per segment"),
        Writer("vtt", _vtt, "WebVTT subtitles, one cue per segment"),
        Writer("md", _md, "a Markdown report with the contact sheet beside it"),
        Writer("html", _html, "one self-contained HTML page with thumbnails"),
    )
}


def parse_formats(formats: str | Sequence[str]) -> list[str]:
    """Format names from ``"json,srt"`` or a list; ``all`` means every writer. Order kept."""
    items = formats.split(",") if isinstance(formats, str) else list(formats)
    names: list[str] = []
    for raw in items:
        for name in (p.strip().lower() for p in raw.split(",")):
            if not name:
                continue
            expanded = list(WRITERS) if name == "all" else [name]
            for n in expanded:
                if n not in WRITERS:
                    raise VideoVLMError(
                        f"unknown output format {name!r}: choose from "
                        f"{', '.join(WRITERS)} or all (e.g. -f json,srt)"
                    )
                if n not in names:
                    names.append(n)
    if not names:
        raise VideoVLMError(f"no output format given: choose from {', '.join(WRITERS)} or all")
    return names


def write(result: Result, out_dir: Path, formats: Sequence[str] | str, stem: str) -> list[Path]:
    """Write ``result`` as ``out_dir/<stem>.<format>`` for each format; the paths written.

    Everything is rendered before anything is written, and each file is replaced atomically.
    ``stem`` may contain folders (the batch engine mirrors input paths); they are created.
    """
    names = parse_formats(formats)
    files: dict[str, bytes] = {}
    for name in names:
        files.update(WRITERS[name].render(result, Path(stem).name))
    heard = result.dialogue or {}
    if heard.get("kind") == "speech":  # --transcribe: the whole transcript beside the outputs
        cues = [Cue(c["start_s"], c["end_s"], c["text"]) for c in heard.get("transcript", [])]
        files[f"{Path(stem).name}.transcript.srt"] = srt_bytes(cues)
    target_dir = make_folder(Path(out_dir) / Path(stem).parent)
    paths = []
    for fname, data in files.items():
        path = target_dir / fname
        atomic_write(path, data)
        paths.append(path)
    return paths


TRANSCRIPT_FORMATS: tuple[str, ...] = ("srt", "vtt", "json")
"""What ``videovlm transcribe -f`` writes, as ``<stem>.transcript.<format>``."""


def transcript_formats(formats: str) -> list[str]:
    """Transcript format names from ``"srt,json"`` (order kept, each once); a bad one is one
    line, before any work."""
    names = list(dict.fromkeys(n.strip().lower() for n in formats.split(",") if n.strip()))
    unknown = [n for n in names if n not in TRANSCRIPT_FORMATS]
    if unknown or not names:
        raise VideoVLMError(f"unknown transcript format {(unknown or [''])[0]!r}: choose from "
                            f"{', '.join(TRANSCRIPT_FORMATS)} (e.g. -f srt,json)")
    return names


def write_transcript(cues: Sequence[Timed], out_dir: Path, formats: Sequence[str], stem: str,
                     about: dict[str, Any]) -> list[Path]:
    """Write a transcript (speech recognition's cues) as ``out_dir/<stem>.transcript.<format>``
    for each of :func:`transcript_formats`; the paths written. ``about`` (the video and the
    model) goes into the JSON with the cues. Rendered first, then each file replaced
    atomically, as :func:`write` does."""
    names = list(formats)
    cue_list = [{"start_s": c.start_s, "end_s": c.end_s, "text": c.text} for c in cues]
    render = {
        "srt": lambda: srt_bytes(cues),
        "vtt": lambda: vtt_bytes(cues),
        "json": lambda: (json.dumps({**about, "cues": cue_list}, indent=2, ensure_ascii=False)
                         + "\n").encode(),
    }
    files = {f"{stem}.transcript.{name}": render[name]() for name in names}
    make_folder(out_dir)
    paths = []
    for fname, data in files.items():
        atomic_write(Path(out_dir) / fname, data)
        paths.append(Path(out_dir) / fname)
    return paths
