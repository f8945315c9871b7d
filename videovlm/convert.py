"""Benchmarks' published question files turned into our questions format (``videovlm
eval-convert``).

Each benchmark ships its questions as a table (Hugging Face parquet shards; JSON or JSON Lines
with the same columns where one is given out that way). :func:`convert` reads every row, maps
the benchmark's columns onto ``video``, ``question``, ``choices``, ``answer`` (a letter) and
``id``, and keeps every other column under its own name, so a report can break accuracy down by
the benchmark's own categories and a protocol can read the subtitles (``questions.Entry.fields``
and ``evaluate.EvalItem.fields`` carry them through). Nothing is guessed: a table without the
columns a benchmark has is refused in one line naming the missing ones, and a row that breaks
the format (an answer position outside the options, an empty option) is a problem said with
its file and row, all of them at once; nothing is written unless every row converts.

The schemas, as published (column names read from the datasets' cards and from lmms-eval's
loaders, ``lmms_eval/tasks/cinepile/utils.py`` and ``lmms_eval/tasks/videomme/utils.py`` in
EvolvingLMMs-Lab/lmms-eval):

CinePile (``tomg-group-umd/cinepile``, configs ``default`` and ``v2``, ``test`` split, 4,941
rows; ``*_with_videoID`` copies add ``videoID``): ``movie_name``, ``year``, ``genre`` (list),
``yt_clip_title``, ``yt_clip_link``, ``movie_scene``, ``subtitles`` (the scene's subtitles, one
string), ``question``, ``choices`` (five strings), ``answer_key`` (the answer's text),
``answer_key_position`` (its 0-based position in ``choices``), ``question_category``,
``hard_split``, ``visual_reliance``. lmms-eval scores the letter at ``answer_key_position``, so
that is the gold letter here (``answer_key`` and the position stay among the kept fields, for
audits). The video is the YouTube clip: ``videoID`` where the table
has it (what lmms-eval opens, ``<videoID>.mp4``), else the id in ``yt_clip_link``
(``watch?v=ID`` or ``youtu.be/ID``), the name ``yt-dlp -o "%(id)s.%(ext)s"`` saves it under.
CinePile has no question ids: a question's id is its clip's id and its number among that clip's
questions, in file order (``<clip>-0``, ``<clip>-1``...).

Video-MME (``lmms-lab/Video-MME``, config ``videomme``, ``videomme/test-00000-of-00001.parquet``,
2,700 rows; videos in ``videos_chunked_*.zip`` as ``data/<videoID>.mp4``, subtitles in
``subtitle.zip`` as ``subtitle/<videoID>.srt``): ``video_id`` (``001``...), ``duration``
(``short`` / ``medium`` / ``long``), ``domain``, ``sub_category``, ``url``, ``videoID`` (the
YouTube id the files are named after), ``question_id`` (``001-1``...), ``task_type``,
``question``, ``options`` (``"A. text"`` strings), ``answer`` (a letter); some revisions add
``language`` and ``Subtitle``. The video is ``<videoID>.mp4``, as lmms-eval opens it; the id is
``question_id``; options keep their text without the ``A.`` labels (ours are assigned again,
in the same order). With ``subtitle_dir`` every question whose video has a
``<videoID>.srt`` there gets its path as ``subtitle_file`` (the ``videomme_subtitles``
protocol reads it; a video with none has no such key, and that protocol then says "No
subtitles available", as lmms-eval does).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from videovlm.errors import VideoVLMError
from videovlm.files import atomic_write
from videovlm.questions import QuestionsFileError
from videovlm.tasks import CINEPILE, VIDEOMME
from videovlm.text import LETTERS, MAX_CHOICES, option_texts

SUFFIXES: tuple[str, ...] = (".parquet", ".json", ".jsonl")
"""The table files read: parquet (through pyarrow), a JSON list of rows, JSON Lines."""

SUBTITLE_FIELD = "subtitle_file"
"""The key eval-convert writes a question's subtitle file under (Video-MME's ``.srt``): an
absolute path, or one relative to the videos folder when written by hand."""

_SHARD = re.compile(r"^(?P<split>[A-Za-z0-9_.]+?)-\d{5}-of-\d{5}")  # HF: test-00000-of-00001


class ConvertError(VideoVLMError):
    """A source that is not the benchmark's table (unreadable, wrong columns): one line."""


@dataclass(frozen=True)
class Row:
    """One row of the source table and where it is (``FILE row N``, 1-based) for problems."""

    where: str
    values: dict[str, Any]


@dataclass(frozen=True)
class Benchmark:
    """How one benchmark's table becomes questions: the columns it must have (any one of each
    alternative tuple), and the function that maps one row."""

    name: str
    title: str
    required: tuple[str | tuple[str, ...], ...]
    convert: Callable[[Row, dict[str, int]], dict[str, Any]]

    def missing(self, columns: Sequence[str]) -> list[str]:
        have = set(columns)
        out = []
        for need in self.required:
            alternatives = (need,) if isinstance(need, str) else need
            if not have.intersection(alternatives):
                out.append(" or ".join(alternatives))
        return out


# -- reading tables ----------------------------------------------------------------------------


def source_files(src: str | os.PathLike[str], split: str | None = None) -> list[Path]:
    """The table files of ``src``: the file itself, or a folder's parquet / JSON / JSON Lines
    files (its shards, in name order). A folder holding several splits' shards
    (``test-00000-of-00001.parquet``, ``train-...``) needs ``split``; with it, only that
    split's files are read."""
    path = Path(src)
    if path.is_file():
        files = [path]
    elif path.is_dir():
        files = sorted(p for p in path.iterdir()
                       if p.is_file() and p.suffix.lower() in SUFFIXES)
        if not files:
            raise ConvertError(f"{path}: no {', '.join(SUFFIXES)} files in this folder; give "
                               "the benchmark's question file or the folder of its shards")
    else:
        raise ConvertError(f"{path}: no such file or folder")
    splits = {_split_of(f) for f in files if _SHARD.match(f.name)}
    if split is not None:
        files = [f for f in files if _split_of(f) == split]
        if not files:
            raise ConvertError(f"{path}: no files of split {split!r}"
                               + (f" (found {', '.join(sorted(splits))})" if splits else ""))
    elif len(splits) > 1:
        raise ConvertError(f"{path}: holds the shards of several splits "
                           f"({', '.join(sorted(splits))}): pick one with --split")
    for f in files:
        if f.suffix.lower() not in SUFFIXES:
            raise ConvertError(f"{f}: not a {', '.join(SUFFIXES)} file")
    return files


def _split_of(f: Path) -> str:
    """A shard's split (``test`` of ``test-00000-of-00001.parquet``), else the file's stem."""
    m = _SHARD.match(f.name)
    return m.group("split") if m else f.stem


def _parquet_rows(path: Path) -> tuple[list[str], list[dict[str, Any]]]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise ConvertError("reading parquet needs pyarrow: pip install 'videovlm[eval]'"
                           ) from None
    import pyarrow as pa

    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as exc:
        raise ConvertError(f"{path}: not a readable parquet file ({_first_line(exc)})"
                           ) from None
    return table.column_names, table.to_pylist()


def _json_rows(path: Path) -> tuple[list[str], list[dict[str, Any]]]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConvertError(f"{path}: not readable as UTF-8 text ({_first_line(exc)})") from None
    try:
        if text.lstrip().startswith("["):
            rows = json.loads(text)
        else:
            rows = [json.loads(line) for line in text.splitlines() if line.strip()]
    except ValueError as exc:
        raise ConvertError(f"{path}: not a JSON list of rows nor JSON Lines "
                           f"({_first_line(exc)})") from None
    if not all(isinstance(r, dict) for r in rows):
        raise ConvertError(f"{path}: rows must be JSON objects, one per question")
    columns: dict[str, None] = {}
    for r in rows:
        columns.update(dict.fromkeys(r))
    return list(columns), rows


def read_rows(files: Sequence[Path], benchmark: Benchmark) -> Iterator[Row]:
    """Every row of ``files`` in order, each file's columns checked against ``benchmark``'s
    first (a file of another benchmark, or of none, is one line naming what it lacks)."""
    for f in files:
        columns, rows = (_parquet_rows(f) if f.suffix.lower() == ".parquet" else _json_rows(f))
        missing = benchmark.missing(columns)
        if missing:
            raise ConvertError(f"{f}: not a {benchmark.title} question file: no column "
                               f"{', '.join(missing)} (it has "
                               f"{', '.join(columns) or 'no columns'})")
        if not rows:
            raise ConvertError(f"{f}: holds no rows")
        for i, values in enumerate(rows, 1):
            yield Row(f"{f} row {i}", values)


def _first_line(exc: Exception) -> str:
    return str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__


# -- the benchmarks ----------------------------------------------------------------------------


def _text(row: Row, key: str) -> str:
    value = row.values.get(key)
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{key} must be a non-empty string, got {value!r}")
    return value.strip()


def _options(row: Row, key: str) -> list[str]:
    value = row.values.get(key)
    if (not isinstance(value, list) or not 2 <= len(value) <= MAX_CHOICES
            or not all(isinstance(c, str) and c.strip() for c in value)):
        raise ValueError(f"{key} must be a list of 2 to {MAX_CHOICES} non-empty strings, got "
                         f"{value!r}")
    return option_texts(value)


def _fields(row: Row, mapped: Sequence[str]) -> dict[str, Any]:
    """The row's other columns, under their own names (JSON-ready values)."""
    return {k: v for k, v in row.values.items() if k not in mapped}


_YOUTUBE_ID = re.compile(r"(?:[?&]v=|youtu\.be/|/shorts/|/embed/)([A-Za-z0-9_-]{6,})")


def youtube_id(link: str) -> str | None:
    """The video id in a YouTube link (``watch?v=ID``, ``youtu.be/ID``, ``/shorts/ID``)."""
    m = _YOUTUBE_ID.search(link)
    return m.group(1) if m else None


def _cinepile(row: Row, seen: dict[str, int]) -> dict[str, Any]:
    question = _text(row, "question")
    choices = _options(row, "choices")
    pos = row.values.get("answer_key_position")
    if isinstance(pos, bool) or not isinstance(pos, int) or not 0 <= pos < len(choices):
        raise ValueError(f"answer_key_position must be 0 to {len(choices) - 1}, got {pos!r}")
    subtitles = row.values.get("subtitles")
    if subtitles is not None and not isinstance(subtitles, str):
        raise ValueError(f"subtitles must be a string (the scene's subtitles), got "
                         f"{type(subtitles).__name__}")
    clip = row.values.get("videoID")
    if not (isinstance(clip, str) and clip.strip()):
        link = row.values.get("yt_clip_link")
        clip = youtube_id(link) if isinstance(link, str) else None
        if clip is None:
            raise ValueError(f"yt_clip_link {link!r} is not a YouTube video link, and the row "
                             "has no videoID")
    clip = clip.strip()
    number = seen[clip] = seen.get(clip, -1) + 1
    return {"id": f"{clip}-{number}", "video": clip, "question": question, "choices": choices,
            "answer": LETTERS[pos], **_fields(row, ("question", "choices"))}


def _videomme(row: Row, seen: dict[str, int]) -> dict[str, Any]:
    question = _text(row, "question")
    choices = _options(row, "options")
    answer = _text(row, "answer").upper()
    if answer not in LETTERS[:len(choices)]:
        raise ValueError(f"answer {answer!r} is not an option letter "
                         f"(A-{LETTERS[len(choices) - 1]})")
    ident = _text(row, "question_id")
    if ident in seen:
        raise ValueError(f"question_id {ident!r} repeats")
    seen[ident] = 1
    return {"id": ident, "video": _text(row, "videoID"), "question": question,
            "choices": choices, "answer": answer,
            **_fields(row, ("question", "options", "answer", "question_id"))}


BENCHMARKS: dict[str, Benchmark] = {b.name: b for b in (
    Benchmark(CINEPILE, "CinePile",
              ("question", "choices", "answer_key", "answer_key_position", "subtitles",
               ("videoID", "yt_clip_link")), _cinepile),
    Benchmark(VIDEOMME, "Video-MME",
              ("videoID", "question_id", "question", "options", "answer"), _videomme),
)}


# -- converting --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Converted:
    """What :func:`convert` wrote: how many questions about how many videos, and where."""

    path: Path
    questions: int
    videos: int
    subtitles: int  # questions given a subtitle file (Video-MME with subtitle_dir)


def convert_rows(benchmark: str, src: str | os.PathLike[str], *, ext: str = ".mp4",
                 split: str | None = None,
                 subtitle_dir: str | os.PathLike[str] | None = None) -> list[dict[str, Any]]:
    """The questions of ``benchmark``'s table at ``src`` (a file, or a folder of shards), in
    file order; every problem raised at once as a :class:`QuestionsFileError` (one line per
    row), a source that is no such table as a :class:`ConvertError`.

    ``ext`` is the videos' file extension (``.mp4``: what the benchmarks' downloads and yt-dlp
    save; ``.mkv`` for example when the files were remuxed). ``subtitle_dir`` (Video-MME's
    ``subtitle/`` folder) adds ``subtitle_file`` to every question whose video has
    ``<videoID>.srt`` there.
    """
    if benchmark not in BENCHMARKS:
        raise ConvertError(f"unknown benchmark {benchmark!r}: use {', '.join(BENCHMARKS)}")
    spec = BENCHMARKS[benchmark]
    ext = ext if ext.startswith(".") else f".{ext}"
    if not re.fullmatch(r"\.[A-Za-z0-9]+", ext):
        raise ConvertError(f"--ext {ext!r}: give a file extension such as .mp4 or mkv")
    subs = None
    if subtitle_dir is not None:
        subs = Path(subtitle_dir).absolute()
        if not subs.is_dir():
            raise ConvertError(f"--subtitle-dir {subtitle_dir}: no such folder (Video-MME's "
                               "subtitle.zip unpacks to subtitle/<videoID>.srt)")
    problems: list[str] = []
    out: list[dict[str, Any]] = []
    seen: dict[str, int] = {}
    for row in read_rows(source_files(src, split), spec):
        try:
            q = spec.convert(row, seen)
        except ValueError as exc:
            problems.append(f"{row.where}: {exc}")
            continue
        stem = q["video"]
        q["video"] = stem + ext
        if subs is not None and (subs / f"{stem}.srt").is_file():
            q[SUBTITLE_FIELD] = str(subs / f"{stem}.srt")
        out.append(q)
    if problems:
        raise QuestionsFileError(problems)
    return out


def convert(benchmark: str, src: str | os.PathLike[str], out: str | os.PathLike[str], *,
            ext: str = ".mp4", split: str | None = None,
            subtitle_dir: str | os.PathLike[str] | None = None) -> Converted:
    """Write :func:`convert_rows`' questions to ``out`` as JSON Lines, atomically: nothing is
    written unless the whole source converts."""
    rows = convert_rows(benchmark, src, ext=ext, split=split, subtitle_dir=subtitle_dir)
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    try:
        path = atomic_write(out, text)
    except OSError as exc:
        raise ConvertError(f"cannot write {out}: {exc.strerror or exc}") from None
    return Converted(path, len(rows), len({r["video"] for r in rows}),
                     sum(SUBTITLE_FIELD in r for r in rows))
