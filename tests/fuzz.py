"""The fuzz corpus: damaged copies of the test clips, and the rule every run on one must meet.

Made from the clips themselves, seeded, so the same seed gives the same bytes on any machine:
per clip, ``TRUNCATIONS`` copies cut at even points across its length, ``FLIPS`` copies with
random bytes overwritten in the payload (MP4/MOV ``mdat``, Matroska's clusters, AVI's ``movi``,
the packets after a TS file's tables), and ``HEADERS`` copies with a header structure damaged
(an MP4 box among moov/trak/mdhd/stts/stsz/stsc/stco/ctts/stss/elst/avcC..., a Matroska EBML
element among EBML/Segment/Info/Tracks/TrackEntry/CodecPrivate/Cues/Cluster..., an AVI chunk):
its size field or the first bytes of its body.

The rule (:func:`check`): a run of ``videovlm frames`` ends within ``RUN_LIMIT_S`` with exit 0 and
only right frames (each frame's barcode, :func:`tests.media.read_index`, names the index it was
reported as; fewer frames and a warning are fine) or exit 2 with exactly one line; stderr holds
only videovlm's lines; never a traceback, a hang, a wrong frame or a death by a signal. A frame
whose barcode no longer reads is counted as ``damaged``, not as wrong, and so is one whose
barcode reads another index in a file whose payload does not decode cleanly: FFmpeg conceals a
damaged packet with its reference pictures (a corrupted frame 15 shows frame 12, and the frames
predicted from it show worse, measured), whatever decoder or seek order is used, so only where
the oracle (:func:`decodes_cleanly`: PyAV, every packet in order, no videovlm code) finds every
frame whole is a different barcode a wrong frame. A cut file's frames are all checked strictly.
The samples carry no barcode: their frames are compared with the undamaged file's frame of the
same index instead (``differs`` when far from it).

``benchmarks/fuzz.py`` runs the whole corpus and prints the figures; ``tests/test_fuzz.py`` runs
a seeded sample of it in CI.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from tests import media

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "samples"
TRUNCATIONS, FLIPS, HEADERS = 20, 50, 20
RUN_LIMIT_S = 30.0
FRAMES_N = 6
# the barcode clips of the corpus: tests/media.make_video settings, one per container and codec
CLIPS: dict[str, dict] = {
    "h264_bframes.mp4": {"n_frames": 60, "gop": 12, "bframes": 2},
    "h264_faststart.mp4": {"n_frames": 60, "gop": 12, "faststart": True},
    "h264.mkv": {"n_frames": 60, "gop": 12, "bframes": 2},
    "vp9.webm": {"codec": "vp9", "n_frames": 60, "gop": 12},
    "hevc.mp4": {"codec": "hevc", "n_frames": 60, "gop": 12, "bframes": 2},
    "mpeg4.avi": {"codec": "mpeg4", "n_frames": 60, "gop": 12},
    "mjpeg.mov": {"codec": "mjpeg", "n_frames": 30},
    "h264.ts": {"n_frames": 60, "gop": 12, "bframes": 2},
}
_MP4_BOXES = (b"moov", b"trak", b"mdia", b"minf", b"stbl", b"mvhd", b"tkhd", b"mdhd", b"hdlr",
              b"stsd", b"avcC", b"hvcC", b"stts", b"stsz", b"stsc", b"stco", b"co64", b"ctts",
              b"stss", b"elst", b"edts", b"mdat")
_EBML_IDS = (b"\x1a\x45\xdf\xa3", b"\x18\x53\x80\x67", b"\x15\x49\xa9\x66", b"\x16\x54\xae\x6b",
             b"\xae", b"\x63\xa2", b"\x1c\x53\xbb\x6b", b"\x1f\x43\xb6\x75", b"\x2a\xd7\xb1",
             b"\x44\x89", b"\xe7", b"\xa3", b"\xb0", b"\xba", b"\x86", b"\xd7", b"\x11\x4d\x9b\x74")
_AVI_CHUNKS = (b"hdrl", b"avih", b"strl", b"strh", b"strf", b"movi", b"idx1", b"00dc")


@dataclass(frozen=True)
class Damaged:
    """One corpus file: where it is, which clip it came from, how it was damaged."""

    path: Path
    clip: str
    kind: str  # truncated | flipped | header
    barcode: bool  # frames carry their index (tests/media.py); else compare with the original


@dataclass
class Outcome:
    """What one run did: ``kind`` is frames | refused | FAIL; ``why`` says more."""

    kind: str
    why: str = ""
    frames: int = 0
    damaged: int = 0
    seconds: float = 0.0
    extra: dict = field(default_factory=dict)


def make_clips(folder: Path, names: list[str] | None = None) -> dict[str, tuple[Path, bool]]:
    """The corpus's source clips: name -> (path, carries a barcode)."""
    folder.mkdir(parents=True, exist_ok=True)
    out: dict[str, tuple[Path, bool]] = {}
    for name, kwargs in CLIPS.items():
        if names is None or name in names:
            path = folder / name
            if not path.exists():
                media.make_video(path, **kwargs)
            out[name] = (path, True)
    for path in sorted(SAMPLES.glob("*.mp4")):
        if names is None or path.name in names:
            out[path.name] = (path, False)
    return out


def corpus(clips: dict[str, tuple[Path, bool]], folder: Path, seed: int = 0) -> list[Damaged]:
    """Every damaged copy of every clip, written under ``folder`` (made again each call)."""
    folder.mkdir(parents=True, exist_ok=True)
    files: list[Damaged] = []
    for name, (path, barcode) in clips.items():
        data = path.read_bytes()
        rng = np.random.default_rng([seed, *name.encode()])
        stem, suffix = Path(name).stem, Path(name).suffix
        for kind, variants in (("truncated", truncations(data)),
                               ("flipped", flips(data, suffix, rng)),
                               ("header", headers(data, suffix, rng))):
            for k, bytes_ in enumerate(variants):
                out = folder / f"{stem}.{kind}{k:02d}{suffix}"
                out.write_bytes(bytes_)
                files.append(Damaged(out, name, kind, barcode))
    return files


def truncations(data: bytes) -> Iterator[bytes]:
    """The file cut at ``TRUNCATIONS`` even points across its length (never whole, never 0)."""
    for k in range(1, TRUNCATIONS + 1):
        yield data[: len(data) * k // (TRUNCATIONS + 1)]


def payload_span(data: bytes, suffix: str) -> tuple[int, int]:
    """Where the coded pictures are: (start, end) byte offsets."""
    if suffix in (".mp4", ".mov"):
        at = data.find(b"mdat")
        if at >= 4:
            size = int.from_bytes(data[at - 4: at], "big")
            return at + 4, min(len(data), at - 4 + max(size, 8))
    elif suffix in (".mkv", ".webm"):
        at = data.find(b"\x1f\x43\xb6\x75")
        if at >= 0:
            return at + 16, len(data)
    elif suffix == ".avi":
        at = data.find(b"movi")
        end = data.rfind(b"idx1")
        if at >= 0:
            return at + 4, end if end > at else len(data)
    elif suffix == ".ts":
        return min(len(data), 188 * 4), len(data)
    return len(data) // 10, len(data) * 9 // 10


def flips(data: bytes, suffix: str, rng: np.random.Generator) -> Iterator[bytes]:
    """``FLIPS`` copies, each with 1 to 16 random bytes of the payload overwritten."""
    start, end = payload_span(data, suffix)
    for _ in range(FLIPS):
        buf = bytearray(data)
        for at in rng.integers(start, max(start + 1, end), int(rng.integers(1, 17))):
            buf[int(at)] = int(rng.integers(0, 256))
        yield bytes(buf)


def _structures(data: bytes, suffix: str) -> list[tuple[int, int]]:
    """(offset of the size field, offset of the body) of each header structure found."""
    found: list[tuple[int, int]] = []
    if suffix in (".mp4", ".mov"):
        for box in _MP4_BOXES:
            for m in re.finditer(re.escape(box), data):
                size = int.from_bytes(data[m.start() - 4: m.start()], "big")
                if m.start() >= 4 and (size == 1 or 8 <= size <= len(data)):
                    found.append((m.start() - 4, m.end()))
    elif suffix in (".mkv", ".webm"):
        head = data[: payload_span(data, suffix)[0] + 4096]  # the headers and the first cluster
        for ident in _EBML_IDS:
            for m in list(re.finditer(re.escape(ident), head))[:4]:
                found.append((m.end(), m.end() + 1))
    elif suffix == ".avi":
        for chunk in _AVI_CHUNKS:
            for m in list(re.finditer(re.escape(chunk), data))[:2]:
                found.append((m.end(), m.end() + 4))
    else:  # MPEG-TS: the tables (PAT, PMT) and the first packets' headers
        found = [(188 * k + 1, 188 * k + 4) for k in range(min(8, len(data) // 188))]
    return sorted(set(found))


def headers(data: bytes, suffix: str, rng: np.random.Generator) -> Iterator[bytes]:
    """``HEADERS`` copies, each with one header structure's size field or first body bytes
    replaced: random bytes, all-ones (a huge size) or zeros."""
    places = _structures(data, suffix)
    for k in range(HEADERS):
        buf = bytearray(data)
        size_at, body_at = places[int(rng.integers(0, len(places)))]
        at, width = (size_at, 4) if k % 2 == 0 else (body_at, int(rng.integers(1, 9)))
        fill = k % 3
        for j in range(at, min(len(buf), at + width)):
            buf[j] = 0xFF if fill == 0 else 0 if fill == 1 else int(rng.integers(0, 256))
        yield bytes(buf)


# -- running and judging ------------------------------------------------------------------------


def frames_command(path: Path, backend: str, save: Path) -> list[str]:
    return [sys.executable, "-m", "videovlm", "frames", str(path), "-n", str(FRAMES_N),
            "--backend", backend, "--json", "--save", str(save)]


def run(args: list[str], limit: float = RUN_LIMIT_S, env: dict[str, str] | None = None
        ) -> tuple[int | None, str, str, float]:
    """(exit code or None if it overran, stdout, stderr, seconds) of a command, as a user runs
    it (a fresh process, this checkout's videovlm, ``env`` added to the environment)."""
    import time

    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONWARNINGS": "ignore", **(env or {})}
    start = time.monotonic()
    try:
        proc = subprocess.run(args, capture_output=True, text=True, timeout=limit, env=env,
                              cwd=ROOT, errors="replace")
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout.decode(errors="replace") if isinstance(exc.stdout, bytes) else ""
        return None, out, "", time.monotonic() - start
    return proc.returncode, proc.stdout, proc.stderr, time.monotonic() - start


def judge_exit(code: int | None, stderr: str, seconds: float) -> Outcome | None:
    """The outcome when the exit alone decides it (a failure, or a clean refusal); None when
    the run succeeded and its frames are to be checked."""
    lines = stderr.splitlines()
    if code is None:
        return Outcome("FAIL", f"no end within {RUN_LIMIT_S:.0f} s", seconds=seconds)
    if code < 0:
        return Outcome("FAIL", f"killed by signal {-code}", seconds=seconds)
    if "Traceback" in stderr:
        return Outcome("FAIL", "traceback: " + lines[-1][:200], seconds=seconds)
    noise = [x for x in lines if not x.startswith("videovlm: ")]
    if noise:
        return Outcome("FAIL", f"not videovlm's line on stderr: {noise[0][:200]!r}",
                       seconds=seconds)
    if code == 2:
        if len(lines) == 1 and lines[0].startswith("videovlm: error: "):
            return Outcome("refused", lines[0][len("videovlm: error: "):], seconds=seconds)
        return Outcome("FAIL", f"exit 2 with {len(lines)} lines on stderr", seconds=seconds)
    if code != 0:
        return Outcome("FAIL", f"exit {code}: {lines[-1:]}", seconds=seconds)
    return None


def check(item: Damaged, backend: str, original: dict[int, np.ndarray] | None = None
          ) -> Outcome:
    """Run ``videovlm frames`` on ``item`` with ``backend`` and judge it by the rule above.

    ``original`` (samples only): the undamaged file's frames by index, for comparison.
    """
    with tempfile.TemporaryDirectory(prefix="videovlm-fuzz-") as tmp:
        save = Path(tmp) / "frames"
        code, stdout, stderr, seconds = run(frames_command(item.path, backend, save))
        verdict = judge_exit(code, stderr, seconds)
        if verdict is not None:
            return verdict
        try:
            sampled = json.loads(stdout)["sampling"]["frames"]
        except (ValueError, KeyError) as exc:
            return Outcome("FAIL", f"stdout is not the JSON document ({exc})", seconds=seconds)
        outcome = Outcome("frames", frames=len(sampled), seconds=seconds)
        for f in sampled:
            png = save / f"frame_{f['index']:06d}.png"
            if not png.exists():
                return Outcome("FAIL", f"frame {f['index']} reported, not saved", seconds=seconds)
            image = np.asarray(Image.open(png).convert("RGB"))
            if item.barcode:
                try:
                    shown = media.read_index(image, check_colour=False)
                except ValueError:
                    outcome.damaged += 1  # a damaged picture of it: what the decoder had
                    continue
                if shown != f["index"]:
                    if item.kind != "truncated" and not decodes_cleanly(item.path):
                        outcome.damaged += 1  # concealment of a damaged packet (see above)
                        continue
                    return Outcome("FAIL", f"wrong frame: reported {f['index']}, shows {shown}",
                                   seconds=seconds)
            elif original is not None:
                want, got = original.get(f["index"]), thumbnail(image)
                if want is None or want.shape != got.shape or float(
                        np.abs(want.astype(np.int16) - got).mean()) > 8:
                    outcome.damaged += 1
                    outcome.extra["differs"] = outcome.extra.get("differs", 0) + 1
        if item.kind == "truncated" and outcome.extra.get("differs"):
            return Outcome("FAIL", f"{outcome.extra['differs']} frame(s) of a cut file differ from "
                           "the whole file's", seconds=seconds)
        return outcome


def decodes_cleanly(path: Path) -> bool:
    """Whether every packet of ``path``'s video decodes without an error or a corrupt flag and
    every frame, in presentation order, shows its own index (PyAV, nothing of videovlm's)."""
    import av

    frames = []
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            for packet in container.demux(stream):
                frames += packet.decode()
    except (av.FFmpegError, IndexError):
        return False
    frames.sort(key=lambda f: f.pts if f.pts is not None else -1)
    for k, f in enumerate(frames):
        try:
            if f.is_corrupt or media.read_index(f.to_ndarray(format="rgb24"),
                                                check_colour=False) != k:
                return False
        except ValueError:
            return False
    return True


def thumbnail(image: np.ndarray) -> np.ndarray:
    """Every 4th pixel: enough to tell frames apart, small enough to keep a clip's all."""
    return image[::4, ::4]


def original_frames(path: Path) -> dict[int, np.ndarray]:
    """Every frame of an undamaged sample by presentation index, as :func:`thumbnail` (PyAV,
    no videovlm code)."""
    import av

    with av.open(str(path)) as container:
        frames = sorted(((f.pts, thumbnail(f.to_ndarray(format="rgb24")))
                         for f in container.decode(video=0)), key=lambda x: x[0])
    return {k: image for k, (_, image) in enumerate(frames)}
