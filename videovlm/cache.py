"""Encoded frames on disk, so the vision tower never runs twice for the same frame.

The vision tower is most of a CPU run's cost (50 frames of SmolVLM2-256M: ~100 s of ~130 s here),
and the next command about the same video (``describe`` then ``ask``, an eval rerun, a follow-up
question) sends it the very same frames. An entry is one frame's encoding: the connector's
output, ``tokens_per_image`` x the language model's width, what the prompt's image tokens are
replaced by.

Entries are **content-addressed**: the key is a hash of the prepared pixels (which already hold
the video's content, the frame, the image size and the fit) and of everything about the model
that changes the encoding (its id, revision, the weights files' sizes and times, dtype, device
kind, quantization). So a frame is found again whatever file or path it came from, two frames
with the same pixels (a frozen shot, slides) share one entry, and a changed checkpoint or
setting never reads an old one.

Each entry is written whole or not at all (:func:`videovlm.files.atomic_write`) and carries its
key, shape, dtype and a checksum of its bytes; anything that does not match (a truncated or
flipped file, a foreign file, another model's entry) is treated as missing: recomputed and
rewritten, never trusted and never an error. The folder is bounded (least recently used entries
go first; a read refreshes an entry's time). Location: ``$VIDEOVLM_CACHE``, else
``$XDG_CACHE_HOME/videovlm``, else ``~/.cache/videovlm``; size ``$VIDEOVLM_CACHE_MB`` (default
2048). ``--no-cache`` turns it off for a command.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from videovlm.files import atomic_write

DEFAULT_CACHE_MB = 2048
_MAGIC = b"VVLMFRM1"
_SUFFIX = ".frame"


def cache_dir() -> Path:
    """Where encoded frames live: ``$VIDEOVLM_CACHE``, ``$XDG_CACHE_HOME/videovlm`` or
    ``~/.cache/videovlm``."""
    if os.environ.get("VIDEOVLM_CACHE"):
        return Path(os.environ["VIDEOVLM_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join("~", ".cache")
    return Path(base).expanduser() / "videovlm"


def cache_limit_bytes() -> int:
    """The folder's bound: ``$VIDEOVLM_CACHE_MB`` megabytes (default 2048)."""
    try:
        mb = float(os.environ.get("VIDEOVLM_CACHE_MB", DEFAULT_CACHE_MB))
    except ValueError:
        mb = DEFAULT_CACHE_MB
    if not math.isfinite(mb):  # "inf": no bound
        return sys.maxsize if mb > 0 else 0
    return int(min(max(0.0, mb) * 2**20, sys.maxsize))


def pixels_key(image: np.ndarray) -> str:
    """The content part of a frame's key: its prepared pixels, shape included."""
    h = hashlib.blake2b(digest_size=20)
    h.update(repr((image.shape, str(image.dtype))).encode())
    h.update(np.ascontiguousarray(image).data)
    return h.hexdigest()


@dataclass
class CacheStats:
    """What a run asked of the cache: frames found, frames encoded (and stored)."""

    hits: int = 0
    encoded: int = 0  # by the vision tower
    rejected: int = 0  # entries found but not trusted (corrupt, foreign): recomputed
    unstored: int = 0  # encodings that could not be written (a full or read-only disk)

    def to_dict(self) -> dict[str, int]:
        return {"hits": self.hits, "encoded": self.encoded, "rejected": self.rejected,
                "unstored": self.unstored}


@dataclass
class FrameCache:
    """Encoded frames for one model setting (``model_key``) in ``folder``."""

    folder: Path
    model_key: str
    limit_bytes: int = field(default_factory=cache_limit_bytes)
    stats: CacheStats = field(default_factory=CacheStats)
    # the folder's size as of this process's last scan plus what it wrote since (None: not
    # scanned yet), so trim() walks the folder only when the bound may have been crossed
    _bytes: int | None = field(default=None, init=False, repr=False)

    def key(self, pixels: str) -> str:
        return hashlib.blake2b(f"{self.model_key}\0{pixels}".encode(),
                               digest_size=20).hexdigest()

    def _path(self, key: str) -> Path:
        return self.folder / key[:2] / f"{key}{_SUFFIX}"

    def get(self, key: str, shape: Sequence[int], dtype: str) -> bytes | None:
        """The bytes of entry ``key`` if it is there whole and holds an array of ``shape`` and
        ``dtype`` (a name, e.g. ``torch.float32``); else None."""
        path = self._path(key)
        try:
            data = path.read_bytes()
        except OSError:
            return None
        payload = _parse(data, key, shape, dtype)
        if payload is None:
            self.stats.rejected += 1
            with contextlib.suppress(OSError):
                path.unlink()
            return None
        with contextlib.suppress(OSError):
            os.utime(path)  # recently used: evicted last
        self.stats.hits += 1
        return payload

    def put(self, key: str, payload: bytes, shape: Sequence[int], dtype: str) -> None:
        """Store an array's bytes as entry ``key`` (whole or not at all; a full disk only loses
        the entry, never the run)."""
        header = json.dumps({"key": key, "shape": list(shape), "dtype": dtype,
                             "sha256": hashlib.sha256(payload).hexdigest()}).encode()
        path = self._path(key)
        data = _MAGIC + len(header).to_bytes(4, "little") + header + payload
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(path, data)
        except OSError:
            self.stats.unstored += 1
            return
        if self._bytes is not None:
            self._bytes += len(data)

    def trim(self) -> None:
        """Remove the least recently used entries until the folder is within its bound, and
        temp files that a killed writer left (older than an hour: no writer takes that long).

        The folder is walked on the first call and then only once this process's own writes
        may have taken it past the bound: a prompt's few new entries cost no walk of thousands.
        """
        if self._bytes is not None and self._bytes <= self.limit_bytes:
            return
        stale = time.time() - 3600
        for path in self.folder.glob("*/.*.tmp") if self.folder.is_dir() else ():
            with contextlib.suppress(OSError):
                if path.stat().st_mtime < stale:
                    path.unlink()
        entries = []
        for path in _entries(self.folder):
            with contextlib.suppress(OSError):
                st = path.stat()
                entries.append((st.st_mtime_ns, st.st_size, path))
        total = sum(size for _, size, _ in entries)
        for _, size, path in sorted(entries):
            if total <= self.limit_bytes:
                break
            with contextlib.suppress(OSError):
                path.unlink()
                total -= size
        self._bytes = total


def _entries(folder: Path) -> Iterable[Path]:
    if folder.is_dir():
        yield from folder.glob(f"*/*{_SUFFIX}")


def _parse(data: bytes, key: str, shape: Sequence[int], dtype: str) -> bytes | None:
    if not data.startswith(_MAGIC) or len(data) < len(_MAGIC) + 4:
        return None
    start = len(_MAGIC) + 4
    size = int.from_bytes(data[len(_MAGIC):start], "little")
    try:
        header = json.loads(data[start:start + size])
    except ValueError:
        return None
    payload = data[start + size:]
    if (not isinstance(header, dict) or header.get("key") != key
            or header.get("shape") != list(shape) or header.get("dtype") != dtype
            or header.get("sha256") != hashlib.sha256(payload).hexdigest()):
        return None
    return payload
