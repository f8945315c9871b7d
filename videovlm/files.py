"""Writing files whole or not at all, and one clock for every time a person reads.

Every output videovlm writes (frames, sheets, reports, batch records) goes through
:func:`atomic_write`: a temporary file in the same folder, flushed to disk, then ``os.replace``.
A crash or a kill leaves the old file or the new one, never a part, which ``batch --resume``
relies on.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
from pathlib import Path

from videovlm.errors import DiskFullError, OutputError


def atomic_write(path: str | os.PathLike[str], data: bytes | str) -> Path:
    """Write ``data`` to ``path`` so readers see the old file or the new one, never a part.

    A full disk is a :class:`~videovlm.errors.DiskFullError` naming the disk and the file (the
    temp file is removed, the old file is still there)."""
    path = Path(path)
    payload = data.encode("utf-8") if isinstance(data, str) else data
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    try:
        # 0o666 lets the umask decide permissions, like any file the user writes (mkstemp's
        # 0o600 would make reports unreadable to others)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        try:
            write_all(fd, payload)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise_if_disk_full(exc, path)
        raise
    fsync_dir(path.parent)
    return path


def check_output_file(path: str | os.PathLike[str]) -> Path:
    """:func:`check_output_folder` for one output file (a contact sheet): its folder must be
    writable, and the path must not be a folder."""
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"{path} is a folder: give a file name for it")
    check_output_folder(path.parent)
    return path


def make_folder(folder: str | os.PathLike[str]) -> Path:
    """``folder`` and its parents created where missing; a full disk is said as for a write
    (a folder takes space too)."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise_if_disk_full(exc, folder)
        raise
    return folder


def write_all(fd: int, data: bytes) -> None:
    """``data`` written to ``fd`` by ``os.write`` calls: one for a regular file, more only after a
    short write (a disk filling up mid-way writes part, then fails)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


_FULL = (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC))


def raise_if_disk_full(exc: OSError, path: str | os.PathLike[str]) -> None:
    """Raise :class:`~videovlm.errors.DiskFullError` for ``exc`` if it says the disk is full
    (``ENOSPC``, ``EDQUOT``): one line naming the disk (its mount point) and the file, and how to
    go on (a ``DiskFullError`` already is one: raised as it is). Anything else is left to the
    caller."""
    if isinstance(exc, DiskFullError):
        raise exc
    if exc.errno not in _FULL:
        return
    raise DiskFullError(exc.errno, f"no space left on {mount_point(path)} writing {path}: "
                                   "free space and run the same command again to resume") from exc


def mount_point(path: str | os.PathLike[str]) -> Path:
    """The mount point of the file system holding ``path`` (or the nearest folder above it that
    exists): what a user frees space on."""
    p = Path(os.path.abspath(path))
    while not p.exists() and p != p.parent:
        p = p.parent
    while not os.path.ismount(p) and p != p.parent:
        p = p.parent
    return p


def check_output_folder(folder: str | os.PathLike[str]) -> Path:
    """Refuse, in one line and before any work, an output folder that cannot be made or written:
    a path through a file, a read-only or full file system, no permission. Nothing is created:
    a probe file is made and removed in the folder, or in the nearest folder above it that
    exists (where the command would create it)."""
    folder = Path(folder)
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise OutputError(f"{folder} is a file, not a folder: give a folder for the outputs"
                          if existing == folder else
                          f"{folder} cannot be created: {existing} is a file, not a folder; give "
                          "another output folder")
    probe = existing / f".videovlm-write-check.{secrets.token_hex(6)}.tmp"
    try:
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        probe.unlink()
    except OSError as exc:
        where = folder if existing == folder else f"{folder} cannot be created: {existing}"
        reason = (exc.strerror or str(exc)).lower()
        raise OutputError(f"{where} is not writable ({reason}): choose another output folder "
                          "or make this one writable") from None
    return folder


def fsync_dir(folder: str | os.PathLike[str]) -> None:
    """Make a rename or an append in ``folder`` durable (best effort: not every OS allows it)."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def format_time(seconds: float, decimals: int = 1) -> str:
    """A time for people: ``MM:SS.s``, or ``H:MM:SS.s`` past an hour.

    The one formatter for reports, sheets and logs, so a time reads the same everywhere; tenths by
    default because scene cuts rarely fall on whole seconds, milliseconds on contact sheets where
    a user checks frame times. (Prompts use the model's own format: ``pack.timestamp_text``.)
    """
    scale = 10**decimals
    ticks = round(max(0.0, seconds) * scale)
    h, rem = divmod(ticks, 3600 * scale)
    m, rem = divmod(rem, 60 * scale)
    s, frac = divmod(rem, scale)
    tail = f".{frac:0{decimals}d}" if decimals else ""
    return f"{h}:{m:02d}:{s:02d}{tail}" if h else f"{m:02d}:{s:02d}{tail}"
