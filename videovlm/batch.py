"""Batch runs over a folder: which files are videos, where each one's outputs go, the crash-safe
``results.jsonl``, and the local engine that overlaps decoding with generation.

The engine is generic over two stages so it can be tested, benchmarked and reused by the Ray engine
without a model: ``cpu_stage(job) -> payload`` (probe, scenes, decode, prepare: runs in background
workers) and ``model_stage(job, payload) -> Result`` (runs in the calling thread, where the one
loaded model lives).

Crash safety rests on one rule: a video is done when, and only when, ``results.jsonl`` holds a
complete line for it. Per-video files are written first (atomically, by the writers), then the
record is appended with a single ``os.write`` of the whole line followed by ``fsync``. A SIGKILL
or power loss can leave at most one torn last line; :meth:`ResultsLog.load` repairs it (the video
is then simply done again). Resuming skips every input that has a complete record, so after any
number of kills and reruns each input ends with exactly one record.
"""

from __future__ import annotations

import contextlib
import fnmatch
import hashlib
import json
import os
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from videovlm.errors import InputError, VideoVLMError
from videovlm.files import atomic_write, fsync_dir
from videovlm.result import Result

RESULTS_NAME = "results.jsonl"
SETTINGS_NAME = "batch.json"
LOCK_NAME = ".batch.lock"
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
# QuickTime files may start with one of these atoms instead of ``ftyp``.
_QT_ATOMS = {b"ftyp", b"moov", b"mdat", b"free", b"wide", b"skip", b"pnot"}


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
    if head[4:8] in _QT_ATOMS:  # MP4 / MOV / 3GP / M4V (ISO base media)
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
    folder.mkdir(parents=True, exist_ok=True)
    real, base = os.path.realpath(folder), os.path.realpath(out_dir)
    if os.path.commonpath([real, base]) != base:
        raise InputError(f"output folder {folder} resolves to {real}, outside {base}; "
                         "remove the symlink or choose another output folder")
    return folder


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

    def reset(self) -> None:
        """Start an empty log (``--no-resume``), atomically."""
        atomic_write(self.path, "")

    def append(self, record: Mapping[str, Any]) -> None:
        """Append one record as one ``os.write`` of the complete line, then ``fsync``."""
        line = (json.dumps(record, ensure_ascii=False, allow_nan=False) + "\n").encode("utf-8")
        new = not self.path.exists()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            view = memoryview(line)
            while view:  # a regular file takes it in one write; loop only for a short write
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        if new:
            fsync_dir(self.path.parent)


def error_result(job: Job, exc: BaseException, *, seconds: float | None = None) -> Result:
    """The record of an input that failed: the error's type and its message on one line."""
    message = " ".join(str(exc).split()) or repr(exc)
    result = Result(video={"path": str(job.path)},
                    error={"type": type(exc).__name__, "message": message})
    if seconds is not None:
        result.timing_s = {"total": round(seconds, 6)}
    return result


Writer = Callable[[Result, Path, Sequence[str], str], list[Path]]


@dataclass
class Recorder:
    """Turns one finished input into its files and its record: the commit step both engines
    share. Files first (atomic, by ``write``), the record last, so a record always means that
    its files are complete."""

    out_dir: Path
    log: ResultsLog
    formats: Sequence[str] = ()
    write: Writer | None = None

    def commit(self, job: Job, result: Result) -> dict[str, Any]:
        outputs: list[str] = []
        if result.error is None and self.formats:
            try:
                folder, stem = output_location(self.out_dir, job.input)
                ensure_inside(self.out_dir, folder)
                write = self.write or _default_writer()
                paths = write(result, folder, self.formats, stem)
                outputs = [Path(p).relative_to(self.out_dir).as_posix() for p in paths]
            except Exception as exc:  # a failed write is this input's failure, not the batch's
                result = error_result(job, exc)
        record = {"input": job.input, **result.to_dict(), "outputs": outputs}
        self.log.append(record)
        return record


def _default_writer() -> Writer:
    from videovlm import writers

    return writers.write


@dataclass
class BatchReport:
    """How a batch went; ``cpu_s``/``model_s`` are the summed stage times of this run (for the
    overlap benchmark: wall time against the larger of the two)."""

    total: int
    done: int = 0
    failed: int = 0
    skipped: int = 0
    failed_before: int = 0  # skipped inputs whose earlier record is an error
    interrupted: bool = False
    wall_s: float = 0.0
    cpu_s: float = 0.0
    model_s: float = 0.0
    results: Path | None = None
    failures: list[tuple[str, str]] = field(default_factory=list)  # (input, "Type: message")

    @property
    def exit_code(self) -> int:
        """0 all done; 1 some input's record is an error (this run's or a resumed one's);
        130 interrupted."""
        if self.interrupted:
            return 130
        return 1 if self.failed or self.failed_before else 0

    def count(self, record: dict[str, Any], say: Callable[[str], None]) -> None:
        """Tally one committed record; a failure is also said (one line) and kept for the end."""
        if record["error"] is None:
            self.done += 1
            return
        self.failed += 1
        failure = f"{record['error']['type']}: {record['error']['message']}"
        self.failures.append((record["input"], failure))
        say(f"failed: {record['input']}: {failure}")

    def summary(self) -> str:
        left = self.total - self.done - self.failed - self.skipped
        before = f" ({self.failed_before} failed before)" if self.failed_before else ""
        text = (f"{self.done} done, {self.failed} failed, {self.skipped} skipped{before}"
                f"{f', {left} left' if left else ''} in {self.wall_s:.1f} s")
        return text + (f" -> {self.results}" if self.results else "")


class _Interrupts:
    """First Ctrl-C: finish the current video, then stop. Second: abandon it now. A Ctrl-C that
    arrives while a record is being committed only asks to stop, so no record is half-made."""

    def __init__(self, say: Callable[[str], None]) -> None:
        self.stop = False
        self.committing = False
        self._say = say
        self._previous: Any = None
        self._installed = False

    def __enter__(self) -> _Interrupts:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
            self._installed = True
        return self

    def __exit__(self, *exc: object) -> None:
        if self._installed:
            signal.signal(signal.SIGINT, self._previous)

    def _handle(self, signum: int, frame: object) -> None:
        if self.committing or not self.stop:
            if not self.stop:
                self._say("interrupt: finishing the current video, then stopping "
                          "(Ctrl-C again to abandon it)")
            self.stop = True
            return
        raise KeyboardInterrupt

    @contextlib.contextmanager
    def commit(self) -> Iterator[None]:
        self.committing = True
        try:
            yield
        finally:
            self.committing = False


def _ignore_sigint() -> None:
    """Decode processes leave Ctrl-C to the main process, which decides what to finish."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _executor(workers: int, processes: bool) -> Executor | None:
    if workers <= 0:
        return None
    if processes:
        import multiprocessing

        # spawn, not fork: the parent may hold torch's threads and a loaded model
        return ProcessPoolExecutor(max_workers=workers, initializer=_ignore_sigint,
                                   mp_context=multiprocessing.get_context("spawn"))
    return ThreadPoolExecutor(max_workers=workers, thread_name_prefix="videovlm-decode")


def _timed(stage: Callable[[Job], Any], job: Job) -> tuple[Any, float]:
    start = time.perf_counter()
    return stage(job), time.perf_counter() - start


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
    resume: bool = True,
    settings: Mapping[str, Any] | None = None,
) -> Prepared:
    """Lock ``out_dir`` for this run, load or reset ``results.jsonl``, and check ``settings``.

    ``settings`` (pipeline, model, frames, questions...) are stored in ``batch.json``; resuming
    into a folder made with other settings is refused, because its records would mix two kinds
    of results under one name.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
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
    fh = open(out / LOCK_NAME, "a+")  # noqa: SIM115 - held open for the run's lifetime
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


def _progress(total: int, initial: int, enabled: bool) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, desc="batch", unit="video", file=sys.stderr,
                dynamic_ncols=True, disable=None if enabled else True, smoothing=0.1)


def settings_digest(obj: Any) -> str:
    """A short stable digest of settings too long to store whole (a questions file)."""
    data = json.dumps(obj, sort_keys=True, default=str).encode("utf-8")
    return hashlib.sha256(data).hexdigest()[:16]


def run_local(
    jobs: Sequence[Job],
    cpu_stage: Callable[[Job], Any],
    model_stage: Callable[[Job, Any], Result],
    out_dir: str | os.PathLike[str],
    *,
    formats: Sequence[str] = (),
    write: Writer | None = None,
    workers: int = 2,
    prefetch: int | None = None,
    processes: bool = False,
    resume: bool = True,
    settings: Mapping[str, Any] | None = None,
    progress: bool = True,
    say: Callable[[str], None] | None = None,
) -> BatchReport:
    """Run every input not yet recorded: ``cpu_stage`` in ``workers`` background threads,
    ``model_stage`` here, one record per input.

    At most ``workers + prefetch`` inputs are decoded ahead of the one being generated (default
    prefetch: ``workers``), so memory stays flat however many videos there are. ``workers=0``
    runs both stages one after the other in this thread (the sequential baseline). Threads by
    default: the decoders and resizers release the GIL and payloads need no copying;
    ``processes=True`` runs ``cpu_stage`` (then picklable) in spawned processes instead, for
    CPU stages whose Python parts (scene detection) would contend with generation for the GIL.
    Inputs are taken in order; an exception in either stage becomes that input's error record
    and the batch goes on.
    """
    prep = prepare_run(jobs, out_dir, resume=resume, settings=settings)
    report = BatchReport(total=prep.total, skipped=prep.skipped,
                         failed_before=prep.failed_before, results=prep.log.path)
    bar = _progress(prep.total, prep.skipped, progress)
    say = say or (lambda text: bar.write(f"videovlm: {text}", file=sys.stderr))
    recorder = Recorder(prep.out_dir, prep.log, formats, write)
    start = time.perf_counter()
    window = max(0, workers) + (workers if prefetch is None else max(0, prefetch))
    pool = _executor(workers, processes)
    todo = iter(prep.todo)
    ahead: deque[tuple[Job, Future[tuple[Any, float]]]] = deque()

    def fill() -> None:
        while pool is not None and len(ahead) < max(window, 1):
            job = next(todo, None)
            if job is None:
                return
            ahead.append((job, pool.submit(_timed, cpu_stage, job)))

    interrupts = _Interrupts(say)
    try:
        with interrupts:
            fill()
            while True:
                if interrupts.stop:
                    break
                if pool is not None:
                    if not ahead:
                        break
                    job, future = ahead.popleft()
                    fill()
                else:
                    job = next(todo, None)
                    if job is None:
                        break
                bar.set_postfix_str(f"failed={report.failed} {job.input}", refresh=True)
                t0 = time.perf_counter()
                try:
                    if pool is not None:
                        payload, cpu_s = future.result()
                    else:
                        payload, cpu_s = _timed(cpu_stage, job)
                    report.cpu_s += cpu_s
                    t1 = time.perf_counter()
                    try:
                        result = model_stage(job, payload)
                    finally:
                        report.model_s += time.perf_counter() - t1
                    del payload
                except Exception as exc:
                    result = error_result(job, exc, seconds=time.perf_counter() - t0)
                with interrupts.commit():
                    record = recorder.commit(job, result)
                report.count(record, say)
                bar.update(1)
        report.interrupted = interrupts.stop and report.done + report.failed < len(prep.todo)
    except KeyboardInterrupt:
        report.interrupted = True
    finally:
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)
        bar.close()
        prep.close()
        report.wall_s = time.perf_counter() - start
    return report


# -- the real stages: api.load_video / api.run_model, with questions ---------------------------


@dataclass(frozen=True)
class Question:
    """One question of a questions file; ``choices`` make it multiple choice."""

    question: str
    choices: tuple[str, ...] | None = None


@dataclass
class Questions:
    """A questions file, resolved against a batch's inputs: questions for every video, and
    questions for named ones. ``named`` is empty when no line names a video."""

    common: list[Question] = field(default_factory=list)
    named: dict[str, list[Question]] = field(default_factory=dict)

    def for_input(self, rel: str) -> list[Question]:
        return [*self.common, *self.named.get(rel, [])]


def _question(obj: Any, where: str) -> tuple[str | None, Question]:
    if isinstance(obj, str):
        obj = {"question": obj}
    if not isinstance(obj, dict) or not isinstance(obj.get("question"), str) \
            or not obj["question"].strip():
        raise VideoVLMError(f"{where}: expected {{\"video\": ..., \"question\": \"...\", "
                            "\"choices\": [...]}} or a question string")
    unknown = set(obj) - {"video", "question", "choices", "id", "answer"}
    if unknown:
        raise VideoVLMError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}; "
                            "use video, question, choices")
    choices = obj.get("choices")
    if choices is not None and (not isinstance(choices, list) or not 2 <= len(choices) <= 26
                                or not all(isinstance(c, str) for c in choices)):
        raise VideoVLMError(f"{where}: choices must be a list of 2 to 26 strings")
    video = obj.get("video")
    if video is not None and not isinstance(video, str):
        raise VideoVLMError(f"{where}: video must be a path relative to the batch folder")
    return video, Question(obj["question"].strip(), tuple(choices) if choices else None)


def load_questions(path: str | os.PathLike[str], root: str | os.PathLike[str],
                   inputs: Sequence[str]) -> Questions:
    """Read a questions file: JSON Lines of ``{video?, question, choices?}``, a JSON list, or
    plain text with one question per line (``#`` comments). A line without ``video`` applies to
    every video. ``video`` is matched to an input by its path relative to ``root``, its
    absolute path, or its file name when that is unique; an unknown video is an error."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise VideoVLMError(f"cannot read questions file {path}: {exc}") from None
    stripped = text.lstrip()
    items: list[tuple[str, Any]] = []
    if stripped.startswith("["):
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise VideoVLMError(f"{path}: not valid JSON ({exc})") from None
        items = [(f"{path} item {i + 1}", obj) for i, obj in enumerate(data)]
    elif stripped.startswith("{"):
        for no, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    items.append((f"{path}:{no}", json.loads(line)))
                except ValueError as exc:
                    raise VideoVLMError(f"{path}:{no}: not a JSON object ({exc})") from None
    else:
        items = [(f"{path}:{no}", line.strip()) for no, line in enumerate(text.splitlines(), 1)
                 if line.strip() and not line.lstrip().startswith("#")]
    if not items:
        raise VideoVLMError(f"{path} holds no questions")
    by_rel = set(inputs)
    by_abs = {os.path.realpath(Path(root) / rel): rel for rel in inputs}
    by_name: dict[str, list[str]] = {}
    for rel in inputs:
        by_name.setdefault(rel.rsplit("/", 1)[-1], []).append(rel)
    result = Questions()
    unknown: list[str] = []
    for where, obj in items:
        video, q = _question(obj, where)
        if video is None:
            result.common.append(q)
            continue
        norm = PurePosixPath(video.replace("\\", "/")).as_posix()
        rel = (norm if norm in by_rel else by_abs.get(os.path.realpath(video))
               or by_abs.get(os.path.realpath(Path(root) / video)))
        same_name = by_name.get(norm, [])
        if rel is None and len(same_name) > 1:
            raise VideoVLMError(f"{where}: {video!r} matches {len(same_name)} videos "
                                f"({', '.join(same_name[:3])}); give its path relative to {root}")
        if rel is None and same_name:
            rel = same_name[0]
        if rel is None:
            unknown.append(video)
            continue
        result.named.setdefault(rel, []).append(q)
    if unknown:
        more = f" (and {len(unknown) - 3} more)" if len(unknown) > 3 else ""
        raise VideoVLMError(f"{path} names videos not found in {root}: "
                            f"{', '.join(unknown[:3])}{more}; use paths relative to {root}")
    return result


@dataclass
class VideoStages:
    """The real stages of a batch, picklable so Ray can ship them: ``cpu`` is
    :func:`videovlm.api.load_video`, ``model`` is :func:`videovlm.api.run_model` (once per
    group of questions sharing their choices, answers merged in the file's order)."""

    recipe: Any  # Recipe: describing, or asking open questions
    image_size: int
    n: int | None = None
    backend: str | None = None
    questions: Questions | None = None
    choice_recipe: Any = None  # Recipe for questions with choices (mcq); defaults to ``recipe``

    def cpu(self, job: Job) -> Any:
        from videovlm.api import load_video

        asking = self.questions is not None and bool(self.questions.for_input(job.input))
        return load_video(job.path, self.recipe, n=self.n, image_size=self.image_size,
                          backend=self.backend, mode="ask" if asking else None)

    def model(self, model: Any, job: Job, inputs: Any) -> Result:
        from videovlm.api import run_model

        asked = self.questions.for_input(job.input) if self.questions is not None else []
        if not asked:
            return run_model(model, inputs, self.recipe)
        groups: dict[tuple[str, ...] | None, list[int]] = {}
        for i, q in enumerate(asked):
            groups.setdefault(q.choices, []).append(i)
        result: Result | None = None
        answers: list[Any] = [None] * len(asked)
        generate_s = 0.0
        for choices, positions in groups.items():
            recipe = self.recipe if choices is None else (self.choice_recipe or self.recipe)
            part = run_model(model, inputs, recipe,
                             questions=[asked[i].question for i in positions],
                             choices=list(choices) if choices else None)
            for i, answer in zip(positions, part.answers, strict=True):
                answers[i] = answer
            generate_s += part.timing_s.get("generate", 0.0)
            if result is None:
                result = part
            else:
                result.warnings.extend(w for w in part.warnings if w not in result.warnings)
        assert result is not None
        result.answers = answers
        if len(groups) > 1:
            timing = dict(result.timing_s)
            timing["total"] = round(timing["total"] - timing["generate"] + generate_s, 4)
            timing["generate"] = round(generate_s, 4)
            result.timing_s = timing
        return result
