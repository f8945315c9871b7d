"""A batch's output folder as a record of what is done: the crash-safe ``results.jsonl``, the
settings it was made with (``batch.json``), the lock that keeps one run per folder, and the
preparation both engines share (lock, load and repair the log, split the inputs into done and to
do)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from videovlm.batch.inputs import Job
from videovlm.errors import VideoVLMError
from videovlm.files import (
    atomic_write,
    fsync_dir,
    make_folder,
    raise_if_disk_full,
    write_all,
)

RESULTS_NAME = "results.jsonl"
# ``resume=RETRY_FAILED``: skip the inputs recorded as done, redo those whose record is an error
RETRY_FAILED = "retry-failed"
SETTINGS_NAME = "batch.json"
LOCK_NAME = ".batch.lock"


class ResultsLog:
    """``results.jsonl``: one complete JSON line per finished input, appended crash-safely."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.repaired = 0  # lines dropped by the last load (torn, unreadable, duplicate)

    def load(self) -> dict[str, dict[str, Any]]:
        """The complete records by input, repairing the file if a crash left a torn line.

        Only the last line can be torn (appends are single writes), but any line that does not
        parse, lacks an ``input`` or repeats one is dropped the same way: the file is rewritten
        atomically with the good lines, so later appends start on a clean line.
        """
        self.repaired = 0
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return {}
        lines = data.split(b"\n")
        torn = lines.pop()  # what follows the last newline: b"" unless a write was cut short
        records: dict[str, dict[str, Any]] = {}
        good: list[bytes] = []
        for line in lines:
            try:
                rec = json.loads(line)
            except ValueError:
                rec = None
            key = rec.get("input") if isinstance(rec, dict) else None
            if not isinstance(key, str) or key in records:
                self.repaired += 1
                continue
            records[key] = rec
            good.append(line + b"\n")
        self.repaired += bool(torn)
        if self.repaired:
            atomic_write(self.path, b"".join(good).decode("utf-8"))
        return records

    def drop(self, inputs: set[str]) -> None:
        """Remove the records of ``inputs`` (to redo them), atomically; the other lines are
        kept byte for byte."""
        kept = [line + b"\n" for line in self.path.read_bytes().split(b"\n")[:-1]
                if json.loads(line).get("input") not in inputs]
        atomic_write(self.path, b"".join(kept).decode("utf-8"))

    def reset(self) -> None:
        """Start an empty log (``--no-resume``), atomically."""
        atomic_write(self.path, "")

    def append(self, record: Mapping[str, Any]) -> None:
        """Append one record as one ``os.write`` of the complete line, then ``fsync``.

        A write that fails part-way (a full disk writes what fits, then refuses the rest) is
        undone: the file is cut back to its size before, so it never ends in half a line, and
        a full disk is one :class:`~videovlm.errors.DiskFullError` line."""
        line = (json.dumps(record, ensure_ascii=False, allow_nan=False) + "\n").encode("utf-8")
        new = not self.path.exists()
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                size = os.fstat(fd).st_size
                try:
                    write_all(fd, line)
                    os.fsync(fd)
                except BaseException:
                    with contextlib.suppress(OSError):
                        os.ftruncate(fd, size)  # freeing space: works on a full disk too
                    raise
            finally:
                os.close(fd)
        except OSError as exc:
            raise_if_disk_full(exc, self.path)
            raise
        if new:
            fsync_dir(self.path.parent)

@dataclass
class Prepared:
    """A batch ready to run: the output folder locked, the log loaded (and repaired), the inputs
    split into done and to do. Used by both engines so their records and resume agree."""

    out_dir: Path
    log: ResultsLog
    todo: list[Job]
    skipped: int
    total: int
    failed_before: int
    _lock: Any = None

    def close(self) -> None:
        if self._lock is not None:
            self._lock.close()
            self._lock = None


def prepare_run(
    jobs: Sequence[Job],
    out_dir: str | os.PathLike[str],
    *,
    resume: bool | str = True,
    settings: Mapping[str, Any] | None = None,
) -> Prepared:
    """Lock ``out_dir`` for this run, load or reset ``results.jsonl``, and check ``settings``.

    ``resume``: True skips the inputs already recorded, False redoes all, :data:`RETRY_FAILED`
    skips those done and redoes those whose record is an error (a decoder crash fixed since,
    a video that was missing): their error records are removed first, so the log still holds
    one record per input.

    ``settings`` (pipeline, model, frames, questions...) are stored in ``batch.json``; resuming
    into a folder made with other settings is refused, because its records would mix two kinds
    of results under one name.
    """
    out = make_folder(out_dir)
    lock = _lock(out)
    try:
        log = ResultsLog(out / RESULTS_NAME)
        stored_path = out / SETTINGS_NAME
        if settings is not None:
            wanted = json.loads(json.dumps(dict(settings), sort_keys=True, default=str))
            if resume and stored_path.exists():
                try:
                    stored = json.loads(stored_path.read_text(encoding="utf-8")).get("settings")
                except (ValueError, AttributeError):
                    stored = None
                if stored is not None and stored != wanted:
                    diff = sorted(k for k in set(stored) | set(wanted)
                                  if stored.get(k) != wanted.get(k))
                    raise VideoVLMError(
                        f"{out} holds a batch made with other settings ({', '.join(diff)}); "
                        "use another -o folder, or --no-resume to redo it with these settings")
            atomic_write(stored_path, json.dumps({"settings": wanted}, indent=2) + "\n")
        _remove_stale_temp_files(out)
        if resume:
            done = log.load()
            if resume == RETRY_FAILED:
                wanted_inputs = {j.input for j in jobs}
                failed = {k for k, r in done.items()
                          if r.get("error") is not None and k in wanted_inputs}
                if failed:
                    log.drop(failed)
                    done = {k: r for k, r in done.items() if k not in failed}
        else:
            log.reset()
            done = {}
        todo = [j for j in jobs if j.input not in done]
        failed_before = sum(done[j.input].get("error") is not None
                            for j in jobs if j.input in done)
        return Prepared(out_dir=out, log=log, todo=todo, skipped=len(jobs) - len(todo),
                        total=len(jobs), failed_before=failed_before, _lock=lock)
    except BaseException:
        lock.close()
        raise


def _remove_stale_temp_files(out: Path) -> None:
    """Temp files (``.NAME.*.tmp``) that a killed run left behind; with the lock held, no
    writer of ours is using them, and their final files are rewritten by the redo."""
    for dirpath, _, filenames in os.walk(out):
        for name in filenames:
            if name.startswith(".") and name.endswith(".tmp"):
                with contextlib.suppress(OSError):
                    os.unlink(os.path.join(dirpath, name))


def _lock(out: Path) -> Any:
    """Hold an exclusive lock on ``out`` for this process: two batches appending to one log
    would still write whole lines, but would do the same videos twice."""
    try:
        fh = open(out / LOCK_NAME, "a+")  # noqa: SIM115 - held open for the run's lifetime
    except OSError as exc:  # a full disk's last inode or directory block
        raise_if_disk_full(exc, out / LOCK_NAME)
        raise
    try:
        import fcntl
    except ImportError:  # Windows: no advisory locks here; one batch per folder is on the user
        return fh
    try:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        fh.close()
        raise VideoVLMError(f"another batch is writing to {out}; wait for it to finish or use "
                            "another -o folder") from None
    return fh


def settings_digest(obj: Any) -> str:
    """A short stable digest of settings too long to store whole (a questions file)."""
    data = json.dumps(obj, sort_keys=True, default=str).encode("utf-8")
    return hashlib.sha256(data).hexdigest()[:16]
