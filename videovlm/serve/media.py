"""Which files a request may name, and the videos the server knows by id.

A request names a video three ways: a ``file://`` URL, which must resolve (symlinks and ``..``
followed first) to a file under one of the ``--media-root`` folders; a ``data:video/...;base64,``
URL; or the id an upload returned. Uploaded and ``data:`` bytes are written whole to the
server's own temporary folder (a temporary name, then ``os.replace``), capped at
``--max-upload-mb``, named by their content's SHA-256 (the same bytes sent twice are one file,
and one warm video), and removed with the folder when the server stops.

A video's identity (the warm cache's key, :mod:`videovlm.serve.warm`) is its content hash for
uploads, and its resolved path with device, inode, size and modification time for a media-root
file: a file rewritten in place is a new video.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import os
import secrets
import shutil
import tempfile
import threading
import urllib.parse
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from videovlm.batch.inputs import VIDEO_EXTENSIONS, find_videos
from videovlm.errors import VideoVLMError
from videovlm.probe import VideoInfo, probe
from videovlm.serve.errors import APIError

MAX_LISTED = 500
"""Most files ``GET /v1/media`` lists (the first ones by path): a page, not a crawler."""
KNOWN_VIDEOS = 256
"""Videos the server remembers by id (probe facts, not pixels); the least recently used go."""


@dataclass(frozen=True)
class Video:
    """A video the server knows: where it is, what it is (probed once), and its identity."""

    id: str
    path: Path
    name: str  # what a person calls it: the path under its root, or the upload's file name
    identity: str
    info: VideoInfo


def _identity_of_file(path: Path) -> str:
    st = path.stat()
    return f"file:{path}:{st.st_dev}:{st.st_ino}:{st.st_size}:{st.st_mtime_ns}"


def _id_for(identity: str) -> str:
    return hashlib.sha256(identity.encode()).hexdigest()[:20]


class MediaRoots:
    """The folders ``file://`` URLs may point into, resolved once at start."""

    def __init__(self, roots: Sequence[str | os.PathLike[str]]) -> None:
        self.roots = [Path(r).resolve(strict=True) for r in roots]

    def resolve(self, url: str, param: str) -> Path:
        """The file a ``file://`` URL names, refused (400) unless it is a file under a root."""
        parsed = urllib.parse.urlparse(url)
        if parsed.netloc not in ("", "localhost"):
            raise APIError(400, f"{url}: file:// URLs name a file on this server "
                                "(file:///path), not on a host", param)
        if not self.roots:
            raise APIError(400, "this server serves no folder (no --media-root): upload the "
                                "video (POST /v1/videos), send it as a data: URL, or restart "
                                "the server with --media-root DIR", param)
        raw = Path(urllib.parse.unquote(parsed.path))
        if not raw.is_absolute():
            raise APIError(400, f"{url}: a file:// URL needs an absolute path "
                                "(file:///folder/video.mp4)", param)
        try:
            path = raw.resolve(strict=True)
        except (OSError, RuntimeError, ValueError):  # ValueError: a NUL byte in the path
            path = None
        if path is None or not any(path.is_relative_to(r) for r in self.roots):
            # the same answer for a missing file and one outside the roots: a request cannot
            # learn what exists elsewhere on the machine
            raise APIError(400, f"{raw} is not a file under the media root"
                                f"{'s' if len(self.roots) > 1 else ''} "
                                f"({', '.join(map(str, self.roots))})", param)
        if not path.is_file():
            raise APIError(400, f"{raw} is a folder, not a video file", param)
        return path

    def name_of(self, path: Path) -> str:
        root = next(r for r in self.roots if path.is_relative_to(r))
        rel = path.relative_to(root).as_posix()
        return rel if len(self.roots) == 1 else f"{root.name}/{rel}"

    def listing(self) -> list[dict[str, str]]:
        """The videos under the roots (by content, as ``batch`` finds them), as
        ``{name, url}``; symlinks that lead out of a root are left out."""
        out: list[dict[str, str]] = []
        for root in self.roots:
            for job in find_videos(root).jobs:
                path = Path(job.path).resolve()
                if path.is_relative_to(root):
                    out.append({"name": self.name_of(path), "url": path.as_uri()})
                if len(out) >= MAX_LISTED:
                    return out
        return out


class Uploads:
    """The server's temporary folder of uploaded videos, removed by :meth:`close`."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.folder = Path(tempfile.mkdtemp(prefix="videovlm-serve-"))

    def too_large(self, size: int) -> APIError:
        return APIError(413, f"the video is {size / 2**20:.1f} MB, over this server's "
                             f"--max-upload-mb {self.max_bytes / 2**20:g}: send a shorter "
                             "file or restart the server with a larger limit")

    def writer(self) -> UploadWriter:
        return UploadWriter(self)

    def from_data_url(self, url: str, param: str) -> Path:
        """The file for a ``data:video/...;base64,`` URL's bytes."""
        header, sep, payload = url.partition(",")
        if not sep or not header.startswith("data:") or not header.endswith(";base64"):
            raise APIError(400, "a data: URL must read data:video/<type>;base64,<bytes>", param)
        if not header[5:].startswith(("video/", "application/octet-stream")):
            raise APIError(400, f"{header[5:-7] or 'no type'} is not a video type: use "
                                "data:video/mp4;base64,... (or video/webm...)", param)
        if len(payload) * 3 // 4 > self.max_bytes:
            raise self.too_large(len(payload) * 3 // 4)
        try:
            data = base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError):
            raise APIError(400, "the data: URL's base64 does not decode", param) from None
        out = self.writer()
        out.write(data)
        kind = header[5:-7].split("/")[-1]
        return out.finish(f".{kind}" if f".{kind}" in VIDEO_EXTENSIONS else "")

    def close(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


class UploadWriter:
    """One upload on its way to disk: written to a temporary name while its size is checked
    and its hash computed, then renamed to that hash (:meth:`finish`)."""

    def __init__(self, uploads: Uploads) -> None:
        self.uploads = uploads
        self.size = 0
        self.hash = hashlib.sha256()
        self.tmp = uploads.folder / f".{secrets.token_hex(8)}.part"
        self.fh = open(self.tmp, "wb")  # noqa: SIM115 (closed by finish or abort)

    def write(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.size > self.uploads.max_bytes:
            self.abort()
            raise self.uploads.too_large(self.size)
        self.hash.update(chunk)
        self.fh.write(chunk)

    def finish(self, suffix: str = "") -> Path:
        """The upload under its final name (its hash, and ``suffix``, a known video
        extension, so the player is served the right type)."""
        self.fh.close()
        if not self.size:
            self.tmp.unlink(missing_ok=True)
            raise APIError(400, "the upload is empty: send the video file's bytes as the body")
        path = self.uploads.folder / (self.hash.hexdigest() + suffix)
        os.replace(self.tmp, path)
        return path

    def abort(self) -> None:
        self.fh.close()
        self.tmp.unlink(missing_ok=True)


class Library:
    """Every video the server knows by id: media-root files and uploads, probed once each.

    ``register`` runs the probe (a demux pass) and is called off the event loop."""

    def __init__(self, roots: MediaRoots, uploads: Uploads) -> None:
        self.roots = roots
        self.uploads = uploads
        self._videos: OrderedDict[str, Video] = OrderedDict()
        self._lock = threading.Lock()

    def register(self, path: Path, name: str | None = None) -> Video:
        """The known video for ``path`` (an upload or a checked media-root file), probed the
        first time; an unreadable video is a 400 with the probe's own message. An upload of
        known bytes under a new ``name`` is the same video, now called so."""
        inside_uploads = path.parent == self.uploads.folder
        identity = (f"upload:{path.name}" if inside_uploads else _identity_of_file(path))
        vid = _id_for(identity)
        with self._lock:
            known = self._videos.get(vid)
            if known is not None:
                if name and inside_uploads and name != known.name:
                    known = self._videos[vid] = dataclasses.replace(known, name=name)
                self._videos.move_to_end(vid)
                return known
        try:
            info = probe(path)  # InputError (a VideoVLMError): the caller's 400
        except VideoVLMError as exc:
            if not inside_uploads:
                raise
            # an unreadable upload is not kept, and its message names it, not the server's
            # temporary folder
            path.unlink(missing_ok=True)
            raise APIError(400, str(exc).replace(str(path), name or "the upload")) from None
        video = Video(id=vid, path=path, identity=identity, info=info,
                      name=name or (path.name if inside_uploads else self.roots.name_of(path)))
        with self._lock:
            self._videos[vid] = video
            while len(self._videos) > KNOWN_VIDEOS:
                self._videos.popitem(last=False)
        return video

    def get(self, vid: str) -> Video:
        """The video with id ``vid`` (404 when the server does not know it, or its file
        changed since: a media-root file rewritten in place needs registering again)."""
        with self._lock:
            video = self._videos.get(vid)
        if video is None:
            raise APIError(404, f"no video with id {vid!r} on this server: upload it "
                                "(POST /v1/videos) or name it by its file:// URL", "id")
        if not video.identity.startswith("upload:") and (
                not video.path.is_file() or _identity_of_file(video.path) != video.identity):
            raise APIError(404, f"{video.name} changed or went away since it got id {vid}: "
                                "register it again (POST /v1/videos)", "id")
        return video
