"""What is said in a video: timed lines of dialogue, from subtitles or speech recognition.

SmolVLM sees frames only; the benchmarks its numbers come from give it the dialogue too. Every
source of dialogue (a subtitle file next to the video or named by the user, a text subtitle
stream inside the container, and later a speech-recognition transcript) becomes the same
thing, a :class:`Dialogue`: a list of :class:`Cue` on the frames' clock (seconds from the
video's first frame, :attr:`~videovlm.plan.FrameRef.time_s`) and a record of where it came
from, so the prompt, the results and the reports treat them alike.

Where the sources are tried is :func:`find_dialogue`, the one place a new source plugs in.
Which cue goes after which frame is :func:`frame_slices` and :func:`assign_cues` (the selection
rule's slices, each cue once); the prompt's layout and budget stay in :mod:`videovlm.pack`.
"""

from __future__ import annotations

import html
import itertools
import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import langcodes
import srt
import webvtt

from videovlm.errors import InputError, RecipeError
from videovlm.probe import VideoInfo, packets

log = logging.getLogger("videovlm")

SUBTITLE_SUFFIXES: tuple[str, ...] = (".srt", ".vtt", ".ass", ".ssa")
"""Subtitle files read: SubRip and WebVTT (through the ``srt`` and ``webvtt-py`` libraries),
ASS/SSA (through PyAV, as the streams inside a container)."""

TEXT_SUBTITLE_CODECS = frozenset({"mov_text", "subrip", "srt", "ass", "ssa", "webvtt", "text"})
"""Subtitle streams that carry text (bitmap ones, DVD and Blu-ray's, need OCR: skipped)."""

OVER_BUDGET_RULES: tuple[str, ...] = ("fewer_frames", "trim")
"""What a prompt does when its dialogue would not fit (``[dialogue] over_budget``): keep all
the dialogue and re-plan with fewer frames, or keep the frames and shorten the dialogue."""

AUTO, NONE = "auto", "none"


@dataclass(frozen=True)
class Cue:
    """One line of dialogue shown or spoken from ``start_s`` to ``end_s`` (seconds from the
    video's first frame, the clock of :class:`~videovlm.plan.FrameRef.time_s`)."""

    start_s: float
    end_s: float
    text: str

    def to_dict(self) -> dict[str, Any]:
        """A segment's ``transcript`` entry in the result JSON."""
        return {"start_s": round(self.start_s, 3), "end_s": round(self.end_s, 3),
                "text": self.text}


@dataclass(frozen=True)
class DialogueSettings:
    """Where a run's dialogue comes from: a recipe's ``[dialogue]`` table (and the CLI's
    ``--subtitles``, ``--subtitle-lang``, which override it).

    ``subtitles``: ``auto`` (a sidecar file next to the video, else a text stream inside it),
    ``none``, or a subtitle file's path. ``subtitle_lang``: a language tag (``en``, ``fra``,
    ``pt-BR``) that picks among several; None takes the first found.
    """

    subtitles: str = AUTO
    subtitle_lang: str | None = None
    # speech recognition (``--transcribe``): the audio's transcript is the dialogue instead
    # (:func:`videovlm.speech.speech_dialogue`), with this model and language
    transcribe: bool = False
    asr_model: str | None = None
    asr_language: str | None = None

    @classmethod
    def from_recipe(cls, section: dict[str, Any]) -> DialogueSettings:
        return cls(subtitles=section.get("subtitles", AUTO),
                   subtitle_lang=section.get("subtitle_lang"),
                   transcribe=bool(section.get("transcribe", False)),
                   asr_model=section.get("asr_model"), asr_language=section.get("asr_language"))

    @property
    def off(self) -> bool:
        return self.subtitles == NONE


@dataclass
class Dialogue:
    """A video's dialogue: its cues in time order, and where they came from (``source``, the
    result JSON's ``dialogue``: ``kind`` sidecar / file / stream, its path or stream index,
    ``language``, ``format``; ``found``: the other subtitles it was chosen among)."""

    cues: list[Cue]
    source: dict[str, Any] = field(default_factory=dict)

    def during(self, start_s: float, end_s: float) -> list[Cue]:
        """The cues shown or spoken at some moment of ``[start_s, end_s)``, in order."""
        return [c for c in self.cues if overlaps(c, start_s, end_s)]


# -- which language ----------------------------------------------------------------------------


def check_language(tag: str | None, where: str) -> str | None:
    """``tag`` as a standard language tag (``eng`` -> ``en``), or a RecipeError naming it."""
    if tag is None or not tag.strip():
        return None
    try:
        return langcodes.standardize_tag(tag.strip())
    except (ValueError, langcodes.LanguageTagError):
        raise RecipeError(f"{where}: {tag!r} is not a language tag (use e.g. en, fr, pt-BR, "
                          "eng)") from None


def _language(tag: str | None) -> str | None:
    """The base language of a tag found in a file (``en`` for ``en-US``, ``eng``); None for
    ``und``, empty, or something that is no language tag (``forced``, ``sdh``)."""
    if not tag:
        return None
    try:
        lang = langcodes.Language.get(tag).language
    except (ValueError, langcodes.LanguageTagError):
        return None
    return None if lang in (None, "und") else lang


# -- reading subtitle text ---------------------------------------------------------------------

_TAGS = re.compile(r"<[^>]*>")  # SRT/VTT markup (<i>, <font ...>, <v Bob>) and control tokens
_ASS_OVERRIDES = re.compile(r"\{[^}]*\}")  # ASS {\i1}, {\pos(10,10)}; SRT files carry them too
_ASS_BREAKS = re.compile(r"\\[Nnh]")


def clean_text(text: str) -> str:
    """A cue's words only: markup stripped (SRT/VTT tags, ASS overrides and line breaks),
    entities decoded, one line. Angle-bracket tags go too, so a subtitle cannot smuggle the
    model's control tokens (``<image>``) into a prompt."""
    text = _ASS_OVERRIDES.sub("", _TAGS.sub("", text))
    text = _ASS_BREAKS.sub(lambda m: " " if m.group(0) == "\\h" else "\n", text)
    text = html.unescape(text)
    return " ".join(line.strip() for line in text.splitlines() if line.strip())


def _cues(raw: Sequence[tuple[float, float, str]], shift_s: float) -> list[Cue]:
    """Cues from (start, end, raw text) on the frames' clock, markup stripped, empty ones
    dropped, in time order."""
    out = []
    for start, end, text in raw:
        words = clean_text(text)
        if words and end > start:  # to the microsecond: the float sums carry no more
            out.append(Cue(round(start + shift_s, 6), round(end + shift_s, 6), words))
    return sorted(out, key=lambda c: (c.start_s, c.end_s))


def _read_text(path: Path) -> str:
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        pass
    try:
        return data.decode("cp1252")  # the usual encoding of SubRip files that are not UTF-8
    except UnicodeDecodeError:
        raise InputError(f"subtitle file {path}: not UTF-8 or Windows-1252 text; convert it "
                         "to UTF-8") from None


def _parse_srt(path: Path) -> list[tuple[float, float, str]]:
    try:
        subs = list(srt.parse(_read_text(path)))
    except srt.SRTParseError as exc:
        raise InputError(f"subtitle file {path}: not valid SubRip ({_first_line(exc)}); fix "
                         "it, or pass --subtitles none") from None
    return [(s.start.total_seconds(), s.end.total_seconds(), s.content) for s in subs]


def _parse_vtt(path: Path) -> list[tuple[float, float, str]]:
    try:
        captions = webvtt.WebVTT.from_string(_read_text(path)).captions
    except webvtt.errors.MalformedFileError as exc:
        raise InputError(f"subtitle file {path}: not valid WebVTT ({exc}); fix it, or pass "
                         "--subtitles none") from None
    return [(c.start_time.in_milliseconds() / 1000, c.end_time.in_milliseconds() / 1000,
             c.raw_text) for c in captions]


def _first_line(exc: Exception) -> str:
    return str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__


def _open_av(path: str | os.PathLike[str], what: str):
    import av

    try:
        return av.open(os.fspath(path), metadata_errors="ignore")
    except (av.FFmpegError, OSError) as exc:
        raise InputError(f"{what} {path}: not readable ({_first_line(exc)}); fix it, or pass "
                         "--subtitles none") from None


def _stream_cues(container, stream) -> list[tuple[float, float, str]]:
    """A text subtitle stream's events as (start, end, text), in the container's seconds."""
    import av

    tb = stream.time_base
    raw = []
    try:
        for packet in packets(container, stream):
            if packet.pts is None or not packet.size:
                continue
            for sub in packet.decode():
                text = getattr(sub, "dialogue", b"")
                if text:
                    start = float(packet.pts * tb)
                    raw.append((start, start + float((packet.duration or 0) * tb),
                                bytes(text).decode("utf-8", "replace")))
    except av.FFmpegError as exc:
        raise InputError(f"subtitle stream {stream.index} of {container.name}: not readable "
                         f"({_first_line(exc)}); pass --subtitles none") from None
    return raw


def _parse_ass(path: Path) -> list[tuple[float, float, str]]:
    with _open_av(path, "subtitle file") as container:
        if not container.streams.subtitles:
            raise InputError(f"subtitle file {path}: not valid ASS/SSA (no events); fix it, "
                             "or pass --subtitles none")
        return _stream_cues(container, container.streams.subtitles[0])


_PARSERS = {".srt": _parse_srt, ".vtt": _parse_vtt, ".ass": _parse_ass, ".ssa": _parse_ass}


def read_subtitle_file(path: str | os.PathLike[str], shift_s: float = 0.0) -> list[Cue]:
    """The cues of a SubRip, WebVTT or ASS/SSA file, ``shift_s`` added to their times; one
    InputError line for a missing, unknown or garbled file (or one that holds no cues)."""
    p = Path(path)
    parser = _PARSERS.get(p.suffix.lower())
    if parser is None:
        raise InputError(f"subtitle file {p}: unknown format {p.suffix or '(no suffix)'}; use a "
                         f"{', '.join(SUBTITLE_SUFFIXES)} file")
    if not p.is_file():
        raise InputError(f"subtitle file {p}: no such file")
    cues = _cues(parser(p), shift_s)
    if not cues:
        raise InputError(f"subtitle file {p}: holds no timed text; fix it, or pass "
                         "--subtitles none")
    return cues


# -- the sources -------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Candidate:
    """Subtitles found for a video, not yet read."""

    kind: str  # "sidecar" | "stream"
    language: str | None
    path: str
    stream: int | None = None
    format: str = ""

    def label(self) -> str:
        where = Path(self.path).name if self.stream is None else f"stream {self.stream}"
        return f"{where} ({self.language or 'no language tag'})"


def sidecars(video: str | os.PathLike[str]) -> list[Path]:
    """Subtitle files next to ``video`` that belong to it: ``clip.srt``, ``clip.en.vtt``,
    ``clip.pt-BR.forced.srt`` ..., the plain one first, then by name."""
    p = Path(video)
    try:
        names = os.listdir(p.parent or ".")
    except OSError:
        return []
    found = [p.parent / n for n in names
             if Path(n).suffix.lower() in SUBTITLE_SUFFIXES
             and (Path(n).stem == p.stem or n.startswith(p.stem + "."))]
    return sorted(found, key=lambda f: (Path(f.name).stem != p.stem, f.name))


def _sidecar_language(video: Path, sidecar: Path) -> str | None:
    """The language tag in a subtitle file's name (``clip.en.srt``, ``clip.eng.forced.srt``,
    ``notes.fr.vtt``): the first dotted part after the video's name (or the file's own first
    part) that is a language tag."""
    stem = Path(sidecar.name).stem
    head = video.stem if stem.startswith(video.stem + ".") else stem.split(".")[0]
    extra = stem[len(head):].strip(".")
    return next((lang for part in extra.split(".") if (lang := _language(part))), None)


def _candidates(video: str, container) -> list[_Candidate]:
    out = [_Candidate("sidecar", _sidecar_language(Path(video), s), str(s),
                      format=s.suffix.lower().lstrip("."))
           for s in sidecars(video)]
    streams = [s for s in container.streams.subtitles
               if s.codec_context is not None and s.codec_context.name in TEXT_SUBTITLE_CODECS]
    default = [s for s in streams if s.disposition & s.disposition.__class__.default]
    for s in [*default, *(s for s in streams if s not in default)]:
        out.append(_Candidate("stream", _language(s.metadata.get("language")), video,
                              stream=s.index, format=s.codec_context.name))
    return out


def _pick(candidates: list[_Candidate], lang: str | None, video: str) -> _Candidate | None:
    if not candidates:
        return None
    if lang is None:
        return candidates[0]
    want = _language(lang)
    for c in candidates:
        if c.language == want:
            return c
    raise InputError(f"{video}: no subtitles in {lang}; found "
                     f"{', '.join(c.label() for c in candidates)}: pick one with "
                     "--subtitle-lang or --subtitles FILE, or pass --subtitles none")


def find_dialogue(path: str | os.PathLike[str], info: VideoInfo,
                  settings: DialogueSettings) -> Dialogue | None:
    """The dialogue ``settings`` ask for, on ``info``'s frames' clock, or None (none found,
    or turned off).

    The sources, in order: the file ``settings.subtitles`` names; else (``auto``) a sidecar
    next to the video, then a text subtitle stream inside it (the default-flagged one first),
    the first in ``settings.subtitle_lang`` when one is asked. Times are moved onto the
    frames' clock: a stream's packets are on the container's timeline (the video's first
    frame is ``info.start_s`` on it); a sidecar is timed from the start of playback, the
    container's start, as players show it. (Speech recognition, ``--transcribe``, is the other
    source: :func:`videovlm.speech.speech_dialogue`, chosen by :func:`videovlm.video.load_video`.)
    """
    if settings.off:
        return None
    video = os.fspath(path)
    with _open_av(video, "video") as container:
        # the container's start (microseconds): where a player's clock, and a sidecar's, is 0
        start = container.start_time
        playback_start_s = info.start_s if start is None else start / 1_000_000
        sidecar_shift = playback_start_s - info.start_s
        if settings.subtitles != AUTO:
            cues = read_subtitle_file(settings.subtitles, sidecar_shift)
            given = Path(settings.subtitles)
            return Dialogue(cues, {"kind": "file", "path": str(given),
                                   "language": _sidecar_language(Path(video), given),
                                   "format": given.suffix.lower().lstrip(".")})
        candidates = _candidates(video, container)
        chosen = _pick(candidates, settings.subtitle_lang, video)
        if chosen is None:
            return None
        if chosen.kind == "sidecar":
            cues = read_subtitle_file(chosen.path, sidecar_shift)
        else:
            stream = container.streams[chosen.stream]
            cues = _cues(_stream_cues(container, stream), -info.start_s)
    source = {"kind": chosen.kind, "path": chosen.path, "stream": chosen.stream,
              "language": chosen.language, "format": chosen.format}
    if len(candidates) > 1:
        source["found"] = [c.label() for c in candidates]
    # found, not asked for: say so (a person may not know the file has subtitles)
    log.info("%s: %d subtitle cues from %s%s", Path(video).name, len(cues), chosen.label(),
             f" (of {len(candidates)} found)" if len(candidates) > 1 else "")
    return Dialogue(cues, source)


# -- dialogue per frame ------------------------------------------------------------------------


def overlaps(cue: Cue, start_s: float, end_s: float) -> bool:
    """Whether ``cue`` is on at some moment of ``[start_s, end_s)``."""
    return cue.start_s < end_s and cue.end_s > start_s


def at_times(cues: Sequence[Cue], times: Sequence[float]) -> list[Cue]:
    """The cues on screen at one of ``times`` (``start_s <= t < end_s``), each once, in order.

    Video-MME's subtitle protocol (lmms-eval's ``videomme_w_subtitle``) shows the subtitle
    lines said at the sampled frames' instants, not at the slices around them: this is that
    rule, on the frames' clock; a line said only between two sampled frames is left out.
    """
    return [c for c in cues if any(c.start_s <= t < c.end_s for t in times)]


def frame_slices(times: Sequence[float], start_s: float, end_s: float, planned: int,
                 seek: str = "exact") -> list[tuple[float, float]]:
    """The part of ``[start_s, end_s]`` each frame was taken for: the union of the selection
    rule's slices (``planned`` equal ones) whose centre chose it.

    ``times`` are the frames the rule kept, in order. In exact mode a slice's frame is the
    last one on screen at its centre; in keyframe mode the nearest (ties to the earlier), as
    :func:`~videovlm.plan.plan` picks them. ``planned`` 0 (frames chosen by several plans, a
    scene-mode video asked as a whole) cuts halfway between frames instead.
    """
    n = len(times)
    if n == 0:
        return []
    if planned <= 0:
        mids = [(a + b) / 2 for a, b in itertools.pairwise(times)]
        edges = [start_s, *mids, end_s]
        return [(edges[i], edges[i + 1]) for i in range(n)]
    width = (end_s - start_s) / planned
    lo: list[float | None] = [None] * n
    hi: list[float] = [start_s] * n
    for j in range(planned):
        centre = start_s + (j + 0.5) * width
        if seek == "keyframe":
            i = min(range(n), key=lambda k: (abs(times[k] - centre), k))
        else:
            i = max([k for k in range(n) if times[k] <= centre + 1e-6] or [0])
        if lo[i] is None:
            lo[i] = start_s + j * width
        hi[i] = start_s + (j + 1) * width
    out = []
    for i in range(n):  # a frame no slice chose (cannot happen with the rule's own frames)
        a = lo[i] if lo[i] is not None else times[i]
        out.append((a, max(hi[i], a)))
    return out


def assign_cues(cues: Sequence[Cue], slices: Sequence[tuple[float, float]]) -> list[list[Cue]]:
    """Each cue after the first frame whose slice it overlaps (each cue once, in order);
    cues outside every slice go nowhere."""
    out: list[list[Cue]] = [[] for _ in slices]
    for cue in cues:
        for i, (a, b) in enumerate(slices):
            if overlaps(cue, a, b):
                out[i].append(cue)
                break
    return out


def trim_lines(lines: Sequence[str], words: int) -> list[str]:
    """The first ``words`` words of ``lines``, whole lines kept while they fit and an
    ellipsis where one was cut; lines past the cut are dropped."""
    out: list[str] = []
    left = words
    for line in lines:
        parts = line.split()
        if len(parts) <= left:
            out.append(line)
            left -= len(parts)
            continue
        if left:
            out.append(" ".join(parts[:left]) + " …")
        elif out:
            out[-1] += " …"
        break
    return out


def word_count(lines: Sequence[str]) -> int:
    return sum(len(line.split()) for line in lines)
