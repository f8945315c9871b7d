"""Writing files whole or not at all, and one clock for every time a person reads.

Every output videovlm writes (frames, sheets, reports, batch records) goes through
:func:`atomic_write`: a temporary file in the same folder, flushed to disk, then ``os.replace``.
A crash or a kill leaves the old file or the new one, never a part, which ``batch --resume``
relies on.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path


def atomic_write(path: str | os.PathLike[str], data: bytes | str) -> Path:
    """Write ``data`` to ``path`` so readers see the old file or the new one, never a part."""
    path = Path(path)
    payload = data.encode("utf-8") if isinstance(data, str) else data
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    # 0o666 lets the umask decide permissions, like any file the user writes (mkstemp's 0o600
    # would make reports unreadable to others)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(payload)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
    return path


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
