"""A batch's inputs: which files of a folder are videos (by content, not only by name), the key
each one is recorded under, and where its output files go inside the output folder."""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from videovlm.errors import InputError
from videovlm.files import make_folder
from videovlm.probe import MOV_BOXES

# stems of the files a run keeps beside the per-video ones (batch, and eval's scores): a video
# whose output stem is one of these is renamed, or its ``<stem>.json`` would replace them
_RUN_FILE_STEMS = frozenset({"results", "batch", "predictions", "summary"})

# Extensions that declare a video. A file with one of these, or with no extension at all, is a
# candidate by default; its content still has to look like a video container (see sniff_video).
VIDEO_EXTENSIONS = frozenset({
    ".mp4", ".m4v", ".mov", ".qt", ".mkv", ".webm", ".avi", ".wmv", ".asf", ".flv", ".mpg",
    ".mpeg", ".m2v", ".ts", ".mts", ".m2ts", ".3gp", ".3g2", ".ogv", ".mxf", ".vob", ".gifv",
})

# ISO-BMFF brands that are audio-only (an .m4a renamed .mp4 is not a video).
_AUDIO_BRANDS = {b"M4A ", b"M4B ", b"M4P ", b"F4A ", b"F4B "}


def sniff_video(path: str | os.PathLike[str]) -> bool:
    """Whether the file starts like a video container, from its first bytes only.

    Cheap enough to run on every file of a large tree (one 512-byte read), and strict enough that
    text, images, archives and audio-only MP4s are not taken for videos; the decoder has the
    final word (a file that passes but does not decode gets an error record).
    """
    try:
        with open(path, "rb") as fh:
            head = fh.read(512)
    except OSError:
        return False
    if len(head) < 12:
        return False
    if head[4:8] in MOV_BOXES:  # MP4 / MOV / 3GP / M4V (ISO base media)
        return not (head[4:8] == b"ftyp" and head[8:12] in _AUDIO_BRANDS)
    if head.startswith(b"\x1a\x45\xdf\xa3"):  # Matroska / WebM (EBML)
        return True
    if head.startswith(b"RIFF") and head[8:12] in (b"AVI ", b"AVIX"):
        return True
    if head.startswith(b"\x30\x26\xb2\x75\x8e\x66\xcf\x11"):  # ASF / WMV
        return True
    if head.startswith(b"FLV\x01"):
        return True
    if head.startswith((b"\x00\x00\x01\xba", b"\x00\x00\x01\xb3")):  # MPEG program / video ES
        return True
    if head.startswith(b"\x06\x0e\x2b\x34\x02\x05\x01\x01"):  # MXF
        return True
    if head.startswith(b"OggS"):  # Ogg: video only if a Theora/VP8/Dirac header is in the page
        return any(tag in head for tag in (b"\x80theora", b"OVP80", b"BBCD"))
    if head[0] == 0x47 and len(head) >= 377 and head[188] == 0x47 and head[376] == 0x47:
        return True  # MPEG transport stream: sync byte every 188 bytes
    return len(head) >= 197 and head[4] == 0x47 and head[196] == 0x47  # M2TS: 192-byte packets


@dataclass(frozen=True)
class Job:
    """One input of a batch. ``input`` (its path relative to the batch's folder, POSIX
    separators) is the key of its record, stable across runs and machines, so resume works even
    when the folder is mounted elsewhere."""

    path: Path
    input: str


@dataclass
class Found:
    """What a folder walk found: the inputs, and candidates left out because their content is
    not a video (reported so that a misnamed file is not silently ignored)."""

    jobs: list[Job]
    not_video: list[str] = field(default_factory=list)


def _matches(rel: str, patterns: Sequence[str]) -> bool:
    name = rel.rsplit("/", 1)[-1]
    return any(fnmatch.fnmatchcase(rel, p) or fnmatch.fnmatchcase(name, p) for p in patterns)


def find_videos(
    root: str | os.PathLike[str],
    *,
    recursive: bool = True,
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    skip: Sequence[str | os.PathLike[str]] = (),
) -> Found:
    """Every video under ``root``, sorted by relative path (job paths are absolute).

    A candidate is a file with a video extension or none (or, when ``include`` globs are given,
    a file matching one of them, whatever its extension), not matching an ``exclude`` glob, and
    not hidden; it is kept when :func:`sniff_video` says its content is a video. Globs match the
    relative path or the file name. Symlinked directories are not followed (no loops, no walking
    out of the tree); symlinked files are read. ``skip`` folders (the output folder when it lies
    inside ``root``) are not walked.
    """
    if not Path(root).is_dir():
        raise InputError(f"{root} is not a folder; give the folder that holds the videos")
    root = Path(root).absolute()  # records name files unambiguously, wherever they are read
    skipped = {os.path.realpath(s) for s in skip}
    found = Found(jobs=[])
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        here = Path(dirpath)
        dirnames[:] = sorted(
            d for d in dirnames
            if not d.startswith(".") and os.path.realpath(here / d) not in skipped
        )
        if not recursive:
            dirnames[:] = []
        for name in sorted(filenames):
            path = here / name
            rel = path.relative_to(root).as_posix()
            if include:
                if not _matches(rel, include):
                    continue
            elif name.startswith(".") or (
                Path(name).suffix and Path(name).suffix.lower() not in VIDEO_EXTENSIONS
            ):
                continue
            if _matches(rel, exclude) or not path.is_file():
                continue
            if sniff_video(path):
                found.jobs.append(Job(path=path, input=rel))
            else:
                found.not_video.append(rel)
    found.jobs.sort(key=lambda j: j.input)
    return found


def output_location(out_dir: str | os.PathLike[str], rel: str) -> tuple[Path, str]:
    """Where an input's files go: ``(folder, stem)`` inside ``out_dir``, from its relative path.

    ``a/x.mp4`` -> ``(OUT/a, "x.mp4")``, so ``OUT/a/x.mp4.json``: inputs that differ anywhere in
    their path never share an output. Whatever the path holds (``..``, a leading ``/``, a drive,
    backslashes), the result stays inside ``out_dir``; :func:`ensure_inside` checks the folder
    again once it exists, in case a symlink inside ``out_dir`` points elsewhere.
    """
    parts = []
    for part in PurePosixPath(rel.replace("\\", "/")).parts:
        if part in ("/", "", "."):
            continue
        # percent-escaped, not replaced: "cam:1" and "cam_1" must stay two names
        part = part.replace("%", "%25").replace(":", "%3A")
        parts.append("%2E" * len(part) if set(part) == {"."} else part)
    if not parts:
        parts = ["%2F"]
    if len(parts) == 1 and parts[0] in _RUN_FILE_STEMS:  # a video named "results" (no extension)
        parts[0] = f"%{ord(parts[0][0]):02X}{parts[0][1:]}"  # would overwrite results.jsonl
    return Path(out_dir).joinpath(*parts[:-1]), parts[-1]


def ensure_inside(out_dir: str | os.PathLike[str], folder: Path) -> Path:
    """Create ``folder`` and check that it really lies inside ``out_dir`` (symlinks resolved)."""
    make_folder(folder)
    real, base = os.path.realpath(folder), os.path.realpath(out_dir)
    if os.path.commonpath([real, base]) != base:
        raise InputError(f"output folder {folder} resolves to {real}, outside {base}; "
                         "remove the symlink or choose another output folder")
    return folder
